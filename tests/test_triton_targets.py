"""Target verification without a GPU: compile for sm_80/sm_90/sm_100/gfx942, read registers,
spills, shared memory and tensor-core opcodes; retile a config that spills; cache on disk.
Repro: pytest tests/test_triton_targets.py (the example sweep: add -m slow)"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

from backends.triton_matmul import MatmulKernel, render_matmul
from backends.triton_targets import (
    Launch,
    compile_launch,
    load_module,
    specialize,
    verify_kernels,
    verify_spec,
)
from compiler.gpu import get_profile
from compiler.ir import DType, Node, TensorType, Value
from compiler.schedule import KernelSpec
from passes.tile_config import TileConfig
from passes.tiling import launch_key, tile

ROOT = Path(__file__).resolve().parents[1]
MMA = {"a100": "HMMA", "h100": "HGMMA", "b200": "UTCHMMA", "mi300x": "v_mfma"}
# sm_90/sm_100 tiles with BLOCK_M < 64 (the M=1 time-embedding GEMMs) use mma.sync (HMMA):
# still tensor cores, not wgmma/tcgen05
TENSOR_OPS = {"a100": {"HMMA"}, "h100": {"HGMMA", "HMMA"}, "b200": {"UTCHMMA", "HMMA"},
              "mi300x": {"v_mfma"}}  # fmt: skip


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    return tmp_path


def meta(*shape: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def small_matmul() -> tuple[object, list]:
    k = MatmulKernel("k_small", "fp16", epilogue=("acc = acc + bias",), epilogue_inputs=("bias",))
    t = TileConfig((("BLOCK_M", 64), ("BLOCK_N", 64), ("BLOCK_K", 32)), 4, 2, group_m=8)
    module = load_module(render_matmul(k, t), interpret=False)
    launches = module.arguments(meta(1, 97, 128), meta(64, 128).t(), meta(1, 97, 64), meta(64))
    return t, launches


def test_specialize_like_the_launcher() -> None:
    """An int equal to 1 is a constexpr, a multiple of 16 gets a divisibility hint, tensors
    are 16-byte-aligned pointers of their dtype, constexpr kwargs stay constexprs."""
    _, launches = small_matmul()
    kernel, _, args, meta_ = launches[0]
    signature, constexprs, attrs = specialize(kernel, args, meta_)
    names = list(kernel.arg_names)
    assert signature["a_ptr"] == "*fp16" and signature["M"] == "i32"
    assert signature["stride_bk"] == "constexpr" and constexprs["stride_bk"] == 1  # w.t()
    assert (names.index("K"),) in attrs and (names.index("M"),) not in attrs  # 128 vs 97
    assert (names.index("stride_am"),) in attrs
    assert constexprs["BLOCK_M"] == 64 and constexprs["DOT_F32"] is False


@pytest.mark.parametrize("gpu", ["a100", "h100", "b200", "mi300x"])
def test_compile_reads_resources_and_tensor_cores(gpu: str, cache: Path) -> None:
    """sm_80, sm_90, sm_100 and gfx942 from one CPU: no spills, smem within the profile, and
    the target's tensor-core opcode in the SASS / AMDGCN; the second compile is a disk hit."""
    t, launches = small_matmul()
    kernel, _, args, meta_ = launches[0]
    p = get_profile(gpu)
    opts = t.triton_options() | ({"matrix_instr_nonkdim": 16} if p.is_amd else {})
    info = compile_launch(Launch(kernel, args, meta_), p, opts)
    assert not info["cached"]
    assert info["spill_bytes"] == 0 and 0 < info["regs"] <= p.max_regs_per_thread
    assert 0 < info["smem_bytes"] <= p.smem_per_block
    assert info["mma_ops"].get(MMA[gpu], 0) > 0, info["mma_ops"]
    assert compile_launch(Launch(kernel, args, meta_), p, opts)["cached"]
    binaries = list((cache / "triton_targets").glob("*.hsaco" if p.is_amd else "*.cubin"))
    assert len(binaries) == 1 and binaries[0].stat().st_size > 0


def matmul_spec(M: int, N: int, K: int, t: TileConfig | None) -> KernelSpec:
    x = Value("x", TensorType((1, M, K), DType.f16))
    w = Value("w", TensorType((K, N), DType.f16))
    out = Value("y", TensorType((1, M, N), DType.f16))
    node = Node("matmul", ("x", "w"), (), out)
    return KernelSpec("k0_matmul", "matmul", (x, w), (node,), ("y",), (1, M, N), (), ("y",), t)


def test_tiling_exclude_picks_another_config() -> None:
    spec = matmul_spec(1024, 1024, 1024, None)
    p = get_profile("h100")
    first = tile(spec, p)
    second = tile(spec, p, exclude=(first,))
    assert launch_key(second) != launch_key(first)
    assert tile(spec, p, exclude=()) == first  # excluding nothing changes nothing


def test_spilling_config_goes_back_to_tiling(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """256x128x64 with 4 warps cannot hold its fp32 accumulator on sm_80 (256 fp32 per
    thread): the compile shows spills, tiling is asked again without it and says why."""
    p = get_profile("a100")
    forced = TileConfig((("BLOCK_M", 256), ("BLOCK_N", 128), ("BLOCK_K", 64)), 4, 3,
                        group_m=8, gpu="a100")  # fmt: skip
    spec = matmul_spec(512, 512, 256, forced)
    with caplog.at_level(logging.INFO, logger="tilefuse.tiling"):
        results = verify_spec(spec, p)
    assert any("256x128x64 s3 w4 spills" in r.message for r in caplog.records)
    (r,) = results
    assert r.config != forced.short and "256x128x64 s3 w4 spills" in r.retiled
    assert r.spill_bytes == 0 and r.tensor_cores and r.ok


def example_kernels(name: str, dtype: torch.dtype, kinds: tuple[str, ...]) -> list[KernelSpec]:
    sys.path.insert(0, str(ROOT / "examples"))
    import compiler

    module = __import__(name)
    model, args = module.build(dtype=dtype)
    c = compiler.compile(model, args, backend="numpy")
    return [k for k in c.kernels if isinstance(k, KernelSpec) and k.kind in kinds]


def assert_fits(report: object) -> None:
    assert report.results, "no heavy kernels"
    bad = [r for r in report.results if not r.ok]
    assert not bad, "\n" + str(report)
    for r in report.results:
        if r.tensor_cores is not None:
            assert set(r.mma_ops) & TENSOR_OPS[r.gpu], r


GPUS = ("a100", "h100", "b200", "mi300x")


# gpt2 in fp16 and bf16, the unet's matmul/attention kernels in fp16 (bf16 compiles to the
# same resources here; measured: all bf16 cases pass too), the unet's convs per target
SWEEP = [
    ("gpt2", ("matmul", "attention"), torch.float16),
    ("gpt2", ("matmul", "attention"), torch.bfloat16),
    ("unet", ("matmul", "attention"), torch.float16),
]


@pytest.mark.targets
@pytest.mark.parametrize(
    ("example", "kinds", "dtype"), SWEEP, ids=["gpt2-fp16", "gpt2-bf16", "unet-mm-attn-fp16"]
)
def test_examples_fit_every_target(example: str, kinds: tuple, dtype: torch.dtype) -> None:
    """The heavy kernels of the examples at default size, at the tiles tiling picks for a100,
    h100, b200 and mi300x (retiled where a compile spills): zero spills, smem within the
    profile, tensor-core opcodes. Cold: ~60 s (gpt2) and ~90 s (unet) each on 2 cores;
    compiles are cached under TILEFUSE_CACHE_DIR."""
    kernels = example_kernels(example, dtype, kinds)
    assert_fits(verify_kernels(kernels, [get_profile(g) for g in GPUS]))


B200_CONV = pytest.mark.xfail(
    strict=True,
    reason="known: k2_conv2d (conv_in, Cin 4) still spills 56 B on sm_100 after 6 retiles; the "
    "implicit-GEMM A gather (int32 index math and masks per [BLOCK_M, BLOCK_K] element) is "
    "register-hungry and tiling's register model does not count it",
)


@pytest.mark.targets
@pytest.mark.parametrize("gpu", ["a100", "h100", pytest.param("b200", marks=B200_CONV), "mi300x"])
def test_unet_convs_fit(gpu: str) -> None:
    """The unet's convs (3x3 s1 with bias, time embedding and residual epilogues, 3x3 s2),
    fp16; on NVIDIA most need 1-6 retiles (logged under tilefuse.tiling). ~30-60 s cold."""
    kernels = example_kernels("unet", torch.float16, ("conv2d",))
    assert_fits(verify_kernels(kernels, [get_profile(gpu)]))


def test_compile_after_interpreted_run(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Running an interpreted kernel (which calls tl.cdiv/tl.zeros) leaves triton.language
    as it was: a compile in the same process still works (Note [One definition per mode])."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(cache / "triton"))  # no cached binary to hide it
    t, launches = small_matmul()
    k = MatmulKernel("k_small", "fp16", epilogue=("acc = acc + bias",), epilogue_inputs=("bias",))
    interpreted = load_module(render_matmul(k, t), interpret=True)
    a, w, bias = torch.randn(1, 20, 24).half(), torch.randn(24, 18).half(), torch.randn(18).half()
    out = interpreted.launch(a, w, torch.empty(1, 20, 18, dtype=torch.float16), bias)
    assert torch.allclose(out.float(), (a.float() @ w.float() + bias.float()), atol=2e-2)
    kernel, _, args, meta_ = launches[0]
    info = compile_launch(Launch(kernel, args, meta_), get_profile("a100"), t.triton_options())
    assert not info["cached"] and info["mma_ops"].get("HMMA", 0) > 0
