"""What the import-linter contracts in pyproject.toml cannot say: the `compiler` package itself
(its __init__, the public names) is the top of the house, yet it is no layer of the contract
(a layer cannot contain another, and `compiler.core` lives inside it). So no module below the
public face may import it by its bare name.

Repro: .venv/bin/python -m pytest tests/test_layers.py -q
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOWER = sorted(
    p.relative_to(ROOT).as_posix()
    for folder in ("compiler/core", "passes", "backends")
    for p in (ROOT / folder).rglob("*.py")
)


def _bare_compiler_imports(tree: ast.Module) -> list[int]:
    """Lines of `import compiler` or `from compiler import <name>` (a public name, or the
    face's modules), where `from compiler.core ... import` is the way down."""
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Import) and any(a.name == "compiler" for a in node.names)) or (
            isinstance(node, ast.ImportFrom)
            and node.module == "compiler"
            and any(a.name != "core" for a in node.names)
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", LOWER)
def test_lower_layers_do_not_import_the_public_face(path: str) -> None:
    lines = _bare_compiler_imports(ast.parse((ROOT / path).read_text()))
    assert not lines, f"{path}:{lines[0]} imports the `compiler` package: import compiler.core"


def test_the_check_sees_a_bare_import() -> None:
    tree = ast.parse("import compiler\nfrom compiler import config\nfrom compiler import core\n")
    assert _bare_compiler_imports(tree) == [1, 2]
