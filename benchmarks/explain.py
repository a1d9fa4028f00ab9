"""Tiling and explain figures (printed, not asserted).

python benchmarks/explain.py    # GEMM anchor, copy fraction, tiles per GPU, gpt2 bytes, unet time

- an 8192^3 bf16 GEMM on h100 against the 1.38 ms anchor (cuBLAS at 798 TFLOP/s);
- a copy-bound pointwise kernel's fraction of HBM bandwidth on every profile;
- the tiles a 4096^3 bf16 GEMM gets on h100, l4 and mi300x, with the reasons;
- gpt2 fp16 (seq 1024, hidden 768, 12 heads) on h100: plan bytes vs eager and lower bound,
  what tiling for one GPU adds to `compile(gpu=...)`, and the HF GPT2Model at the same size
  when transformers is installed;
- the time to tile the unet example for all seven profiles.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import compiler  # noqa: E402
from compiler.core.gpu import PROFILES, get_profile  # noqa: E402
from examples import gpt2, unet  # noqa: E402
from passes.cost import kernel_cost  # noqa: E402
from passes.tiling import tile, tile_kernels  # noqa: E402
from tests.test_tiling import gemm, kernel  # noqa: E402


def gemm_anchor() -> None:
    t = tile(gemm(8192, 8192, 8192), get_profile("h100"))
    print(f"8192^3 bf16 GEMM on h100: {t.est_time_s * 1e3:.3f} ms (anchor 1.38 ms, "
          f"{t.est_time_s / 1.38e-3 - 1:+.1%}); {t.short}, {t.bound}-bound")  # fmt: skip


def copy_fraction() -> None:
    k = kernel("""
def f(x: f32[16384,16384]):
    v0: f32[16384,16384] = neg(x)
    return (v0,)
""")
    _, r, w = kernel_cost(k)
    for p in PROFILES.values():
        t = tile(k, p)
        print(f"copy 2 GiB on {p.name:8}: {(r + w) / t.est_time_s / p.hbm_bw:.3f} of HBM bandwidth")


def tiles_per_gpu() -> None:
    k = gemm(4096, 4096, 4096)
    for name in ("h100", "l4", "mi300x"):
        t = tile(k, get_profile(name))
        print(f"4096^3 bf16 on {name:7}: {t.short:20} {t.reason}")


def gpt2_traffic() -> None:
    model, inputs = gpt2.build(seq=1024, hidden=768, heads=12, dtype=torch.float16)
    c = compiler.compile(model, inputs, backend="numpy")
    report(c, "gpt2 example fp16")
    start = time.perf_counter()
    tile_kernels(c.schedule, get_profile("h100"))
    print(f"tiling its {len(c.kernels)} kernels for h100 (what compile(gpu=) adds): "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms")  # fmt: skip
    try:
        from transformers import GPT2Config, GPT2Model
    except ImportError:
        print("transformers not installed: HF GPT2Model skipped")
        return
    cfg = GPT2Config(n_layer=4, n_embd=768, n_head=12, n_positions=1024, use_cache=False)
    hf = GPT2Model(cfg).eval().to(torch.float16)
    report(compiler.compile(hf, (torch.randint(0, 1024, (1, 1024)),), backend="numpy"),
           "HF GPT2Model fp16 (4 layers)")  # fmt: skip


def report(c: compiler.Compiled, what: str) -> None:
    t = c.explain("h100").to_dict()["totals"]
    print(
        f"{what} on h100: plan {t['bytes'] / 1e6:.1f} MB = {t['bytes'] / t['eager_bytes']:.3f}x "
        f"eager ({t['eager_bytes'] / 1e6:.1f} MB), {t['bytes'] / t['lower_bound_bytes']:.3f}x "
        f"lower bound ({t['lower_bound_bytes'] / 1e6:.1f} MB), model minimum "
        f"{t['model_min_bytes'] / 1e6:.1f} MB; est. {t['est_time_s'] * 1e6:.0f} us"
    )


def unet_tiling_time() -> None:
    model, inputs = unet.build()
    c = compiler.compile(model, inputs, backend="numpy")
    start = time.perf_counter()
    for p in PROFILES.values():
        tile_kernels(c.schedule, p)
    elapsed = time.perf_counter() - start
    print(f"tiling unet ({len(c.kernels)} kernels) for all 7 profiles: {elapsed:.3f} s")


if __name__ == "__main__":
    gemm_anchor()
    copy_fraction()
    tiles_per_gpu()
    gpt2_traffic()
    unet_tiling_time()
