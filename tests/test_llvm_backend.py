"""The llvm backend: kernel stages, extern calls, threads, vectorization, the disk cache.

Op-level parity of every op runs on this backend in tests/test_op_parity.py; models in
tests/test_models.py and tests/test_diffusion.py (check_parity checks every backend built).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import compiler
from backends.llvm import jit as llvm_jit
from backends.llvm.kernel import render_kernel
from compiler.core.ir_text import parse_graph
from compiler.core.schedule import ExternCall, KernelSpec, split_externs
from passes.fusion import fuse_kernels


def kernel(src: str) -> KernelSpec:
    (k,) = fuse_kernels(parse_graph(textwrap.dedent(src))).kernels
    return k


def check(fn: object, *inputs: torch.Tensor) -> compiler.Compiled:
    report = compiler.check_parity(fn, inputs, backends=("llvm",))
    assert report.ok, f"\n{report}"
    return report.compiled


def test_layer_norm_statistics_are_row_phases_of_one_stage() -> None:
    m = render_kernel(
        kernel("""
        def f(x: f32[4,37,1000], r: f32[4,37,1000], w: f32[1000], b: f32[1000]):
            t0: f32[4,37,1000] = add(x, r)
            t1: f32[4,37,1000] = layer_norm(t0, w, b, normalized_shape=(1000,), eps=1e-05)
            return (t1, t0)
        """)
    )
    (stage,) = m.stages
    assert stage.startswith("store") and "row phases: mean" in stage
    assert m.scratch_bytes == 0 and m.parallel


def test_group_norm_statistics_go_to_scratch_per_group() -> None:
    m = render_kernel(
        kernel("""
        def f(x: f32[2,64,9,9], w: f32[64], b: f32[64]):
            t1: f32[2,64,9,9] = group_norm(x, w, b, groups=8, eps=1e-05)
            t2: f32[2,64,9,9] = silu(t1)
            return (t2,)
        """)
    )
    assert [s.split()[0] for s in m.stages] == ["reduce", "reduce", "store"]
    assert "outer [2, 8]" in m.stages[0] and m.scratch_bytes > 0


@pytest.mark.parametrize("shape", [(1, 320, 16, 16), (2, 64, 7, 5)])
def test_group_norm_silu_parity(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    w, b = torch.randn(shape[1]), torch.randn(shape[1])
    check(lambda x, w, b: F.silu(F.group_norm(x, 32, w, b)), x, w, b)


@pytest.mark.parametrize("n", [1, 37, 1000, 5000])
def test_softmax_rows_of_ragged_length(n: int) -> None:
    check(lambda x: torch.softmax(x * 0.5, dim=-1), torch.randn(3, 5, n))


def test_reductions_over_leading_and_several_axes() -> None:
    x = torch.randn(6, 33, 10)
    check(lambda x: (x.sum(0), x.mean((0, 2)), x.amax(1, keepdim=True) - x), x)


def test_long_sum_accumulates_in_blocks() -> None:
    check(lambda x: x.sum(-1), torch.randn(2, 100_000) + 3.0)


def test_non_contiguous_and_integer_inputs() -> None:
    x = torch.randn(8, 16).t()  # a transposed view
    ids = torch.tensor([[3, 1, 0], [2, 2, 7]])
    table = torch.randn(8, 5)
    check(lambda x, ids, t: (x.exp() + 1, F.embedding(ids, t) * 2), x, ids, table)


def test_epilogue_is_one_native_part_after_the_gemm() -> None:
    k = kernel("""
    def f(x: f32[4,64], w: f32[32,64], b: f32[32]):
        t0: f32[64,32] = permute(w, dims=(1, 0))
        t1: f32[4,32] = matmul(x, t0)
        t2: f32[4,32] = add(t1, b)
        t3: f32[4,32] = gelu(t2, approximate='tanh')
        return (t3,)
    """)
    gemm, epilogue = split_externs(k, {"matmul": "blas"})
    assert isinstance(gemm, ExternCall) and [v.op for v in gemm.views] == ["permute"]
    assert isinstance(epilogue, KernelSpec) and epilogue.outputs == ("t3",)
    assert [v.name for v in epilogue.inputs] == ["t1", "b"]
    assert "extern blas" in str(gemm)


def test_linear_gelu_parity_and_readable_source() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(approximate="tanh"))
    c = check(model.eval(), torch.randn(3, 10, 64))
    source = c.source("llvm")
    assert "packed GEMM (weights packed once)" in source and "# extern" in source
    assert 'define void @"tf_' in source and "; stages:" in source


def test_threads_do_not_change_results() -> None:
    x, w = torch.randn(64, 4096), torch.randn(4096)
    c = compiler.compile(lambda x, w: F.rms_norm(x, (4096,), w, eps=1e-6), (x, w), backend="llvm")
    namespace = c._program("llvm").load_namespace()
    (k,) = c.schedule.kernels
    outs = []
    for nthreads in (1, 2, 3):
        namespace["NTHREADS"] = nthreads
        out = torch.empty(64, 4096)
        namespace[k.name](x, w, out)
        outs.append(out)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.skipif(
    llvm_jit.host().vector_bits < 512, reason="the llvm backend compiles for a CPU without AVX-512"
)
def test_pointwise_kernel_uses_512_bit_vectors() -> None:
    m = render_kernel(
        kernel("""
        def f(x: f32[64,1024], y: f32[64,1024]):
            t0: f32[64,1024] = mul(x, y)
            t1: f32[64,1024] = exp(t0)
            return (t1,)
        """)
    )
    asm = llvm_jit.assembly(m.ir)
    assert "zmm" in asm and "expf" not in asm


class GatedLinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.lin(x)) * x


def test_bf16_model_parity_and_output_dtype() -> None:
    model = GatedLinear().to(torch.bfloat16).eval()
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    c = check(model, x)
    assert c(x).dtype is torch.bfloat16


def test_bisect_runs_llvm_kernels_one_by_one() -> None:
    x = torch.randn(2, 8, 16)
    w = torch.randn(16)
    c = compiler.compile(lambda x, w: torch.softmax(x * w, -1).sum(-1), (x, w), backend="llvm")
    reference = c.reference_values((x, w), {})
    fns = c.kernel_functions("llvm")
    for k in c.schedule.kernels:
        outs = [np.empty_like(np.asarray(reference[o])) for o in k.outputs]
        fns[k.name](*(reference[v.name] for v in k.inputs), *outs)
        for o, got in zip(k.outputs, outs, strict=True):
            np.testing.assert_allclose(got, reference[o], rtol=1e-5, atol=1e-6)


def test_second_process_loads_kernels_from_the_disk_cache(tmp_path: object) -> None:
    script = textwrap.dedent("""
        import torch, compiler
        from backends.llvm import jit as llvm_jit
        c = compiler.compile(lambda x: torch.tanh(x) * 2 + x.sum(-1, keepdim=True),
                             (torch.randn(8, 300),), backend="llvm")
        print(llvm_jit.STATS["compiled"], llvm_jit.STATS["cache_hits"])
    """)
    env = {**os.environ, "TILEFUSE_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        for _ in range(2)
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (tuple(map(int, r.stdout.split())) for r in runs)
    assert first[0] >= 1 and second == (0, first[0])


ATTENTION = {
    "causal": (dict(is_causal=True), (2, 4, 37, 37, 16)),
    "cross-head-dim-40": ({}, (1, 8, 64, 16, 40)),
    "gqa": (dict(enable_gqa=True), (1, 8, 33, 33, 32)),
    "long-rows": ({}, (1, 2, 300, 2000, 8)),
    "head-dim-64": ({}, (1, 2, 70, 45, 64)),  # whole vectors: V read in place
}
VALUE_DIMS = {"cross-head-dim-40": 56}  # Dv != D: 4 vectors a row, 6-row output tiles


@pytest.mark.parametrize("name", list(ATTENTION))
def test_native_attention(name: str) -> None:
    kwargs, (b, h, length, source, d) = ATTENTION[name]
    hk = 2 if name == "gqa" else h
    q = torch.randn(b, h, length, d)
    k, v = torch.randn(b, hk, source, d), torch.randn(b, hk, source, VALUE_DIMS.get(name, d))
    c = check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs), q, k, v)
    assert "native attention" in c.source("llvm")


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_native_attention_with_a_broadcast_mask(mask_dtype: torch.dtype) -> None:
    q, k, v = (torch.randn(2, 4, 24, 16) for _ in range(3))
    mask = torch.rand(24, 24) > 0.3 if mask_dtype is torch.bool else torch.randn(1, 4, 1, 24)
    if mask_dtype is torch.bool:
        mask[3] = False  # a fully masked row gives zeros, as torch's safe softmax
    c = check(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m), q, k, v, mask)
    assert "native attention" in c.source("llvm")


def test_attention_on_strided_heads_of_a_fused_qkv() -> None:
    qkv = torch.randn(1, 40, 3 * 64)

    def heads(qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.reshape(1, 40, 4, 16).transpose(1, 2) for t in qkv.split(64, dim=-1))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)

    c = check(heads, qkv)
    assert "native attention" in c.source("llvm")


def test_float64_attention_uses_torch() -> None:
    q, k, v = (torch.randn(1, 2, 8, 4, dtype=torch.float64) for _ in range(3))
    c = check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k, v)
    assert "F.scaled_dot_product_attention(" in c.source("llvm")


@pytest.mark.parametrize(("library", "call"), [("mkl", "_mkl_linear"), ("onednn", "W.dnnl")])
def test_linear_weights_are_packed_once_and_follow_in_place_updates(
    library: str, call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEFUSE_GEMM", library)
    model = torch.nn.Linear(16, 8).eval()
    x = torch.randn(4, 16)
    c = compiler.compile(model, (x,), backend="llvm")
    assert call in c.source("llvm")
    torch.testing.assert_close(c(x), model(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.weight.mul_(2)
    torch.testing.assert_close(c(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("size", "padding", "bias"), [(8, 1, True), (11, 1, False), (9, 0, True), (12, 2, True)]
)
def test_winograd_conv3x3(size: int, padding: int, bias: bool) -> None:
    conv = torch.nn.Conv2d(32, 48, 3, padding=padding, bias=bias).eval()
    c = check(conv, torch.randn(2, 32, size, size))
    assert "Winograd F(2x2,3x3)" in c.source("llvm")


def test_strided_conv_is_not_winograd() -> None:
    conv = torch.nn.Conv2d(32, 32, 3, stride=2, padding=1).eval()
    c = check(conv, torch.randn(1, 32, 16, 16))
    assert "Winograd" not in c.source("llvm") and "oneDNN convolution" in c.source("llvm")


def test_long_sums_keep_their_block_loop() -> None:
    # Note [Blocks LLVM does not unroll]: a GroupNorm group of 10 channels at 32x32 sums 10
    # blocks of 1024; unrolled in full the module was 5665 lines of optimized IR (0.4 s to
    # compile), with the block count hidden from LLVM about 570
    model = torch.nn.GroupNorm(32, 320).eval()
    c = compiler.compile(model, (torch.randn(1, 320, 32, 32),), backend="llvm")
    (module,) = c._program("llvm").modules.values()
    assert '"=r,0"(i64 10)' in module.ir  # the block count, through an empty asm
    assert llvm_jit.optimized_ir(module.ir).count("\n") < 1500


def test_identical_layers_emit_their_module_once_per_program(monkeypatch):
    import threading

    from llvmlite import ir

    from backends.llvm import attention as llvm_attention
    from backends.llvm import emit as llvm_emit

    calls: list[str] = []

    def emit() -> ir.Module:
        calls.append("x")
        return ir.Module(name="m")

    text = llvm_emit.module_text("s", emit)
    assert llvm_emit.module_text("s", emit) == text and len(calls) == 2  # no program: no memo
    with llvm_emit.one_program():
        llvm_emit.module_text("s", emit)
        llvm_emit.module_text("s", emit)
        other = threading.Thread(target=llvm_emit.module_text, args=("s", emit))
        other.start()
        other.join()  # another thread's render is not this program
        with llvm_emit.one_program():
            llvm_emit.module_text("s", emit)  # a program rendered inside: its own memo
        llvm_emit.module_text("s", emit)
    assert len(calls) == 5

    emitted: list[str] = []
    real = llvm_attention._Attention._body
    monkeypatch.setattr(
        llvm_attention._Attention, "_body", lambda self, s: emitted.append(s) or real(self, s)
    )

    def two_layers(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        o = F.scaled_dot_product_attention(q, k, v)
        return F.scaled_dot_product_attention(o * 2.0, k, v)

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=g) for _ in "qkv")
    c = compiler.compile(two_layers, (q, k, v), backend="llvm")
    torch.testing.assert_close(c(q, k, v), two_layers(q, k, v), rtol=1e-4, atol=1e-4)
    attention = [s for s in c._program("llvm").modules if s.startswith("tf_attention")]
    assert len(attention) == 1 and emitted == attention  # two calls, one emitted
    assert c._program("llvm").source.count(f"{attention[0]}(NTHREADS") == 2


def test_weights_captured_as_constants_feed_extern_calls():
    """A function closing over a module: torch.export lifts its weights to constants, which a
    native part hands to the convolution. The part's constant and its output share a name."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 4, stride=4).eval()
    x = torch.randn(1, 3, 16, 16)

    def patches(px: torch.Tensor) -> torch.Tensor:
        return conv(px).flatten(2).transpose(1, 2)

    c = compiler.compile(patches, (x,), backend="llvm")
    with torch.no_grad():
        torch.testing.assert_close(c(x), patches(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["W", "F", "view", "len", "k0_conv2d"])
def test_a_model_named_like_a_driver_global_still_runs(name):
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(16, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    Model.__name__ = Model.__qualname__ = name
    torch.manual_seed(0)
    model, x = Model().eval(), torch.randn(64, 16)
    c = compiler.compile(model, (x,), backend="llvm")
    with torch.no_grad():
        torch.testing.assert_close(c(x), model(x), rtol=1e-5, atol=1e-5)
    assert f"def {name}_forward(" in c.source("llvm")


def test_a_value_recomputed_in_two_kernels_gets_a_slot_in_each():
    """HF ViT builds one all-True mask (`full`) that every layer's attention reads: fusion
    recomputes it in each attention kernel, into a slot. Both slots had one name, hence one
    offset: the first layer's mask overwrote its own V (wrong output from 2 layers on)."""

    class Layers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.ModuleList(torch.nn.Linear(64, 192) for _ in range(2))
            self.out = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mask = torch.full((1, 1, x.shape[1], x.shape[1]), True)
            for qkv, out in zip(self.qkv, self.out, strict=True):
                q, k, v = (t.view(1, -1, 2, 32).transpose(1, 2) for t in qkv(x).chunk(3, -1))
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                x = x + out(a.transpose(1, 2).reshape(x.shape))
            return x

    torch.manual_seed(0)
    model, x = Layers().eval(), torch.randn(1, 197, 64)
    c = compiler.compile(model, (x,), backend="llvm")
    with torch.no_grad():
        torch.testing.assert_close(c(x), model(x), rtol=1e-4, atol=1e-4)
    source = c.source("llvm")
    slots = [line.split(" = ")[0] for line in source.splitlines() if "torch.bool" in line]
    assert len(slots) == 2 and len(set(slots)) == 2, slots  # one view per kernel
