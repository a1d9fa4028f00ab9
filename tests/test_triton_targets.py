"""Target verification without a GPU: compile for sm_80/sm_89/sm_90/sm_100/gfx942, read
registers, spills, shared memory and tensor-core opcodes; retile a config that spills; cache on
disk; `Compiled.verify_targets` over every kernel (pointwise and reductions too).
Repro: pytest tests/test_triton_targets.py (the example sweep: -m targets, `make test-targets`)"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import compiler
from backends.triton.matmul import MatmulKernel, render_matmul
from backends.triton.targets import (
    Launch,
    compile_launch,
    load_module,
    specialize,
    verify_kernels,
    verify_spec,
)
from compiler.core.gpu import get_profile
from compiler.core.ir import Node, Value
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig
from compiler.core.types import DType, TensorType
from passes.tiling import launch_key, tile

ROOT = Path(__file__).resolve().parents[1]
MMA = {"a100": "HMMA", "h100": "HGMMA", "b200": "UTCHMMA", "mi300x": "v_mfma"}
# sm_90/sm_100 tiles with BLOCK_M < 64 (the M=1 time-embedding GEMMs) use mma.sync (HMMA):
# still tensor cores, not wgmma/tcgen05
TENSOR_OPS = {"a100": {"HMMA"}, "h100": {"HGMMA", "HMMA"}, "b200": {"UTCHMMA", "HMMA"},
              "l4": {"HMMA"}, "mi300x": {"v_mfma"}}  # fmt: skip


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


def test_config_that_does_not_compile_goes_back_to_tiling(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Triton's own passes fail on some configs (measured: dit's small-M GEMMs at 16x32x128
    s5 w2 on sm_80, in TritonGPUPrefetch): like a spill, that config is excluded and tiling
    asked again, and the report says why."""
    import backends.triton.targets as targets

    p = get_profile("a100")
    forced = TileConfig((("BLOCK_M", 64), ("BLOCK_N", 64), ("BLOCK_K", 32)), 4, 3,
                        group_m=8, gpu="a100")  # fmt: skip
    spec = matmul_spec(512, 512, 256, forced)
    real = targets.compile_launch

    def flaky(launch: Launch, p: object, options: dict) -> dict:
        if options.get("num_stages") == 3 and options.get("num_warps") == 4 and not seen:
            seen.append(1)
            raise RuntimeError("PassManager::run failed")
        return real(launch, p, options)

    seen: list[int] = []
    monkeypatch.setattr(targets, "compile_launch", flaky)
    with caplog.at_level(logging.INFO, logger="tilefuse.tiling"):
        (r,) = verify_spec(spec, p)
    assert seen and r.ok and r.config != forced.short
    assert "64x64x32 s3 w4 does not compile (RuntimeError: PassManager::run failed)" in r.retiled
    assert any("does not compile" in rec.message for rec in caplog.records)


def tiny_blocks(dtype: torch.dtype) -> compiler.Compiled:
    """A LayerNorm, then two identical Linear -> GELU -> LayerNorm blocks: 5 kernels, 3
    distinct ones (the first norm reads the graph input through runtime strides)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.LayerNorm(64)]
    for _ in range(2):
        layers += [nn.Linear(64, 64), nn.GELU(), nn.LayerNorm(64)]
    model = nn.Sequential(*layers).eval().to(dtype)
    return compiler.compile(model, (torch.randn(16, 64).to(dtype),), backend="numpy")


def progress_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.message for r in caplog.records if r.name == "tilefuse.targets"]


def test_verify_targets_every_kernel_once(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The normal suite's check of the API (a few seconds cold): every kernel of a tiny fp16
    model (matmul and layer norm kernels) compiled for sm_80, the entries the issue asks for,
    identical layers compiled once, and a second run served from the disk cache."""
    c = tiny_blocks(torch.float16)
    kinds = ["reduction", "matmul", "reduction", "matmul", "reduction"]
    assert [k.kind for k in c.kernels] == kinds
    with caplog.at_level(logging.INFO, logger="tilefuse.targets"):
        report = c.verify_targets("a100", progress=False)
    assert "5/5 kernels, 3 compiled, 2 from the cache" in progress_lines(caplog)[-1]
    assert report.ok, report
    d = report.to_dict()
    assert [e["kernel"] for e in d["kernels"]] == [k.name for k in c.kernels]
    for e in d["kernels"]:
        assert e["target"] == "cuda:80/32" and e["spill_bytes"] == 0 and e["regs"] > 0
        assert 0 < e["occupancy"] <= 1 and e["smem_bytes"] <= e["smem_limit"]
        assert e["config"] and e["tensor_cores"] is (True if e["kind"] == "matmul" else None)
    matmul = next(r for r in report.results if r.kind == "matmul")
    assert matmul.mma_ops.get("HMMA", 0) > 0 and matmul.smem_bytes > 0
    assert d["per_gpu"]["a100"]["kernels"] == 5 and d["per_gpu"]["a100"]["ok"]
    text = str(report)
    assert "on a100 (cuda:80/32): 5 kernels" in text
    assert all(k.name in text for k in c.kernels) and "HMMA:" in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tilefuse.targets"):
        again = c.verify_targets(["a100"], progress=False)
    assert "0 compiled, 5 from the cache" in progress_lines(caplog)[-1]
    assert again == report
    c.gpu = "a100"  # as compile(gpu="a100") sets it: verify_targets() then verifies for it
    assert c.verify_targets(progress=False) == report


def test_fp32_dots_are_ieee_not_tf32(cache: Path) -> None:
    """An fp32 model's matmul compiles with IEEE fp32 dots: no TF32 MMA in the SASS, and that
    is ok; the same template with TF32 allowed shows TF32 MMAs, which is not."""
    report = tiny_blocks(torch.float32).verify_targets("a100", progress=False)
    matmul = next(r for r in report.results if r.kind == "matmul")
    assert matmul.dtype == "fp32" and matmul.tf32_ops == 0 and matmul.tensor_cores is False
    assert report.ok, report
    k = MatmulKernel("k_f32", "fp32")
    t = TileConfig((("BLOCK_M", 64), ("BLOCK_N", 64), ("BLOCK_K", 32)), 4, 2, group_m=8)
    source = render_matmul(k, t)
    assert 'input_precision="ieee"' in source
    tf32 = load_module(source.replace('"ieee"', '"tf32"'), interpret=False)
    f32 = torch.float32
    (kernel, _, args, meta_), *_ = tf32.arguments(
        meta(1, 64, 64, dtype=f32), meta(64, 64, dtype=f32), meta(1, 64, 64, dtype=f32)
    )
    info = compile_launch(Launch(kernel, args, meta_), get_profile("a100"), t.triton_options())
    assert info["tf32_ops"] > 0


def test_verify_targets_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Triton cannot be imported, verify_targets says so and how to get it."""
    c = compiler.compile(lambda x: x * 2, (torch.randn(4),), backend="numpy")
    monkeypatch.setitem(sys.modules, "backends.triton.targets", None)  # import now fails
    with pytest.raises(ImportError, match=r"with Triton, which is not importable.*pip install"):
        c.verify_targets("h100")


def test_a_kernel_that_cannot_render_is_a_named_failure() -> None:
    """No crash and no silent pass: the report names the kernel and why."""
    x = Value("x", TensorType((4, 8), DType.f16))
    node = Node("no_such_op", ("x",), (), Value("y", TensorType((4, 8), DType.f16)))
    spec = KernelSpec("k7_fused_no_such_op", "pointwise", (x,), (node,), ("y",), (4, 8))
    report = verify_kernels([spec], [get_profile("h100")], model="m")
    (r,) = report.results
    assert not r.ok and not report.ok and "no_such_op" in r.error
    assert "k7_fused_no_such_op" in str(report) and "ERROR" in str(report)


def test_spilling_reduction_goes_back_to_tiling(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Retiling covers reductions: a persistent softmax over 16384-wide rows in one warp (the
    row, 512 fp32 values per thread, is kept for the output pass) spills on sm_80; tiling is
    asked again without that config, and its pick does not spill."""
    x = torch.randn(8, 16384).half()
    c = compiler.compile(lambda x: torch.softmax(x, -1), (x,), backend="numpy")
    (spec,) = c.kernels
    p = get_profile("a100")
    forced = replace(tile(spec, p), blocks=(("XBLOCK", 1), ("RBLOCK", 16384)), num_warps=1,
                     persistent=True)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="tilefuse.tiling"):
        (r,) = verify_spec(replace(spec, tile=forced), p)
    assert "1x16384 s1 w1 persistent spills" in r.retiled, r
    assert any("asking tiling again" in m.message for m in caplog.records)
    assert r.ok and r.config != forced.short


@pytest.mark.targets
def test_worker_processes_give_the_same_report(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Note [Verifying many kernels]: compiled in worker processes, the report is the one
    this process makes, and the workers' retile reasons are logged here. ~20 s cold."""
    import backends.triton.targets

    monkeypatch.setattr(backends.triton.targets, "POOL_MIN", 2)
    forced = TileConfig((("BLOCK_M", 256), ("BLOCK_N", 128), ("BLOCK_K", 64)), 4, 3,
                        group_m=8, gpu="a100")  # fmt: skip
    specs = [matmul_spec(512, 512, 256, forced), *tiny_blocks(torch.float16).kernels]
    p = get_profile("a100")
    with caplog.at_level(logging.INFO, logger="tilefuse.tiling"):
        pooled = verify_kernels(specs, [p], workers=2)
    assert any("256x128x64 s3 w4 spills" in r.message for r in caplog.records)
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(cache / "in-process"))
    assert verify_kernels(specs, [p], workers=1) == pooled
    assert pooled.ok and [r.kernel for r in pooled.results] == [s.name for s in specs]


# --- the sweep: the four examples at their default (real) sizes, fp16 and bf16, five targets

EXAMPLES = ("gpt2", "llama", "unet", "dit")
SWEEP_GPUS = ("a100", "h100", "b200", "l4", "mi300x")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@functools.cache
def example(name: str, dtype: str) -> compiler.Compiled:
    sys.path.insert(0, str(ROOT))
    module = __import__(f"examples.{name}", fromlist=["build"])
    model, args = module.build(dtype=DTYPES[dtype])
    return compiler.compile(model, args, backend="numpy")


def assert_fits(report: object) -> None:
    assert report.results, "no kernels"
    bad = [r for r in report.results if not r.ok]
    assert not bad, "\n" + "\n".join(str(r) for r in bad)
    for r in report.results:
        if r.tensor_cores is not None:
            assert set(r.mma_ops) & TENSOR_OPS[r.gpu], r


@pytest.mark.targets
@pytest.mark.parametrize("gpu", SWEEP_GPUS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_fits_target(name: str, dtype: str, gpu: str) -> None:
    """Every kernel of the example (pointwise, reductions, matmul, conv2d, attention) at the
    tiles tiling picks for `gpu`, retiled where a compile spills: it compiles, spills nothing,
    fits shared memory, and every matmul/conv2d/attention kernel has the target's tensor-core
    opcodes (HMMA, HGMMA, UTCHMMA, v_mfma). Compiles are cached under TILEFUSE_CACHE_DIR."""
    c = example(name, dtype)
    report = c.verify_targets(gpu, progress=False)
    assert len({r.kernel.split(".")[0] for r in report.results}) == len(c.kernels)
    assert_fits(report)


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
