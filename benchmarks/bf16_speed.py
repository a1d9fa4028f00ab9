"""bf16 models on the llvm backend: speed and peak RSS against bf16 eager, and against another
tilefuse checkout (e.g. the commit before 16-bit storage) on the same machine.

Each measurement is a fresh process (one model, one mode): it builds the example at its
default `build()` size in `--dtype`, runs eager or compiles with backend="llvm", calls it --warmup
times, then times --runs calls under torch.inference_mode. It reports the median wall time,
the fastest call, the median CPU time of the process (threads summed: steadier than wall time
on a shared machine; with --threads 1, the work itself), the peak RSS (VmHWM: import, build,
compile and the calls included) and the RSS added after the model was built (what compiling
and running cost). Rounds alternate the modes (eager, each checkout) --rounds times so drift
hits all of them; the medians are over all rounds' calls.

    python benchmarks/bf16_speed.py [--models gpt2,llama] [--runs 20] [--rounds 2]
        [--dtype bfloat16] [--seq 128] [--batch 1] [--threads N]
        [--before PATH]   # PATH: a tilefuse tree to compare against
    python benchmarks/bf16_speed.py --ablation ...   # one process: 16-bit vs float32 storage
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def vmhwm_mib() -> float:
    """This process's peak RSS (VmHWM, which an exec does not inherit)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(opts: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process (`--child`): the JSON record the parent collects."""
    sys.path.insert(0, str(opts.root))
    import torch

    if opts.threads:
        torch.set_num_threads(opts.threads)

    import compiler
    from examples import gpt2, llama

    build = {"gpt2": gpt2.build, "llama": llama.build}[opts.child]
    model, args = build(dtype=getattr(torch, opts.dtype), seq=opts.seq, batch=opts.batch)
    built = rss_mib()
    fn: Any = model
    compile_s = 0.0
    if opts.mode == "ours":
        start = time.perf_counter()
        fn = compiler.compile(model, args, backend="llvm")
        compile_s = time.perf_counter() - start
    times, cpu = [], []
    with torch.inference_mode():
        for _ in range(opts.warmup):
            out = fn(*args)
        for _ in range(opts.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            out = fn(*args)
            times.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.process_time() - start_cpu) * 1e3)
    return {
        "times_ms": times,
        "cpu_ms": cpu,
        "rss_mib": vmhwm_mib(),
        "built_mib": built,
        "compile_s": compile_s,
        "out_dtype": str(out.dtype),
    }


def ablation(opts: argparse.Namespace, model: str) -> list[str]:
    """In this process: one compile, its program with 16-bit storage and without it (every
    float stored in float32), called alternately; rows of medians (wall, CPU)."""
    import torch

    from backends.llvm import render as llvm_cpu
    from examples import gpt2, llama
    from passes.memory import plan_memory

    if opts.threads:
        torch.set_num_threads(opts.threads)
    build = {"gpt2": gpt2.build, "llama": llama.build}[model]
    net, args = build(dtype=getattr(torch, opts.dtype), seq=opts.seq, batch=opts.batch)
    import compiler

    c = compiler.compile(net, args, backend="llvm")
    raw = [c._bind(b, list(args)).detach() for b in c.captured.bindings]
    runs = {}
    for sixteen in (True, False):
        layout = llvm_cpu.lay_out(
            c.schedule, weights=c.captured.weight_names(), sixteen_bit=sixteen
        )
        p = llvm_cpu.render(layout, plan_memory(c.schedule, layout.request))
        dtypes = zip(raw, p.input_dtypes, strict=True)
        inputs = [t.to(d) if t.is_floating_point() else t for t, d in dtypes]
        runs["16-bit storage" if sixteen else "float32 storage"] = (p.load(), inputs)
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for i in range(opts.warmup + opts.runs * opts.rounds):
            for label, (fn, inputs) in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                fn(*inputs)
                if i >= opts.warmup:
                    wall[label].append((time.perf_counter() - start) * 1e3)
                    cpu[label].append((time.process_time() - start_cpu) * 1e3)
    return [
        f"| {model} | {label} | {statistics.median(wall[label]):.2f} | {min(wall[label]):.2f} "
        f"| {statistics.median(cpu[label]):.2f} |"
        for label in runs
    ]


def measure(opts: argparse.Namespace, model: str, mode: str, root: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", model, "--mode", mode, "--root", str(root)]
    cmd += ["--runs", str(opts.runs), "--warmup", str(opts.warmup), "--dtype", opts.dtype]
    cmd += ["--seq", str(opts.seq), "--batch", str(opts.batch)]
    env = {**os.environ, "PYTHONPATH": str(root), "OPENBLAS_THREAD_TIMEOUT": "4"}
    if opts.threads:
        cmd += ["--threads", str(opts.threads)]
        env["TILEFUSE_NUM_THREADS"] = str(opts.threads)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{model} {mode} ({root}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(records: list[dict[str, Any]], key: str) -> float:
    return statistics.median(t for r in records for t in r[key])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="gpt2,llama")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch and tilefuse threads")
    p.add_argument("--before", type=Path, default=None, help="a tilefuse tree to compare with")
    p.add_argument("--ablation", action="store_true", help="16-bit vs float32 storage")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.child:
        print(json.dumps(child(opts)))
        return
    if opts.ablation:
        sys.path.insert(0, str(ROOT))
        if opts.threads:
            os.environ["TILEFUSE_NUM_THREADS"] = str(opts.threads)
        rows = [r for m in opts.models.split(",") for r in ablation(opts, m)]
        print(f"{opts.dtype}, batch {opts.batch} x seq {opts.seq}, one process, alternating calls")
        print("| model | program | median ms | fastest ms | median CPU ms |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))
        return
    trees = [("eager", ROOT), ("ours", ROOT)]
    if opts.before is not None:
        trees.insert(1, ("before", opts.before.resolve()))
    rows = []
    for model in opts.models.split(","):
        records: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
        for _ in range(opts.rounds):
            for label, root in trees:
                mode = "eager" if label == "eager" else "ours"
                records[label].append(measure(opts, model, mode, root))
        eager = {k: _median(records["eager"], k) for k in ("times_ms", "cpu_ms")}
        for label, _ in trees:
            recs = records[label]
            wall, cpu = _median(recs, "times_ms"), _median(recs, "cpu_ms")
            fastest = min(t for r in recs for t in r["times_ms"])
            rss = statistics.median(r["rss_mib"] for r in recs)
            added = statistics.median(r["rss_mib"] - r["built_mib"] for r in recs)
            rows.append(
                f"| {model} | {label} | {wall:.2f} | {wall / eager['times_ms']:.2f} | "
                f"{fastest:.2f} | {cpu:.2f} | {cpu / eager['cpu_ms']:.2f} | {rss:.0f} | "
                f"{added:.0f} | {recs[0]['out_dtype'].removeprefix('torch.')} |"
            )
    print(
        f"{opts.dtype}, batch {opts.batch} x seq {opts.seq}, {opts.runs} runs x {opts.rounds} "
        "rounds, a fresh process per mode and round"
    )
    print(
        "| model | run | median ms | / eager | fastest ms | median CPU ms | CPU / eager "
        "| peak RSS MiB | RSS added after build MiB | out |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
