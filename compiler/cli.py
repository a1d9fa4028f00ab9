"""The `tilefuse` command (also `python -m compiler`).

    tilefuse check FILE.py:FACTORY [--backend numpy] [--dtype bfloat16]

A FACTORY is a function in FILE.py that, called with no arguments (or with `dtype=`), returns
`(model_or_function, example_inputs_tuple)`; every file in examples/ has one named `build`.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def load_factory(spec: str) -> Callable[..., tuple[Any, tuple[Any, ...]]]:
    """`path/to/file.py:build` -> the function `build` defined in that file."""
    path_text, _, name = spec.rpartition(":")
    if not path_text or not name:
        raise SystemExit(f"tilefuse: expected FILE.py:FACTORY, got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise SystemExit(f"tilefuse: no such file: {path}")
    module_name = f"_tilefuse_factory_{path.stem}"
    mod_spec = importlib.util.spec_from_file_location(module_name, path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[module_name] = module
    mod_spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise SystemExit(f"tilefuse: {path} has no function {name!r}")
    return factory


def build_example(spec: str, dtype: str | None) -> tuple[Any, tuple[Any, ...]]:
    factory = load_factory(spec)
    kwargs: dict[str, Any] = {}
    if dtype:
        if "dtype" not in inspect.signature(factory).parameters:
            raise SystemExit(f"tilefuse: {spec} does not take a dtype argument")
        kwargs["dtype"] = getattr(torch, dtype)
    model, inputs = factory(**kwargs)
    return model, inputs if isinstance(inputs, tuple) else (inputs,)


def cmd_check(args: argparse.Namespace) -> int:
    import compiler

    model, inputs = build_example(args.factory, args.dtype)
    try:
        report = compiler.check_parity(model, inputs, backends=tuple(args.backend.split(",")))
    except ValueError as e:  # an unknown or unbuilt backend
        raise SystemExit(f"tilefuse: {e}") from None
    print(report)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tilefuse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="parity of the compiled model against eager PyTorch")
    check.add_argument("factory", help="FILE.py:FACTORY, e.g. examples/gpt2.py:build")
    check.add_argument("--backend", default="numpy", help="comma-separated backends")
    check.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    check.set_defaults(run=cmd_check)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
