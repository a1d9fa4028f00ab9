"""The `tilefuse` command (also `python -m compiler`).

    tilefuse compile FILE.py:FACTORY -o build/NAME [--backend llvm] [--gpu h100] [--dtype ...]
                     [--cpu x86-64-v3]
    tilefuse run build/NAME [--backend numpy]
    tilefuse check FILE.py:FACTORY [--backend numpy] [--dtype bfloat16] [--speed] [--inductor]
    tilefuse explain FILE.py:FACTORY|build/NAME [--gpu h100,mi300x] [--dtype float16] [--json]
                     [--plot roofline.png] [--targets]
    tilefuse tune FILE.py:FACTORY [--dtype ...] [--again] [--json]
    tilefuse profiles
    tilefuse fuzz [--n 200] [--seed 1000] [--backends numpy,llvm,triton] [--triton-every K]
                  [--known TOML] [--regressions DIR] [--no-coverage]

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
    backends = args.backend.split(",")
    speed = args.speed or args.inductor
    timed = "llvm" if "llvm" in backends else backends[0]  # the fast one a CPU has
    if speed:  # compiled for it first: the compile time shown is its own
        backends = [timed, *(b for b in backends if b != timed)]
    try:
        report = compiler.check_parity(model, inputs, backends=tuple(backends))
    except ValueError as e:  # an unknown or unbuilt backend
        raise SystemExit(f"tilefuse: {e}") from None
    print(report)
    if speed:
        print(speed_summary(report.compiled, timed, model, inputs, args.inductor))
    return 0 if report.ok else 1


def _medians(fns: dict[str, Callable[[], Any]], runs: int, warmup: int = 3) -> dict[str, float]:
    """Each function's median seconds over `runs` calls, the functions called in turn (so a
    drift of the machine hits all alike), after `warmup` calls each."""
    import statistics
    import time

    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def speed_summary(
    compiled: Any,
    backend: str,
    model: Callable[..., Any],
    inputs: tuple[Any, ...],
    inductor: bool,
) -> str:
    """Kernels, compile time and the forward's median time against eager (and Inductor's
    default, compiled here, with `inductor`): a demonstration, not a benchmark
    (`benchmarks/cpu_speed.py` is that)."""
    runs = 20
    fns: dict[str, Callable[[], Any]] = {
        "eager": lambda: model(*inputs),
        f"tilefuse ({backend})": lambda: compiled.run(inputs, backend=backend),
    }
    compile_note = ""
    if inductor:
        import time

        start = time.perf_counter()
        compiled_fn = torch.compile(model)
        with torch.inference_mode():
            compiled_fn(*inputs)
        compile_note = f"; Inductor compiled in {time.perf_counter() - start:.1f} s"
        fns["inductor"] = lambda: compiled_fn(*inputs)
    with torch.inference_mode():
        medians = _medians(fns, runs)
    stats = compiled.stats
    eager = medians["eager"]
    lines = [
        f"{compiled.graph.name}: {stats['kernels']} kernels from {stats['nodes']} nodes, "
        f"compiled in {stats['capture_s'] + stats['compile_s']:.2f} s (capture "
        f"{stats['capture_s']:.2f} s){compile_note}",
        f"forward, median of {runs} interleaved calls on {torch.get_num_threads()} threads:",
    ]
    lines += [
        f"  {name:<20} {t * 1e3:8.2f} ms  {t / eager:5.2f}x eager" for name, t in medians.items()
    ]
    return "\n".join(lines)


def cmd_compile(args: argparse.Namespace) -> int:
    import os

    import compiler

    if args.cpu:  # the llvm kernels for this level: kernels.so runs on any CPU that has it
        os.environ["TILEFUSE_CPU"] = args.cpu
    model, inputs = build_example(args.factory, args.dtype)
    try:
        c = compiler.compile(model, inputs, gpu=args.gpu, backend=args.backend)
    except ValueError as e:  # an unknown backend or GPU profile
        raise SystemExit(f"tilefuse: {e}") from None
    print(
        f"compiled {c.graph.name}: {c.stats['nodes']} nodes, {c.stats['kernels']} kernels, "
        f"backend {c.backend}; capture {c.stats['capture_s']:.2f} s, ours "
        f"{c.stats['compile_s']:.2f} s"
    )
    path = c.save(args.output, reference=not args.no_reference)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {path}/ ({size / 2**20:.1f} MiB); run it with: tilefuse run {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from compiler.artifact_load import run_saved
    from compiler.core.errors import ArtifactError

    start = time.perf_counter()
    try:
        report = run_saved(args.artifact, backend=args.backend)
    except (ArtifactError, ValueError) as e:
        raise SystemExit(f"tilefuse: {e}") from None
    c = report.compiled
    print(
        f"loaded {args.artifact} ({c.graph.name}, {len(c.kernels)} kernels, backend {c.backend}) "
        f"and ran it on the saved example inputs in {time.perf_counter() - start:.2f} s"
    )
    print(report)
    return 0 if report.ok else 1


def cmd_tune(args: argparse.Namespace) -> int:
    """Compile FACTORY for the llvm backend with its choices measured on this host (whatever
    TILEFUSE_TUNE says) into this CPU's tuning file, and print them."""
    import contextlib
    import json
    import os

    import compiler
    from backends.llvm import tuning

    os.environ["TILEFUSE_TUNE"] = "1"  # this command is the measuring
    model, inputs = build_example(args.factory, args.dtype)
    again = tuning.retune() if args.again else contextlib.nullcontext()
    with again:
        c = compiler.compile(model, inputs, backend="llvm")
    choices = c.choices
    print(json.dumps(choices.to_dict(), indent=1) if args.json else choices)
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from compiler.core.gpu import profiles_table

    print(profiles_table())
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import json

    import compiler
    from compiler.core.gpu import resolve_profiles

    if Path(args.factory).is_dir():  # an artifact written by `tilefuse compile -o DIR`
        from compiler.core.errors import ArtifactError

        if args.dtype:
            raise SystemExit("tilefuse: an artifact's dtype is fixed; --dtype is for FACTORY")
        try:
            compiled = compiler.load(args.factory, backend="numpy")
        except ArtifactError as e:
            raise SystemExit(f"tilefuse: {e}") from None
    else:
        model, inputs = build_example(args.factory, args.dtype)
        compiled = compiler.compile(model, inputs, backend="numpy")
    try:  # default: the GPU it was compiled for, else the one present, else h100
        gpus = [p.name for p in resolve_profiles(args.gpu or compiled.gpu)]
    except ValueError as e:
        raise SystemExit(f"tilefuse: {e}") from None
    report = compiled.explain(gpus)
    if args.targets:  # compile every kernel for each GPU's target (slow when not cached)
        import dataclasses

        try:
            targets = compiled.verify_targets(gpus, progress=True)
        except ImportError as e:  # no Triton here
            raise SystemExit(f"tilefuse: {e}") from None
        report = dataclasses.replace(report, targets=targets)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    if args.plot:
        try:
            path = report.plot(args.plot)
        except RuntimeError as e:  # matplotlib is not installed
            raise SystemExit(f"tilefuse: {e}") from None
        print(f"wrote the roofline of {', '.join(gpus)} to {path}", file=sys.stderr)
    return 0 if report.targets is None or report.targets.ok else 1


def cmd_fuzz(args: argparse.Namespace) -> int:
    import warnings

    from compiler.fuzz import campaign

    backends = tuple(args.backends.split(","))
    if args.n < 1 or args.triton_every < 1:
        raise SystemExit("tilefuse: --n and --triton-every must be at least 1")
    known = campaign.load_known(Path(args.known) if args.known else None)
    print(
        f"fuzzing seeds {args.seed}..{args.seed + args.n - 1} on {', '.join(backends)}"
        + (
            f" (triton: every {args.triton_every}th seed)"
            if "triton" in backends and args.triton_every > 1
            else ""
        )
        + f"; {len(known)} known failures",
        flush=True,
    )
    with warnings.catch_warnings():  # the Triton interpreter's notice, once per kernel module
        warnings.simplefilter("ignore", RuntimeWarning)
        found = campaign.run(
            range(args.seed, args.seed + args.n),
            backends,
            triton_every=args.triton_every,
            known=known,
            regressions=Path(args.regressions) if args.regressions else None,
            log=lambda line: print(line, flush=True),
        )
    print(found.summary())
    if args.coverage:
        print(found.coverage_table())
    return 1 if found.unexplained else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tilefuse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compile", help="compile ahead of time into a loadable artifact")
    comp.add_argument("factory", help="FILE.py:FACTORY, e.g. examples/gpt2.py:build")
    comp.add_argument("-o", "--output", required=True, help="artifact directory, e.g. build/gpt2")
    comp.add_argument("--backend", default="auto", help="backend to build (default: auto)")
    comp.add_argument("--gpu", default=None, help="GPU profile to plan for, e.g. h100")
    comp.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    comp.add_argument(
        "--cpu", choices=["native", "x86-64-v3", "x86-64-v4"], default=None,
        help="the llvm kernels for this CPU level (default: TILEFUSE_CPU, else native): an "
        "artifact built for x86-64-v3 runs its kernels.so on any CPU with AVX2 and FMA",
    )  # fmt: skip
    comp.add_argument(
        "--no-reference",
        action="store_true",
        help="do not save the example inputs with eager's outputs (tilefuse run needs them)",
    )
    comp.set_defaults(run=cmd_compile)
    run = sub.add_parser("run", help="load an artifact, run it on its example inputs, parity")
    run.add_argument("artifact", help="an artifact directory written by tilefuse compile")
    run.add_argument("--backend", default=None, help="backend (default: the one it was built for)")
    run.set_defaults(run=cmd_run)
    check = sub.add_parser("check", help="parity of the compiled model against eager PyTorch")
    check.add_argument("factory", help="FILE.py:FACTORY, e.g. examples/gpt2.py:build")
    check.add_argument(
        "--backend", default="numpy,llvm", help="comma-separated backends (default: all built)"
    )
    check.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    check.add_argument(
        "--speed", action="store_true",
        help="also print kernels, compile time and the forward's time against eager",
    )  # fmt: skip
    check.add_argument(
        "--inductor", action="store_true",
        help="--speed, and against torch.compile (Inductor) too: compiles it first (slow)",
    )  # fmt: skip
    check.set_defaults(run=cmd_check)
    explain = sub.add_parser("explain", help="bytes, FLOPs, tiles and time per kernel per GPU")
    explain.add_argument(
        "factory", help="FILE.py:FACTORY (e.g. examples/gpt2.py:build) or an artifact directory"
    )
    explain.add_argument(
        "--gpu",
        default=None,
        help="comma-separated profiles (default: the GPU present, else h100)",
    )
    explain.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    explain.add_argument("--json", action="store_true", help="print report.to_dict() as JSON")
    explain.add_argument(
        "--plot", metavar="PNG", default=None, help="draw the roofline per GPU to this PNG"
    )
    explain.add_argument(
        "--targets",
        action="store_true",
        help="also compile every kernel for each GPU's Triton target and print its registers, "
        "spills, shared memory, occupancy and tensor cores (exit 1 when one does not fit)",
    )
    explain.set_defaults(run=cmd_explain)
    tune = sub.add_parser(
        "tune",
        help="measure the llvm backend's choices (GEMM per shape) for a model on this CPU, "
        "into its tuning file, and print them",
    )
    tune.add_argument("factory", help="FILE.py:FACTORY, e.g. examples/gpt2.py:build")
    tune.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    tune.add_argument(
        "--again", action="store_true",
        help="time every choice again, even those the tuning file has",
    )  # fmt: skip
    tune.add_argument("--json", action="store_true", help="print the choices as JSON")
    tune.set_defaults(run=cmd_tune)
    profiles = sub.add_parser("profiles", help="the GPU profiles and their figures")
    profiles.set_defaults(run=cmd_profiles)
    fuzz = sub.add_parser(
        "fuzz", help="random modules compiled and checked against eager on every backend"
    )
    fuzz.add_argument("--n", type=int, default=200, help="how many modules (default 200)")
    fuzz.add_argument(
        "--seed", type=int, default=1000,
        help="the first seed (default 1000: make test runs 0-199)",
    )  # fmt: skip
    fuzz.add_argument("--backends", default="numpy,llvm,triton", help="comma-separated")
    fuzz.add_argument(
        "--triton-every", type=int, default=1, metavar="K",
        help="check Triton (the interpreter without a GPU: slow) on every K-th seed only",
    )  # fmt: skip
    fuzz.add_argument(
        "--known", metavar="TOML", default=None,
        help="the known-failures table: a failure listed there is explained, not a failure",
    )  # fmt: skip
    fuzz.add_argument(
        "--regressions", metavar="DIR", default=None,
        help="minimise each unexplained failure and write it here as a regression test",
    )  # fmt: skip
    fuzz.add_argument(
        "--no-coverage", dest="coverage", action="store_false",
        help="do not print the share of modules each op of the op table appears in",
    )  # fmt: skip
    fuzz.set_defaults(run=cmd_fuzz)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
