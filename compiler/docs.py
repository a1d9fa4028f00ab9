"""Generate docs/ops.md from the op table: `python -m compiler.docs > docs/ops.md`.

A test compares the file with this output, so the docs cannot go stale.
"""

from __future__ import annotations

from compiler.core.ops import KINDS, OPS, REQUIRED

TITLES = {
    "elementwise": "Elementwise",
    "reduction": "Reductions",
    "movement": "Movement and indexing",
    "source": "Sources (constants)",
    "compute": "Compute anchors",
    "composite": "Composites (kept whole until fusion)",
}


def _arity(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"{lo}+"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _attrs(attrs: tuple[tuple[str, object], ...]) -> str:
    parts = [k if v is REQUIRED else f"{k}={v!r}" for k, v in attrs]
    return ", ".join(parts) if parts else "-"


def _template(op: object) -> str:
    numpy = getattr(op, "numpy")  # noqa: B009
    if callable(numpy):
        return (numpy.__doc__ or "rendered by a function").strip().splitlines()[0]
    return numpy.replace("|", "\\|")


def render() -> str:
    lines = [
        "# tilefuse ops",
        "",
        "Generated from `compiler/core/ops/` by `python -m compiler.docs`; do not edit by hand.",
        "Every op has one output. Inputs of binary ops share a dtype (the frontend inserts casts);",
        "Python scalars are 0-d `full` constants. Floats compute in float32 in the NumPy",
        "reference (float64 on request); `ref.*` functions live in `compiler/core/ops/ref.py`.",
        "",
        f"{len(OPS)} ops.",
    ]
    for kind in KINDS:
        ops = [op for op in OPS.values() if op.kind == kind]
        if not ops:
            continue
        lines += ["", f"## {TITLES[kind]}", ""]
        lines.append("| op | inputs | attributes | meaning | NumPy reference | from ATen |")
        lines.append("|---|---|---|---|---|---|")
        for op in ops:
            lines.append(
                f"| `{op.name}` | {_arity(*op.arity)} | {_attrs(op.attrs)} | {op.doc} | "
                f"`{_template(op)}` | {', '.join(op.aten) or '-'} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
