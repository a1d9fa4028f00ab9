"""bf16 models on the llvm backend: speed and peak RSS against bf16 eager, and against another
tilefuse checkout (e.g. the commit before 16-bit storage) on the same machine.

Each measurement is a fresh process (one model, one mode): it builds the example at its
DESIGN.md size in `--dtype`, runs eager or compiles with backend="llvm", calls it --warmup
times, then times --runs calls under torch.inference_mode, and reports the median, its peak RSS
(VmHWM: import, build, compile and the calls included) and the RSS once the model was built
(so the difference is what compiling and running added). Rounds alternate the modes
(eager, each checkout) --rounds times so drift hits all of them; the medians are over all
rounds' calls.

    python benchmarks/bf16_speed.py [--models gpt2,llama] [--runs 20] [--rounds 2]
        [--dtype bfloat16] [--seq 128] [--batch 1]
        [--before PATH]   # PATH: a tilefuse tree to compare against
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
    times = []
    with torch.inference_mode():
        for _ in range(opts.warmup):
            out = fn(*args)
        for _ in range(opts.runs):
            start = time.perf_counter()
            out = fn(*args)
            times.append((time.perf_counter() - start) * 1e3)
    return {
        "times_ms": times,
        "rss_mib": vmhwm_mib(),
        "built_mib": built,
        "compile_s": compile_s,
        "out_dtype": str(out.dtype),
    }


def measure(opts: argparse.Namespace, model: str, mode: str, root: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", model, "--mode", mode, "--root", str(root)]
    cmd += ["--runs", str(opts.runs), "--warmup", str(opts.warmup), "--dtype", opts.dtype]
    cmd += ["--seq", str(opts.seq), "--batch", str(opts.batch)]
    env = {**os.environ, "PYTHONPATH": str(root), "OPENBLAS_THREAD_TIMEOUT": "4"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{model} {mode} ({root}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="gpt2,llama")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--before", type=Path, default=None, help="a tilefuse tree to compare with")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.child:
        print(json.dumps(child(opts)))
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
        eager = statistics.median(t for r in records["eager"] for t in r["times_ms"])
        for label, _ in trees:
            recs = records[label]
            median = statistics.median(t for r in recs for t in r["times_ms"])
            rss = statistics.median(r["rss_mib"] for r in recs)
            added = statistics.median(r["rss_mib"] - r["built_mib"] for r in recs)
            rows.append(
                f"| {model} | {label} | {median:.2f} | {median / eager:.2f} | {rss:.0f} | "
                f"{added:.0f} | {recs[0]['out_dtype'].removeprefix('torch.')} |"
            )
    print(
        f"{opts.dtype}, batch {opts.batch} x seq {opts.seq}, {opts.runs} runs x {opts.rounds} "
        "rounds, a fresh process per mode and round"
    )
    print("| model | run | median ms | / eager | peak RSS MiB | RSS added after build MiB | out |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
