"""3x3 convolutions as Winograd F(2x2, 3x3): 2.25x fewer multiplications than direct.

    Y = A^T [ (G g G^T) . (B^T d B) ] A      per 4x4 input tile d, 2x2 output tile Y

The weight transform `U = G g G^T` ([16, OC, C]) is computed once per weight version in
float64 (`PackedWeights.winograd`). Per call, a native kernel writes the 16 transformed input
planes `V[k] = (B^T d B)[k]` ([C, tiles]), MKL multiplies `M[k] = U[k] @ V[k]` as one batched
GEMM, and a second native kernel (`backends.llvm_winograd_out`) applies `A^T M A` and writes
the 2x2 outputs into the NCHW result with the bias and the convolution's epilogue when that is
adds (a time embedding, a residual). The input transform is a small IR graph rendered by the
ordinary kernel generator, so the tiles' overlap is index arithmetic. Error against float64:
~3x direct convolution's in float32, far inside the parity budget.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from backends import llvm_winograd_out
from backends.llvm_kernel import KernelModule, render_kernel
from compiler.ir import DType, GraphBuilder, TensorType, Value
from compiler.schedule import ExternCall, KernelSpec, Step

G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def eligible(x: TensorType, w: TensorType, attrs: dict, weight: bool) -> bool:
    """Stride 1, dilation 1, 3x3, no groups, float32, enough channels and tiles to pay off."""
    return (
        weight
        and x.dtype is DType.f32
        and w.shape[2:] == (3, 3)
        and tuple(attrs["stride"]) == (1, 1)
        and tuple(attrs["dilation"]) == (1, 1)
        and attrs["groups"] == 1
        and min(x.shape[1], w.shape[0]) >= 32
        and x.shape[2] * x.shape[3] >= 64
    )


def tiles(x: TensorType, padding: tuple[int, int]) -> tuple[int, int, int, int]:
    """(Ho, Wo, tiles down, tiles across)."""
    ho, wo = x.shape[2] + 2 * padding[0] - 2, x.shape[3] + 2 * padding[1] - 2
    return ho, wo, -(-ho // 2), -(-wo // 2)


def weight_transform(w: torch.Tensor) -> torch.Tensor:
    """U = G w G^T as [16, OC, C] float32 (computed in float64)."""
    g = torch.tensor(G, dtype=torch.float64)
    u = torch.einsum("ik,ockl,jl->ijoc", g, w.detach().to(torch.float64), g)
    return u.reshape(16, w.shape[0], w.shape[1]).to(torch.float32).contiguous()


def _combine(b: GraphBuilder, z: list[str], row: int) -> str:
    """Row `row` of B^T applied to the 4 values z."""
    if row == 0:
        return b.add("sub", [z[0], z[2]])
    if row == 1:
        return b.add("add", [z[1], z[2]])
    if row == 2:
        return b.add("sub", [z[2], z[1]])
    return b.add("sub", [z[1], z[3]])


def pads(x: TensorType, padding: tuple[int, int]) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) making the input exactly (2 th + 2) x (2 tw + 2)."""
    _, _, th, tw = tiles(x, padding)
    ph, pw = padding
    return (pw, 2 * tw + 2 - x.shape[3] - pw, ph, 2 * th + 2 - x.shape[2] - ph)


def input_transform(x: TensorType, padding: tuple[int, int], name: str) -> KernelSpec:
    """The padded input xp [N, C, 2 th + 2, 2 tw + 2] -> 16 outputs v0..v15, each
    [C, N, th, tw] (the GEMM reads them as [C, N * th * tw]: the same memory). Padding first
    (in torch) keeps every load affine, so the stride-2 tile loads vectorize as shuffles."""
    n, c, _, _ = x.shape
    _, _, th, tw = tiles(x, padding)
    padded = TensorType((n, c, 2 * th + 2, 2 * tw + 2), x.dtype)
    b = GraphBuilder(name, [Value("xp", padded)], prefix="w")
    xp = "xp"
    d = [
        [
            b.add(
                "slice",
                [b.add("slice", [xp], {"dim": 2, "start": i, "end": i + 2 * th - 1, "step": 2})],
                {"dim": 3, "start": j, "end": j + 2 * tw - 1, "step": 2},
            )
            for j in range(4)
        ]
        for i in range(4)
    ]
    t = [[_combine(b, [d[a][j] for a in range(4)], xi) for j in range(4)] for xi in range(4)]
    outs = []
    for xi in range(4):
        for nu in range(4):
            v = _combine(b, t[xi], nu)
            outs.append(b.add("permute", [v], {"dims": (1, 0, 2, 3)}, name=f"v{len(outs)}"))
    g = b.build(outs)
    return KernelSpec(name, "pointwise", g.inputs, g.nodes, tuple(outs), (c, n, th, tw))


def driver_call(
    e: ExternCall,
    ops: list[str],
    names: dict[str, str],
    after: tuple[tuple[str, ...], list[Step]],
    weights: frozenset[str],
    slot: Callable[[str, TensorType], str],
) -> tuple[list[str], list[KernelModule], Step | None] | None:
    """The llvm driver's lines for the convolution `e` as Winograd F(2x2, 3x3), the native
    modules they call and the native part after `e` they compute (its epilogue of adds), or
    None when `e` is not eligible. `ops`: the operands' torch expressions; `names`: values to
    driver names (updated); `after`: the kernel's outputs and the steps after `e`; `slot`
    gives a value slot memory."""
    n = e.node
    types = {v.name: v.type for v in e.inputs} | {v.out.name: v.out.type for v in e.views}
    x, w = types[n.inputs[0]], types[n.inputs[1]]
    if not eligible(x, w, n.attr_dict, n.inputs[1] in weights):
        return None
    padding = tuple(n.attr("padding"))
    oc, c = w.shape[0], w.shape[1]
    ho, wo, th, tw = tiles(x, padding)
    count = x.shape[0] * th * tw
    v = slot(f"{n.out.name}_v", TensorType((16, c, count), DType.f32))
    m = slot(f"{n.out.name}_m", TensorType((16, oc, count), DType.f32))
    outputs, rest = after
    fused = llvm_winograd_out.epilogue(e, rest[0] if rest else None, rest[1:], outputs)
    out, addends = fused if fused is not None else (n.out.name, [])
    if out not in names:  # handed to a later part: a slot
        names[out] = slot(out, n.out.type)
    fin = render_kernel(input_transform(x, padding, f"{e.name}_in"))
    bias = ops[2:3]
    fout = llvm_winograd_out.render(
        x.shape[0], oc, (ho, wo), bool(bias), addends, (out, n.out.type), e.name
    )
    args = [m, *bias] + [names[p.name] for p in fout.params[len(bias) + 1 :]]
    epilogue = f" + {len(addends)} addends" if addends else ""
    lines = [
        f"    {fin.symbol}(NTHREADS, F.pad({ops[0]}, {pads(x, padding)}), *{v}.unbind(0))"
        f"  # extern {e.name}: Winograd F(2x2,3x3), the GEMM in MKL",
        f"    torch.bmm(W.winograd({ops[1]}), {v}, out={m})",
        f"    {fout.symbol}(NTHREADS, {', '.join(args)})  # native output transform{epilogue}",
    ]
    return lines, [fin, fout], rest[0] if fused is not None else None
