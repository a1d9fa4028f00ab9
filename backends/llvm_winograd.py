"""3x3 convolutions as Winograd F(2x2, 3x3): 2.25x fewer multiplications than direct.

    Y = A^T [ (G g G^T) . (B^T d B) ] A      per 4x4 input tile d, 2x2 output tile Y

The weight transform `U = G g G^T` ([16, OC, C]) is computed once per weight version in
float64 (`PackedWeights.winograd`). Per call, a native kernel writes the 16 transformed input
planes `V[k] = (B^T d B)[k]` ([C, tiles]), MKL multiplies `M[k] = U[k] @ V[k]` as one batched
GEMM, and a second native kernel applies `A^T M A`, interleaves the 2x2 outputs, crops and adds
the bias. Both transforms are small IR graphs rendered by the ordinary kernel generator, so the
padding and the tiles' overlap are index arithmetic. Error against float64: ~3x direct
convolution's in float32, far inside the parity budget.
"""

from __future__ import annotations

import torch

from compiler.ir import DType, GraphBuilder, TensorType, Value
from compiler.schedule import KernelSpec

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


def output_transform(
    x: TensorType, oc: int, padding: tuple[int, int], bias: bool, name: str
) -> KernelSpec:
    """m0..m15 [OC, N, th, tw] (+ bias [OC]) -> the four output planes y00, y01, y10, y11,
    each [N, OC, th, tw]: y[.., 2i + a, 2j + b] = y_ab[.., i, j] (the driver interleaves)."""
    n = x.shape[0]
    _, _, th, tw = tiles(x, padding)
    inputs = [Value(f"m{k}", TensorType((oc, n, th, tw), DType.f32)) for k in range(16)]
    if bias:
        inputs.append(Value("bias", TensorType((oc,), DType.f32)))
    b = GraphBuilder(name, inputs, prefix="w")
    m = [
        [b.add("permute", [f"m{4 * xi + nu}"], {"dims": (1, 0, 2, 3)}) for nu in range(4)]
        for xi in range(4)
    ]

    def at(z: list[str], row: int) -> str:  # row `row` of A^T applied to z
        if row == 0:
            return b.add("add", [b.add("add", [z[0], z[1]]), z[2]])
        return b.add("sub", [b.add("sub", [z[1], z[2]]), z[3]])

    s = [[at([m[xi][nu] for xi in range(4)], a) for nu in range(4)] for a in range(2)]
    y = [[at(s[a], bb) for bb in range(2)] for a in range(2)]
    planes = []
    for a in range(2):
        for bb in range(2):
            plane = y[a][bb]
            if bias:
                plane = b.add("add", [plane, b.add("reshape", ["bias"], {"shape": (oc, 1, 1)})])
            planes.append(b.add("reshape", [plane], {"shape": (n, oc, th, tw)}, name=f"y{a}{bb}"))
    g = b.build(planes)
    return KernelSpec(name, "pointwise", g.inputs, g.nodes, tuple(planes), (n, oc, th, tw))
