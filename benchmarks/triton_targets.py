"""Target verification figures (printed; `--write` also writes TRITON_TARGETS.md).

    python benchmarks/triton_targets.py [--example gpt2,llama,unet,dit] [--dtype fp16,bf16]
                                        [--gpu a100,h100,b200,l4,mi300x] [--cold] [--full]
                                        [--write]

Per example (at its default, real size), dtype and profile: the kernel count, the estimated
time of the plan (the cost model's sum over kernels, as `tilefuse explain` prints it), and the
summary of `Compiled.verify_targets`: every kernel compiled for the profile's Triton target,
with its max registers, spilled bytes, max shared memory, lowest occupancy, dot kernels on
tensor cores, kernels retiled after a spill, and the time the verification took. `--cold`
starts from empty caches (ours and Triton's, in a temporary directory) and verifies everything
twice: cold (every kernel compiled) and warm (read from the disk cache); without it the
current caches are used (TILEFUSE_CACHE_DIR/triton_targets). `--full` prints every per-kernel
table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import compiler  # noqa: E402
from examples import dit, gpt2, llama, unet  # noqa: E402

BUILDERS = {"gpt2": gpt2.build, "llama": llama.build, "unet": unet.build, "dit": dit.build}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
OUT = ROOT / "benchmarks" / "TRITON_TARGETS.md"
COLUMNS = (
    "| example | dtype | gpu | kernels | est. time | max regs | spills | max smem | min occ "
    "| tensor cores | retiled | verify | ok |"
)


def row(name: str, dtype: str, gpu: str, c: compiler.Compiled, report: object, took: str) -> str:
    s = report.summary(gpu)
    est = c.explain(gpu).plans[0].est_time_s
    smem = f"{s['max_smem_bytes'] / 1024:.0f}/{s['smem_limit'] // 1024} KB"
    return (
        f"| {name} | {dtype} | {gpu} | {s['kernels']} | {est * 1e6:.1f} us | {s['max_regs']} | "
        f"{s['spill_bytes']} B | {smem} | {s['min_occupancy']:.2f} | "
        f"{s['tensor_core_kernels']}/{s['dot_kernels']} | {s['retiled']} | {took} | "
        f"{'yes' if s['ok'] else 'NO'} |"
    )


def verify(c: compiler.Compiled, gpu: str, runs: int) -> tuple[object, str]:
    """The report and the seconds each of `runs` verifications took ("cold / warm")."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        report = c.verify_targets(gpu, progress=False)
        times.append(time.perf_counter() - t0)
    return report, " / ".join(f"{t:.1f} s" for t in times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--example", default="gpt2,llama,unet,dit")
    ap.add_argument("--dtype", default="fp16,bf16")
    ap.add_argument("--gpu", default="a100,h100,b200,l4,mi300x")
    ap.add_argument("--cold", action="store_true", help="from empty caches, then again warm")
    ap.add_argument("--full", action="store_true", help="print every per-kernel table")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    a = ap.parse_args()
    command = "python benchmarks/triton_targets.py " + " ".join(sys.argv[1:])
    columns = COLUMNS.replace("| verify |", "| verify cold / warm |") if a.cold else COLUMNS
    rows, failures, retiled = [columns, "|" + "---|" * 13], [], []
    if a.cold:  # before anything compiles: both caches start empty
        fresh = tempfile.mkdtemp(prefix="tilefuse_cold_")
        os.environ["TILEFUSE_CACHE_DIR"] = os.path.join(fresh, "tilefuse")
        os.environ["TRITON_CACHE_DIR"] = os.path.join(fresh, "triton")
    start = time.perf_counter()
    for name in a.example.split(","):
        for dtype in a.dtype.split(","):
            model, args = BUILDERS[name](dtype=DTYPES[dtype])
            c = compiler.compile(model, args, backend="numpy")
            for gpu in a.gpu.split(","):
                report, took = verify(c, gpu, 2 if a.cold else 1)
                rows.append(row(name, dtype, gpu, c, report, took))
                print(rows[-1], flush=True)
                if a.full:
                    print(report, flush=True)
                failures += [f"{name} {dtype}: {r.kernel} on {r.gpu}: {r}" for r in report.failures]
                retiled += [
                    f"{name} {dtype} {r.gpu} {r.kernel}: {r.retiled} -> {r.config}"
                    for r in report.results
                    if r.retiled
                ]
    total = time.perf_counter() - start
    print(f"\nverified in {total:.0f} s; {len(failures)} kernels not ok")
    for f in failures:
        print("  " + f)
    if a.write:
        write(command, rows, failures, retiled, total)


def write(command: str, rows: list[str], failures: list[str], retiled: list[str], total: float):
    import triton

    cold = "TRITON_CACHE_DIR" in os.environ and "tilefuse_cold_" in os.environ["TRITON_CACHE_DIR"]
    cache = "empty caches (ours and Triton's)" if cold else "the compile caches as they were"
    lines = [
        "# Triton target verification",
        "",
        f"Made by `{command.strip()}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
        f"triton {triton.__version__}, torch {torch.__version__}); the whole run took "
        f"{total:.0f} s, starting from {cache}.",
        "",
        "Every kernel of each example at its default size, compiled offline with "
        "`triton.compile(ASTSource(...), target=GPUTarget(...))` at the tile config tiling "
        "chose for the profile (retiled where the compile spilled or overflowed shared "
        "memory). Registers and spills from cuobjdump (NVIDIA) or the AMDGPU metadata "
        "(MI300X), shared memory from Triton's metadata, occupancy from the profile's limits, "
        "tensor cores by opcode (HMMA, HGMMA, UTCHMMA, v_mfma). Estimated time: the cost "
        "model's plan (`tilefuse explain`). `verify`: the time `verify_targets` took "
        "(cold: every kernel compiled, in worker processes; warm: the disk cache).",
        "",
        *rows,
        "",
    ]
    lines += ["Kernels not ok:", "", *(f"- {f}" for f in failures), ""] if failures else []
    if retiled:
        lines += ["Configs that went back to tiling (and what tiling picked then):", ""]
        lines += [f"- {r}" for r in retiled] + [""]
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
