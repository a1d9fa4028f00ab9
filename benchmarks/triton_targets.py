"""Target verification figures for issue 7 (printed, not asserted).

python benchmarks/triton_targets.py [--dtype fp16|bf16] [--gpu a100,h100,b200,l4,mi300x]

Per example (gpt2, unet at default size) and profile: the kernel count, the estimated time
(sum of the tile configs' roofline estimates) and, for every heavy kernel (matmul, conv2d,
attention), the registers / spills / shared memory / occupancy / tensor-core opcodes of its
Triton template compiled for the profile's target, with the configs that went back to tiling.
Compiles are cached under TILEFUSE_CACHE_DIR/triton_targets; a cold run takes minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import compiler  # noqa: E402
from backends.triton_targets import verify_kernels  # noqa: E402
from compiler.gpu import get_profile  # noqa: E402
from compiler.schedule import KernelSpec  # noqa: E402
from examples import gpt2, unet  # noqa: E402
from passes.tiling import tile_kernels  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "bf16"))
    ap.add_argument("--gpu", default="a100,h100,b200,l4,mi300x")
    ap.add_argument("--example", default="gpt2,unet")
    a = ap.parse_args()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    builders = {"gpt2": gpt2.build, "unet": unet.build}
    for name in a.example.split(","):
        model, args = builders[name](dtype=dtype)
        c = compiler.compile(model, args, backend="numpy")
        for gpu in a.gpu.split(","):
            p = get_profile(gpu)
            schedule = tile_kernels(c.schedule, p)
            specs = [k for k in schedule.kernels if isinstance(k, KernelSpec)]
            est = sum(k.tile.est_time_s for k in specs)
            t0 = time.perf_counter()
            report = verify_kernels(specs, [p])
            took = time.perf_counter() - t0
            print(f"\n== {name} {a.dtype} on {p.name} ({p.target_text}): {len(specs)} kernels, "
                  f"estimated {est * 1e6:.1f} us, {len(report.results)} heavy launches "
                  f"compiled in {took:.1f} s, all ok: {report.ok}")  # fmt: skip
            print(report)


if __name__ == "__main__":
    main()
