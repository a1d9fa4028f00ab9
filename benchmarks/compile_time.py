"""Compile time per example, each in a fresh process after `import torch`.

Two parts: capture (torch.export + decompositions: torch's cost) and ours
(everything after capture, to a runnable callable). Reports the median of --runs processes.

    python benchmarks/compile_time.py [--runs 3] [--examples gpt2,llama] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("gpt2", "llama", "unet", "dit")


def measure_one(example: str, backend: str) -> dict[str, float]:
    """Runs inside the fresh process."""
    t0 = time.perf_counter()
    import torch  # noqa: F401  (the clock for compile time starts after this import)

    t_torch = time.perf_counter() - t0
    sys.path.insert(0, str(ROOT))
    import importlib

    import compiler

    module = importlib.import_module(f"examples.{example}")
    model, inputs = module.build()
    start = time.perf_counter()
    c = compiler.compile(model, inputs, backend=backend)
    total = time.perf_counter() - start
    t1 = time.perf_counter()
    c(*inputs)
    first_call = time.perf_counter() - t1
    return {
        "import_torch_s": t_torch,
        "capture_s": c.stats["capture_s"],
        "ours_s": c.stats["compile_s"],
        "compile_total_s": total,
        "first_call_s": first_call,
        "nodes_captured": c.stats["nodes_captured"],
        "nodes": c.stats["nodes"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--examples", default=",".join(EXAMPLES))
    p.add_argument("--backend", default="numpy")
    p.add_argument("--json", type=Path)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.backend)))
        return
    results = {}
    print(f"{'example':8} {'capture s':>10} {'ours s':>8} {'first call s':>13} {'nodes':>12}")
    for example in args.examples.split(","):
        runs = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, "--one", example, "--backend", args.backend],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[example] = {"median": med, "runs": runs}
        nodes = f"{int(med['nodes_captured'])}->{int(med['nodes'])}"
        print(
            f"{example:8} {med['capture_s']:10.3f} {med['ours_s']:8.3f} "
            f"{med['first_call_s']:13.3f} {nodes:>12}"
        )
    print(f"(median of {args.runs} fresh processes; backend={args.backend})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
