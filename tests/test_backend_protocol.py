"""The public face talks to backends only through `backends.protocol.Backend`.

Repro: .venv/bin/python -m pytest tests/test_backend_protocol.py -q
"""

import ast
import inspect
from pathlib import Path

import pytest

import backends
from backends.protocol import Backend

ROOT = Path(__file__).resolve().parent.parent
FACE = [
    "compiler/api.py",
    "compiler/artifact.py",
    "compiler/artifact_load.py",
    "compiler/compiled.py",
    "compiler/pipeline.py",
]


def _tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text())


def _backend_literals(tree: ast.Module) -> list[str]:
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in backends.AVAILABLE
    ]


def _backend_internals(tree: ast.Module) -> list[str]:
    """Modules under `backends` other than the protocol that `tree` imports."""
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
            if node.module == "backends":
                imported += [f"backends.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
    return [m for m in imported if m.startswith("backends.") and m != "backends.protocol"]


@pytest.mark.parametrize("path", FACE)
def test_public_face_names_no_backend(path: str) -> None:
    found = _backend_literals(_tree(path))
    assert not found, f"{path} names backends {found}: ask the Backend protocol instead"


@pytest.mark.parametrize("path", FACE)
def test_public_face_imports_no_backend_internals(path: str) -> None:
    found = _backend_internals(_tree(path))
    assert not found, f"{path} imports {found}: only `backends` and `backends.protocol`"


def test_the_checks_catch_a_backend_named_or_imported() -> None:
    tree = ast.parse(
        'backends.get("llvm")\nfrom backends.llvm import runtime\nfrom backends import triton\n'
        "import backends.numpy.kernels\nfrom backends.protocol import Program\n"
    )
    assert _backend_literals(tree) == ["llvm"]
    assert sorted(_backend_internals(tree)) == [
        "backends.llvm",
        "backends.numpy.kernels",
        "backends.triton",
    ]


@pytest.mark.parametrize("name", backends.AVAILABLE)
def test_every_backend_implements_the_protocol(name: str) -> None:
    backend = backends.get(name)
    assert backend.name == name
    for method, declared in inspect.getmembers(Backend, inspect.isfunction):
        if method.startswith("_"):
            continue
        got = getattr(backend, method)
        assert callable(got), f"{name} lacks {method}"
        want = list(inspect.signature(declared).parameters)[1:]
        assert list(inspect.signature(got).parameters) == want, f"{name}.{method}"
