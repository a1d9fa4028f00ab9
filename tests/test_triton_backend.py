"""The Triton backend's program: launcher, readability, persistent and looped reductions,
storage dtypes, strided inputs, the interpreter notice, refusals and the epilogue hook.

Everything runs under the Triton interpreter on small (ragged) shapes.
Repro: pytest tests/test_triton_backend.py -k looped
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import compiler
from backends.triton import render as triton_backend
from backends.triton.ops import TritonUnsupportedError
from backends.triton.values import render_epilogue
from compiler.core.ir import Node
from compiler.core.tile_config import TileConfig
from passes.memory import plan_memory
from tests.helpers import program

pytestmark = pytest.mark.usefixtures("quiet_interpreter")


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _program(fn: Callable[..., Any], args: tuple, tile: TileConfig | None = None) -> tuple:
    """(compiled for numpy, the Triton program of its schedule, every kernel tiled `tile`)."""
    c = compiler.compile(fn, args, backend="numpy")
    s = c.schedule
    if tile is not None:
        s = replace(s, kernels=tuple(replace(k, tile=tile) for k in s.kernels))
    return c, program("triton", s)


def _check(fn: Callable[..., Any], args: tuple, tile: TileConfig | None = None) -> str:
    c, prog = _program(fn, args, tile)
    outs = prog.load()(*c.torch_inputs(args, {}))
    ref = c.run(args, backend="numpy")
    ref = ref if isinstance(ref, tuple) else (ref,)
    eager = fn(*args)
    eager = eager if isinstance(eager, tuple) else (eager,)
    for o, r, e in zip(outs, ref, eager, strict=True):
        torch.testing.assert_close(o.to(r.dtype), r, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(o.to(e.dtype), e, rtol=1e-4, atol=1e-4)
    return prog.source


LOOPED = TileConfig((("XBLOCK", 2), ("RBLOCK", 4)), num_warps=1, persistent=False)
PERSISTENT = TileConfig((("XBLOCK", 2), ("RBLOCK", 16)), num_warps=1, persistent=True)

# 5 rows of 13 (or groups of 3 channels x 2 x 2 = 12): ragged for XBLOCK 2 and RBLOCK 4
ROWS = {
    "sum": (lambda x: x.sum(-1), (_randn(5, 13),)),
    "sum-middle": (lambda x: x.sum(1, keepdim=True) * 2, (_randn(3, 13, 2),)),
    "mean": (lambda x: x.mean(-1) + 1, (_randn(5, 13),)),
    "amax": (lambda x: x.amax(-1), (_randn(5, 13),)),
    "amin": (lambda x: x.amin(-1), (_randn(5, 13),)),
    "softmax": (lambda x: torch.softmax(x * 2, -1), (_randn(5, 13),)),
    "log_softmax": (lambda x: torch.log_softmax(x, -1), (_randn(5, 13),)),
    "layer_norm": (
        lambda x, r, w, b: F.layer_norm(x + r, (13,), w, b),
        (_randn(5, 13), _randn(5, 13, seed=1), _randn(13, seed=2), _randn(13, seed=3)),
    ),
    "layer_norm-writes-prologue": (
        lambda x, r: (x + r, F.layer_norm(x + r, (13,))),
        (_randn(5, 13), _randn(5, 13, seed=1)),
    ),
    "rms_norm": (
        lambda x, w: F.rms_norm(x, (13,), w, eps=1e-6),
        (_randn(5, 13), _randn(13, seed=2)),
    ),
    "group_norm-silu": (
        lambda x, w, b: F.silu(F.group_norm(x, 2, w, b)),
        (_randn(3, 6, 2, 2), _randn(6, seed=2), _randn(6, seed=3)),
    ),
    "cumsum": (lambda x: x.cumsum(-1), (_randn(5, 13),)),
    "variance": (lambda x: ((x - x.mean(-1, keepdim=True)) ** 2).mean(-1), (_randn(5, 13),)),
}


@pytest.mark.parametrize("case", sorted(ROWS))
def test_looped_reduction(case: str) -> None:
    fn, args = ROWS[case]
    source = _check(fn, args, LOOPED)
    assert "for r0 in range(0, " in source and "looped over the row" in source


@pytest.mark.parametrize("case", sorted(ROWS))
def test_persistent_reduction(case: str) -> None:
    fn, args = ROWS[case]
    source = _check(fn, args, PERSISTENT)
    assert "for r0 in range" not in source and "persistent: the row in registers" in source


def test_persistent_config_smaller_than_the_row_loops() -> None:
    tile = TileConfig((("XBLOCK", 1), ("RBLOCK", 8)), num_warps=1, persistent=True)
    assert "for r0 in range(0, 13, RBLOCK)" in _check(*ROWS["softmax"], tile)


def test_pointwise_ragged_blocks_broadcast_and_views() -> None:
    def fn(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = F.gelu(x.transpose(0, 1) + b, approximate="tanh")
        return torch.cat([y, F.pad(y, (0, 0, 1, 0))[:7]], dim=1)

    tile = TileConfig((("XBLOCK", 16),), num_warps=1)
    _check(fn, (_randn(5, 7), _randn(5, seed=1)), tile)


def test_embedding_and_upsample_are_index_math() -> None:
    def fn(w: torch.Tensor, ids: torch.Tensor, x: torch.Tensor) -> tuple:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.embedding(ids, w) * 2, up + 1

    ids = torch.tensor([[3, 0, 2], [1, 1, 4]])
    source = _check(fn, (_randn(5, 6), ids, _randn(1, 2, 3, 3)), None)
    assert "torch.empty" in source and "copy" not in source and ".contiguous()" not in source


def test_upsample_to_a_size_1_dim_is_a_constant_index() -> None:
    """Nearest resizing to one row or column reads a constant index: rendered as a number,
    not as a conversion of a bare literal."""

    def fn(x: torch.Tensor) -> tuple:
        return F.interpolate(x, size=(4, 1), mode="nearest"), F.interpolate(x, size=(1, 3))

    _check(fn, (_randn(1, 2, 2, 2),), None)


@pytest.mark.parametrize("cols", [4, 5000], ids=["persistent", "looped"])
def test_nan_propagates_as_in_torch(cols: int) -> None:
    """relu, clamp, maximum, minimum, amax and amin give NaN where torch does (Triton's
    maximum lets the other operand win by default), in one block and in a looped row."""

    def fn(x: torch.Tensor, i: torch.Tensor) -> tuple:
        return (
            torch.relu(x), torch.clamp(x, -1, 1), torch.maximum(x * 0.5, x),
            torch.minimum(x, x * 0.5), x.amax(-1), x.amin(-1), i.amax(-1),
        )  # fmt: skip

    x = _randn(2, cols)
    x[0, 1] = x[1, cols - 1] = float("nan")
    i = torch.arange(2 * cols).reshape(2, cols) % 7 - 3
    c, prog = _program(fn, (x, i))
    outs = prog.load()(*c.torch_inputs((x, i), {}))
    for got, want in zip(outs, fn(x, i), strict=True):
        torch.testing.assert_close(got, want, equal_nan=True)


def test_an_arange_of_one_element_is_a_number() -> None:
    def fn(x: torch.Tensor) -> tuple:
        reversed_rows = x[:, torch.arange(0, -1, -1)]  # x has one row: index [0]
        return reversed_rows * 2, x + torch.arange(1, dtype=torch.float32) * 0.5

    _check(fn, (_randn(2, 1, 3),), None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_a_bool_or_an_integer_cast_to_a_half_float(dtype: torch.dtype) -> None:
    """Rounding to a 16-bit float works on the compute type: a bool or an integer gets there
    first (the bf16 rounding reads a float's bits)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return (x >= 0.5).to(x.dtype) * x + torch.arange(x.shape[-1]).to(x.dtype)

    _check(fn, (_randn(3, 5).to(dtype),))


def test_graph_outputs_that_are_views_and_sources() -> None:
    def fn(x: torch.Tensor) -> tuple:
        y = torch.exp(x)
        return y.t(), y.reshape(-1), torch.arange(4)

    _check(fn, (_randn(3, 4),))


def test_strided_inputs_need_no_copy() -> None:
    fn = lambda x, y: torch.softmax(x + y, -1)  # noqa: E731
    x, y = _randn(6, 5), _randn(5, 6, seed=1)
    _, prog = _program(fn, (x.t(), y))
    (out,) = prog.load()(x.t(), y)  # x.t() is not contiguous: read through its strides
    assert not x.t().is_contiguous()
    torch.testing.assert_close(out, fn(x.t(), y), rtol=1e-5, atol=1e-6)
    assert "a_args_0.stride(1)" in prog.source


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_narrow_floats_are_stored_narrow_and_computed_in_fp32(dtype: torch.dtype) -> None:
    def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.silu(F.layer_norm(x * 3, (24,), w))

    x, w = _randn(4, 24).to(dtype), _randn(24, seed=1).to(dtype)
    _, prog = _program(fn, (x, w))
    (out,) = prog.load()(x, w)  # tensors in their own dtype: loaded, upcast, rounded on store
    assert out.dtype == dtype
    ref = fn(x.double(), w.double())
    eager_err = (fn(x, w).double() - ref).abs().max()
    assert (out.double() - ref).abs().max() <= 2 * eager_err + 1e-3
    assert ".to(tl.float32)" in prog.source
    if dtype is torch.bfloat16:  # rounded to nearest even under the interpreter too
        assert "to_bf16_(" in prog.source and "BF16_BITS=_interpreted(" in prog.source
        (k,) = prog.load_compiled().values()
        assert k.constexprs["BF16_BITS"] == 0


def test_source_is_one_readable_module() -> None:
    c, prog = _program(*ROWS["group_norm-silu"])
    source = prog.source
    ast.parse(source)
    launchers = re.findall(rf"^def {c.graph.name}\(", source, flags=re.MULTILINE)
    assert len(launchers) == 1  # the program, named after the graph
    for k in c.kernels:
        assert f"@triton.jit\ndef {k.name}(" in source
        for line in str(k).splitlines():
            assert f"# {line}" in source  # the kernel's IR is its header comment
        assert f"def launch_{k.name}(" in source
    assert "XBLOCK: tl.constexpr, RBLOCK: tl.constexpr" in source
    assert "fused_group_norm_silu" in c.kernels[0].name


def test_launcher_allocates_exactly_the_planned_arena() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.sum(x, -1, keepdim=True) * x, -1).sum(-1)

    c, prog = _program(fn, (_randn(3, 5),))
    arena = plan_memory(c.schedule, triton_backend.memory_request(c.schedule, "float32"))
    allocated = [line for line in prog.source.splitlines() if "dtype=torch.uint8" in line]
    assert allocated == [f"    arena = torch.empty({arena.size}, dtype=torch.uint8, device=device)"]
    assert arena.blocks
    for name, offset in arena.offsets.items():
        assert f"a_{name} = _at(arena, {offset}, " in prog.source, name


def test_compile_with_triton_backend_and_gpu_tiles() -> None:
    fn, args = ROWS["layer_norm"]
    c = compiler.compile(fn, args, backend="triton", gpu="h100")
    assert all(k.tile is not None for k in c.kernels)
    torch.testing.assert_close(c(*args), fn(*args), rtol=1e-5, atol=1e-5)
    assert "tile (h100)" in c.source("triton")
    report = compiler.check_parity(fn, args, backends=("numpy", "triton"))
    assert report.ok, report


def test_kernel_functions_serve_bisection() -> None:
    fn, args = ROWS["layer_norm-writes-prologue"]
    c = compiler.compile(fn, args, backend="triton")
    kernels = c.kernel_functions("triton")
    assert set(kernels) == {k.name for k in c.kernels}


def test_interpreter_notice_is_given_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_backend, "_warned", False)
    _, prog = _program(*ROWS["sum"])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        prog.load()
        prog.load()
        prog.load_namespace()
    notices = [w for w in seen if "Triton interpreter" in str(w.message)]
    assert len(notices) == 1 and "not fast" in str(notices[0].message)


def test_environment_is_restored_after_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _, prog = _program(lambda x: x * 7.0 + 1, (_randn(3, 3),))
    prog.load()
    import os

    assert "TRITON_INTERPRET" not in os.environ


def test_heavy_kinds_render_and_are_supported() -> None:
    fn = lambda x, w: F.gelu(x @ w)  # noqa: E731
    args = (_randn(4, 8), _randn(8, 16, seed=1))
    c = compiler.compile(fn, args, backend="triton")
    matmul = next(k for k in c.kernels if k.kind == "matmul")
    assert triton_backend.supports(matmul) and triton_backend.unsupported_reason(matmul) is None
    torch.testing.assert_close(c(*args), fn(*args), rtol=1e-5, atol=1e-5)


def test_unrenderable_heavy_epilogue_is_a_clear_error() -> None:
    """An epilogue reading the GEMM result at another index than its tile is refused with
    the kernel's name (fusion does not build one; a hand-made spec does)."""
    args = (_randn(4, 8), _randn(8, 6, seed=1))
    (k,) = compiler.compile(lambda x, w: (x @ w) * 2, args, backend="numpy").kernels
    mm, mul = next(n for n in k.body if n.op == "matmul"), k.body[-1]
    out = replace(mul.out, type=replace(mul.out.type, shape=(6, 4)))
    flip = Node("permute", (mm.out.name,), (("dims", (1, 0)),), out)
    bad = replace(k, body=(*k.body[:-1], flip), outputs=(out.name,))
    why = triton_backend.unsupported_reason(bad)
    assert why is not None and k.name in why and "another index" in why
    with pytest.raises(TritonUnsupportedError, match=k.name):
        triton_backend.render_kernel(bad, frozenset(), "float32")


def test_supports_pointwise_and_reductions() -> None:
    c = compiler.compile(*ROWS["group_norm-silu"], backend="numpy")
    assert all(triton_backend.supports(k) for k in c.kernels)


def test_compiled_definitions_for_target_verification() -> None:
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    _, prog = _program(*ROWS["layer_norm"])
    kernels = prog.load_compiled()
    (k,) = kernels.values()
    assert isinstance(k.fn, JITFunction) and not isinstance(k.fn, InterpretedFunction)
    assert k.signature["XBLOCK"] == "constexpr" and k.signature["a_args_0_ptr"] == "*fp32"
    assert set(k.constexprs) == {"XBLOCK", "RBLOCK"} and k.num_warps >= 1
    assert list(k.signature) == list(k.fn.arg_names)


def test_epilogue_hook_on_an_accumulator_tile() -> None:
    from backends.triton.targets import load_module

    def fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.gelu(x @ w + b, approximate="tanh") * 0.5

    x, w, b = _randn(4, 8), _randn(8, 16, seed=1), _randn(16, seed=2)
    c = compiler.compile(fn, (x, w, b), backend="numpy")
    (k,) = [k for k in c.kernels if k.kind == "matmul"]
    at = [n.out.name for n in k.body].index(k.anchors[0])
    lines, final = render_epilogue(
        k.body[at + 1 :],
        "acc",
        k.anchors[0],
        k.outputs,
        lambda name: f"tl.load({name}_ptr + offs_n[None, :]).to(tl.float32)",
    )
    (out,) = k.outputs
    bias = next(v.name for v in k.inputs if v.type.shape == (16,))
    body = "\n".join(f"    {line}" for line in lines).replace(f"{bias}_ptr", "b_ptr")
    source = (
        "import triton\nimport triton.language as tl\n\n\n"
        "@triton.jit\ndef tanh_(x):\n"
        "    t = tl.exp(-2.0 * tl.abs(x))\n    y = (1.0 - t) / (1.0 + t)\n"
        "    return tl.where(x < 0, -y, y)\n\n\n"
        "@triton.jit\ndef epilogue(acc_ptr, b_ptr, out_ptr):\n"
        "    offs_m = tl.arange(0, 4)\n    offs_n = tl.arange(0, 16)\n"
        "    acc = tl.load(acc_ptr + offs_m[:, None] * 16 + offs_n[None, :])\n"
        f"{body}\n"
        f"    tl.store(out_ptr + offs_m[:, None] * 16 + offs_n[None, :], {final[out]})\n"
    )
    module = load_module(source, interpret=True)
    result = torch.empty(4, 16)
    module.epilogue[(1,)](x @ w, b, result)
    torch.testing.assert_close(result, fn(x, w, b), rtol=1e-5, atol=1e-5)


def _heavy_program(dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """A schedule with a split-K GEMM (two jit functions), an attention and a conv."""

    def fn(x, w, q, k, v, img, cw):
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.gelu(x @ w), attn, F.conv2d(img, cw, padding=1)

    args = (_randn(5, 64), _randn(64, 24, seed=1), _randn(1, 2, 9, 16, seed=2),
            _randn(1, 2, 9, 16, seed=3), _randn(1, 2, 9, 16, seed=4),
            _randn(1, 3, 6, 6, seed=5), _randn(4, 3, 3, 3, seed=6))  # fmt: skip
    c = compiler.compile(fn, tuple(a.to(dtype) for a in args), backend="numpy")
    split = TileConfig((("BLOCK_M", 16), ("BLOCK_N", 16), ("BLOCK_K", 16)), 4, 2, split_k=2)
    kernels = tuple(replace(k, tile=split) if k.kind == "matmul" else k for k in c.kernels)
    return c, replace(c.schedule, kernels=kernels)


def test_compiled_definitions_for_every_heavy_kernel() -> None:
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    c, s = _heavy_program()
    prog = program("triton", s)
    kernels = prog.load_compiled()
    (mm,) = [k.name for k in s.kernels if k.kind == "matmul"]
    assert set(kernels) == {k.name for k in s.kernels} | {f"{mm}_reduce"}
    assert {k.kind for k in s.kernels} >= {"matmul", "attention", "conv2d"}
    jit_defs = re.findall(r"^@triton\.jit\ndef (\w+)\(", prog.source, flags=re.MULTILINE)
    helpers = {"to_bf16_", "tanh_", "pow_", "quadrant_", "sincos_poly_", "sin_", "cos_",
               "max_nan_", "min_nan_", "amax_", "amin_"}  # fmt: skip
    assert set(jit_defs) - helpers == set(kernels)
    for name, k in kernels.items():
        assert isinstance(k.fn, JITFunction) and not isinstance(k.fn, InterpretedFunction)
        assert list(k.signature) == list(k.fn.arg_names), name
        assert all(k.signature[c] == "constexpr" for c in k.constexprs)
        assert k.constexprs.get("DOT_F32", False) is False
    assert kernels[f"{mm}_reduce"].num_stages == 1 and "ws_ptr" in kernels[mm].signature
    assert kernels[mm].num_stages == 2 and kernels[mm].constexprs["SPLIT_K"] == 2
    outs = prog.load()(*c.torch_inputs(c.example[0], {}))  # and it runs, split-K included
    for o, r in zip(outs, c.run(c.example[0], backend="numpy"), strict=True):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


def test_heavy_module_is_the_launchers_kernel() -> None:
    """heavy_module(spec, tile): the program's kernel text as a module whose `arguments`
    gives one launch per jit function, specialized like target verification does."""
    from backends.triton.render import heavy_module
    from backends.triton.targets import load_module, specialize

    c, s = _heavy_program()
    prog = program("triton", s)
    graph_inputs = frozenset(v.name for v in c.graph.inputs)
    for spec, k in zip(s.kernels, prog.kernels, strict=True):
        if spec.kind not in ("matmul", "conv2d", "attention"):
            continue
        tile = spec.tile or triton_backend.default_tile(spec)
        source, tensors, note = heavy_module(spec, tile, graph_inputs)
        assert k.source in source and k.source in prog.source and note
        module = load_module(source, interpret=False)
        launches = module.arguments(*tensors)
        assert [kernel.__name__ for kernel, *_ in launches] == [e.name for e in k.entries]
        for (kernel, _, args, meta), entry in zip(launches, k.entries, strict=True):
            signature, constexprs, _ = specialize(kernel, args, meta)
            assert list(signature) == [name for name, _ in entry.signature]
            assert {c: constexprs[c] for c, _ in entry.constexprs} == dict(entry.constexprs)


def test_every_heavy_jit_function_compiles_for_a_target(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fp16 split-K GEMM (both passes), attention and conv as the launcher has them,
    compiled for sm_90 from heavy_module's launches: no spills, tensor cores in each dot."""
    from backends.triton.heavy import REDUCE_OPTIONS
    from backends.triton.render import heavy_module
    from backends.triton.targets import COMPILE_OPTIONS, Launch, compile_launch, load_module
    from compiler.core.gpu import get_profile

    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path))
    h100 = get_profile("h100")
    _, s = _heavy_program(torch.float16)
    compiled = []
    for spec in s.kernels:
        if spec.kind not in ("matmul", "conv2d", "attention"):
            continue
        tile = spec.tile or triton_backend.default_tile(spec)
        source, tensors, _ = heavy_module(spec, tile)
        for kernel, _, args, meta in load_module(source, interpret=False).arguments(*tensors):
            second = kernel.__name__.endswith("_reduce")
            options = (REDUCE_OPTIONS if second else tile.triton_options()) | COMPILE_OPTIONS
            info = compile_launch(Launch(kernel, args, meta), h100, options)
            assert info["spill_bytes"] == 0, kernel.__name__
            assert second or set(info["mma_ops"]) & {"HGMMA", "HMMA"}, kernel.__name__
            compiled.append(kernel.__name__)
    assert len(compiled) == 4 and any(n.endswith("_reduce") for n in compiled)


def test_refuses_tensors_past_int32_indexing() -> None:
    # a stride-0 view: 2^31 elements without the memory; capture and scheduling only
    x = torch.zeros(1).expand(2**31)
    c = compiler.compile(lambda x: x * 2 + 1, (x,), backend="numpy")
    with pytest.raises(TritonUnsupportedError, match=r"kernel k0_fused_mul_add: args_0 .*2\^31"):
        program("triton", c.schedule)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_tanh_keeps_its_relative_accuracy_near_zero(dtype: torch.dtype) -> None:
    """1 - exp(-2|x|) cancels for small |x|: a polynomial there keeps tanh within a few ulps
    of its value, as torch's is, from 1e-8 to 20."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    x = torch.logspace(-8, 1.3, 500, dtype=dtype)
    x = torch.cat([x, -x, torch.tensor([0.0, float("inf"), float("nan")], dtype=dtype)])
    c, prog = _program(fn, (x,))
    (got,) = prog.load()(*c.torch_inputs((x,), {}))
    want = torch.tanh(x.double())
    rel = ((got.double() - want).abs() / want.abs())[: 2 * 500]
    assert float(rel.max()) < (4e-7 if dtype is torch.float32 else 1e-14)
    assert got[-3] == 0 and got[-2] == 1 and torch.isnan(got[-1])
