"""CPU speed of our compiled models against torch eager and torch.compile (Inductor, C++).

Per model, in one process and interleaved (eager, Inductor default, Inductor with
`freezing=True`, ours, GEMM floor; round-robin per iteration, so drift hits all equally): --warmup
calls each, then --runs timed calls each, all under torch.inference_mode; medians in ms.
"ours/inductor" is against the faster of Inductor's two. "GEMM floor" is the optimized graph's
matmuls and convs alone, run through torch on random tensors of their shapes (the library
eager uses): what a backend would pay for the GEMMs even with every other op free. Attention
(`sdpa`) is not in it.

Cold compile runs in fresh processes with fresh, empty torch.compile and tilefuse caches:
ours end to end (capture + compile + first output) against torch.compile's first call. Peak
RSS compares a fresh process running eager against one loading our saved artifact and running
it (`compiler.load`: the deployment path), each the median of --rss-runs such processes run
alternately, and one compiling and running (JIT); import and set-up included; VmHWM, i.e.
ru_maxrss without the parent's peak that Linux carries across exec).
Parity is `compiler.check_parity` for our backend.

    python benchmarks/cpu_speed.py [--backend llvm] [--models gpt2,llama,...|all] [--runs 20]
        [--no-cold] [--no-rss] [--rss-runs 3] [--no-inductor] [--threads N] [--tiny]
        [--fast] [--emulate-avx2] [--write [PATH]]

--fast: 8 runs, no cold compiles, no RSS (to iterate; the full run once at the end).
--emulate-avx2: an AVX2 CPU on an AVX-512 host, every library held to AVX2 too (ATen, oneDNN,
MKL, Inductor's C++ at 256-bit vectors) and our kernels compiled for x86-64-v3: the process
re-runs itself with those settings. Zen 4's timings at AVX2, not a Zen 3's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# OpenBLAS (NumPy's BLAS) threads spin ~0.1 s after each call by default; interleaved with
# torch's OpenMP pool on few cores, that spinning steals the next call's cores (we measured
# eager gpt2 at 115 ms instead of 28 ms right after a numpy-backend call). Shortest spin
# instead; it only takes effect when set before NumPy loads (running this file as a script).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.models import MODELS, Built  # noqa: E402  (needs ROOT on sys.path)

STAT_KEYS = ("capture_s", "compile_s")  # Compiled.stats keys reported
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_MODELS = "gpt2,llama,unet,dit,hf_gpt2,hf_llama,hf_unet"
AVX2_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "TILEFUSE_CPU": "x86-64-v3",
}
"""What --emulate-avx2 sets before torch loads (the libraries read them once)."""
COLUMNS = (
    "model",
    "eager ms",
    "inductor ms",
    "frozen ms",
    "ours ms",
    "ours/eager",
    "ours/inductor",
    "GEMM floor ms",
    "ours/floor",
    "ours cold s",
    "inductor cold s",
    "cold ours/inductor",
    "capture s",
    "ours compile s",
    "RSS eager MiB",
    "RSS ours MiB",
    "RSS JIT MiB",
    "parity",
)


def set_threads(n: int = 0) -> int:
    """The same torch thread count in every process: n, or all cores this process may use."""
    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def build(name: str, tiny: bool) -> Built:
    return MODELS[name](tiny)


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1e3


def time_interleaved(
    fns: dict[str, Callable[[], Any]], warmup: int, runs: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Median ms per function, timed round-robin; a function that raises is dropped (reason)."""
    errors: dict[str, str] = {}
    live = dict(fns)
    with torch.inference_mode():
        for _ in range(warmup):
            for name, fn in list(live.items()):
                try:
                    fn()
                except Exception as e:  # report any backend's failure, keep timing the others
                    errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    del live[name]
        times: dict[str, list[float]] = {name: [] for name in live}
        for _ in range(runs):
            for name, fn in live.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: median_ms(t) for name, t in times.items()}, errors


def gemm_floor(graph: Any) -> tuple[Callable[[], None], int]:
    """A function running the graph's matmul and conv2d nodes alone, in torch on random inputs
    of their shapes and dtypes; and how many there are."""
    from compiler.core.dtypes import to_torch

    gen = torch.Generator().manual_seed(0)
    calls: list[Callable[[], Any]] = []
    for node in graph.nodes:
        if node.op not in ("matmul", "conv2d"):
            continue
        types = [graph.type_of(i) for i in node.inputs]
        ts = [torch.randn(t.shape, generator=gen).to(to_torch(t.dtype)) for t in types]
        if node.op == "matmul":
            calls.append(lambda ts=ts: torch.matmul(ts[0], ts[1]))
        else:
            attrs = {k: node.attr(k) for k in ("stride", "padding", "dilation", "groups")}
            bias = ts[2] if len(ts) == 3 else None
            calls.append(lambda ts=ts, bias=bias, a=attrs: F.conv2d(ts[0], ts[1], bias, **a))

    def run_all() -> None:
        for call in calls:
            call()

    return run_all, len(calls)


# ----------------------------------------------------------------------------- fresh processes


def child(mode: str, name: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Runs inside a fresh process (see `fresh`): one measurement, returned as JSON."""
    threads = set_threads(opts.threads)
    out: dict[str, Any] = {"threads": threads}
    if mode == "rss-artifact":  # deployment: load a saved artifact; the model is never built
        import compiler

        c = compiler.load(opts.artifact)
        example = torch.load(Path(opts.artifact) / "example.pt", weights_only=True)
        with torch.inference_mode():
            c(*example["args"], **example["kwargs"])
        out["maxrss_mib"] = peak_rss_mib()
        return out
    model, args, kwargs = build(name, opts.tiny)
    if mode in ("ours", "rss-ours"):
        import compiler

        start = time.perf_counter()
        c = compiler.compile(model, args, kwargs, backend=opts.backend)
        with torch.inference_mode():
            c(*args, **kwargs)
        out.update(e2e_s=time.perf_counter() - start, **{k: c.stats[k] for k in STAT_KEYS})
    elif mode == "inductor":
        start = time.perf_counter()
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(*args, **kwargs)
        out["e2e_s"] = time.perf_counter() - start
    elif mode == "rss-eager":
        with torch.inference_mode():
            model(*args, **kwargs)
    out["maxrss_mib"] = peak_rss_mib()
    return out


def rss_medians(name: str, opts: argparse.Namespace, saved: Path | None) -> dict[str, Any]:
    """Eager's and the loaded artifact's peak RSS, each the median of --rss-runs fresh
    processes, alternating (a fresh process's RSS moves by a few MiB from one to the next)."""
    runs: dict[str, list[dict[str, Any]]] = {"rss-eager": [], "rss-artifact": []}
    for _ in range(max(1, opts.rss_runs)):
        runs["rss-eager"].append(fresh("rss-eager", name, opts))
        if saved is not None:
            runs["rss-artifact"].append(fresh("rss-artifact", name, opts, artifact=saved))
    out = {}
    for mode, results in runs.items():
        good = sorted((r for r in results if "maxrss_mib" in r), key=lambda r: r["maxrss_mib"])
        bad = [r for r in results if "maxrss_mib" not in r]
        if good or bad:
            out[mode] = good[len(good) // 2] if good else bad[0]
    return out


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux keeps ru_maxrss across exec, so a child forked from a big
    parent reports the parent's peak; VmHWM (this address space's high-water mark) does not."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fresh(
    mode: str, name: str, opts: argparse.Namespace, artifact: Path | None = None
) -> dict[str, Any]:
    """`child(mode, ...)` in a new interpreter with empty Inductor and tilefuse caches."""
    cmd = [sys.executable, __file__, "--child", mode, "--models", name, "--backend", opts.backend]
    cmd += ["--threads", str(opts.threads)] + (["--tiny"] if opts.tiny else [])
    cmd += ["--emulate-avx2"] if opts.emulate_avx2 else []
    cmd += ["--artifact", str(artifact)] if artifact is not None else []
    with tempfile.TemporaryDirectory(prefix="cpu_speed_") as tmp:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=f"{tmp}/inductor")
        env["TILEFUSE_CACHE_DIR"] = f"{tmp}/tilefuse"
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no stderr)"]
        return {"error": f"{mode} failed: {lines[-1]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- one model


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def measure(name: str, opts: argparse.Namespace) -> dict[str, str] | None:
    """One table row for `name` (numbers as formatted strings, '-' when not measured), or None
    when the model's library is missing."""
    import compiler

    try:
        model, args, kwargs = build(name, opts.tiny)
    except ImportError as e:
        print(f"skipping {name}: {e}")
        return None
    print(f"measuring {name} ...", flush=True)
    notes: list[str] = []
    ours, stats, verdict = None, {}, "-"
    try:
        report = compiler.check_parity(model, args, kwargs, backends=(opts.backend,))
        verdict = "PASS" if report.ok else "FAIL"
        if not report.ok:
            print(report)
        ours = report.compiled
        stats = {k: ours.stats[k] for k in STAT_KEYS}
    except Exception as e:  # a model we cannot compile is a result, not a crash
        verdict = "ERR"
        notes.append(f"ours: {type(e).__name__}: {e}")

    fns: dict[str, Callable[[], Any]] = {"eager": lambda: model(*args, **kwargs)}
    if not opts.no_inductor:
        inductor = torch.compile(model)
        fns["inductor"] = lambda: inductor(*args, **kwargs)
        frozen = torch.compile(model, options={"freezing": True})
        fns["frozen"] = lambda: frozen(*args, **kwargs)
    gemms = 0
    if ours is not None:
        fns["ours"] = lambda: ours(*args, **kwargs)
        fns["floor"], gemms = gemm_floor(ours.graph)  # timed in the same round-robin
    ms, errors = time_interleaved(fns, opts.warmup, opts.runs)
    notes += [f"{k}: {v}" for k, v in errors.items()]
    floor = ms.get("floor")

    cold: dict[str, dict[str, Any]] = {}
    if not opts.no_cold:
        modes = ("ours",) + (() if opts.no_inductor else ("inductor",))
        cold = {m: fresh(m, name, opts) for m in modes}
        stats = {k: cold["ours"].get(k) for k in STAT_KEYS} if "e2e_s" in cold["ours"] else stats
    if not opts.no_rss:
        cold["rss-ours"] = fresh("rss-ours", name, opts)
        with tempfile.TemporaryDirectory(prefix="cpu_speed_artifact_") as tmp:
            saved = ours.save(Path(tmp) / name) if ours is not None else None
            cold |= rss_medians(name, opts, saved)
    notes += [r["error"] for r in cold.values() if "error" in r]
    for note in notes:
        print(f"  [{name}] {note}")

    def cold_value(mode: str, key: str) -> float | None:
        return cold.get(mode, {}).get(key)

    e2e_ours, e2e_ind = cold_value("ours", "e2e_s"), cold_value("inductor", "e2e_s")
    inductors = [ms[k] for k in ("inductor", "frozen") if k in ms]
    row = {
        "model": name,
        "eager ms": fmt(ms.get("eager")),
        "inductor ms": fmt(ms.get("inductor")),
        "frozen ms": fmt(ms.get("frozen")),
        "ours ms": fmt(ms.get("ours")),
        "ours/eager": ratio(ms.get("ours"), ms.get("eager")),
        "ours/inductor": ratio(ms.get("ours"), min(inductors) if inductors else None),
        "GEMM floor ms": fmt(floor) + (f" ({gemms})" if floor is not None else ""),
        "ours/floor": ratio(ms.get("ours"), floor),
        "ours cold s": fmt(e2e_ours),
        "inductor cold s": fmt(e2e_ind),
        "cold ours/inductor": ratio(e2e_ours, e2e_ind),
        "capture s": fmt(stats.get("capture_s")),
        "ours compile s": fmt(stats.get("compile_s"), 3),
        "RSS eager MiB": fmt(cold_value("rss-eager", "maxrss_mib"), 0),
        "RSS ours MiB": fmt(cold_value("rss-artifact", "maxrss_mib"), 0),
        "RSS JIT MiB": fmt(cold_value("rss-ours", "maxrss_mib"), 0),
        "parity": verdict,
    }
    assert tuple(row) == COLUMNS
    return row


# ----------------------------------------------------------------------------- report


def markdown_table(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name, family/model (which tells AMD's Zen 3 from Zen 4) and the widest
    vector instruction set it has: the figures of one CPU do not hold on another."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or "unknown"
    flags = set(info.get("flags", "").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    family = f"family {info['cpu family']} model {info['model']}, " if "model" in info else ""
    return f"{name} ({family}{isa})"


def commit() -> str:
    """The checkout's commit, marked `+changes` when its work tree differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown commit"
    results = f":!{RESULTS.relative_to(ROOT)}"  # a run writing its results is no change
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", results)
    return head + ("+changes" if changed else "")


def environment(threads: int) -> list[str]:
    try:
        import llvmlite

        llvm = llvmlite.__version__
    except ImportError:
        llvm = "not installed"
    cpu = os.environ.get("TILEFUSE_CPU", "").strip() or "native"
    return [
        f"- torch {torch.__version__}, llvmlite {llvm}, Python {platform.python_version()}",
        f"- {os.cpu_count()} logical CPUs; torch threads: {threads}; llvm kernels for {cpu}"
        " (TILEFUSE_CPU)",
        "- load average (1, 5, 15 min) at the end: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]


HEADER = """# CPU speed: ours vs torch eager vs torch.compile (Inductor)

Each `python benchmarks/cpu_speed.py --write` adds its run at the top, headed by the commit,
the date and the CPU; notes under a run are what was measured around it. The script's
docstring defines every column. Compare ratios within one run: times move between runs.
"""


def write_results(path: Path, table: str, argv: list[str], opts: argparse.Namespace) -> None:
    """Add this run at the top of `path`, keeping the runs already there."""
    cpu = os.environ.get("TILEFUSE_CPU", "").strip()
    env = [f"TILEFUSE_CPU={cpu}"] if cpu and not opts.emulate_avx2 else []
    command = shlex.join([*env, "python", "benchmarks/cpu_speed.py", *argv])
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d")
    where = " · emulated AVX2" if opts.emulate_avx2 else f" · llvm kernels for {cpu}" if cpu else ""
    text = [
        f"## {commit()} · {date} · {cpu_name()}{where}",
        "",
        f"    {command}",
        "",
        *environment(torch.get_num_threads()),
        f"- backend: {opts.backend}; {opts.warmup} warm-up + {opts.runs} timed calls each,"
        " interleaved; medians",
        "",
        table,
        "",
        "Ratios below 1x favour ours; ours/inductor is against the faster of Inductor default and"
        " `freezing=True` (frozen ms). GEMM floor: the optimized graph's matmul + conv2d nodes"
        " alone in torch (count in parentheses). Cold: fresh process, empty caches, wall seconds"
        " from the built model to the first output; capture/ours compile s from the same process"
        " (or in-process with --no-cold). RSS: peak (VmHWM) of a fresh process running one"
        " forward: eager; ours = loading the saved artifact (compiler.load, the deployment path:"
        f" no torch.export, no LLVM), each the median of {opts.rss_runs} processes, alternating;"
        " JIT = compile and run in one process (one).",
        "",
    ]
    earlier = ""
    if path.is_file():
        old = path.read_text()
        earlier = old[old.index("\n## ") + 1 :] if "\n## " in old else ""
    path.write_text(HEADER + "\n" + "\n".join(text) + ("\n" + earlier if earlier else ""))
    print(f"wrote {path}")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", default="llvm", help="our backend (default llvm)")
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--runs", type=int, default=20, help="timed calls per function")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (at least 3)")
    p.add_argument("--no-cold", action="store_true", help="skip fresh-process compile times")
    p.add_argument("--no-rss", action="store_true", help="skip fresh-process peak RSS")
    p.add_argument("--rss-runs", type=int, default=3, help="fresh processes per RSS median")
    p.add_argument("--no-inductor", action="store_true", help="skip torch.compile")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--tiny", action="store_true", help="the test suite's tiny configs")
    p.add_argument("--fast", action="store_true", help="8 runs, no cold compiles, no RSS")
    p.add_argument(
        "--emulate-avx2", action="store_true",
        help="hold every library and our kernels to AVX2 (an AVX2 CPU on an AVX-512 host)",
    )  # fmt: skip
    p.add_argument("--write", nargs="?", const=RESULTS, type=Path, help="write RESULTS.md here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--artifact", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.models == "all":
        opts.models = ",".join(MODELS)
    if opts.fast:
        opts.runs, opts.no_cold, opts.no_rss = min(opts.runs, 8), True, True
    unknown = [m for m in opts.models.split(",") if m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    opts.warmup = max(opts.warmup, 3)
    return opts


def emulate_avx2(argv: list[str]) -> None:
    """Hold this process to AVX2 (AVX2_ENV, and Inductor's C++ to 256-bit vectors): the
    libraries read their variables when torch loads, so without them set the process runs
    itself again with them."""
    if any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.environ.update(AVX2_ENV)
        os.execv(sys.executable, [sys.executable, __file__, *argv])
    import torch._inductor.config as inductor_config

    inductor_config.cpp.simdlen = 256


def main(argv: list[str] | None = None) -> list[dict[str, str]]:
    """Print (and with --write, save) the table; returns its rows."""
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = parse(argv)
    if opts.emulate_avx2:
        emulate_avx2(argv)
    if opts.child:
        print(json.dumps(child(opts.child, opts.models, opts)))
        return []
    threads = opts.threads = set_threads(opts.threads)
    print(f"torch threads: {threads}; backend: {opts.backend}; runs: {opts.runs}")
    rows = []
    for name in opts.models.split(","):
        row = measure(name, opts)
        if row is not None:
            rows.append(row)
            print(markdown_table([row]).splitlines()[-1], flush=True)  # progress, if interrupted
    table = markdown_table(rows)
    print(table)
    if opts.write:
        write_results(opts.write, table, argv, opts)
    return rows


if __name__ == "__main__":
    main()
