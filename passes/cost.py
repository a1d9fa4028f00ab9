"""kernel_cost: what a kernel costs (FLOPs, bytes read, bytes written), for tiling and explain.

Each kernel reads each of its inputs once and writes each output once (what tiling can reach
at best); an embedding table is read once per gathered row, not whole.
"""

from __future__ import annotations

from compiler.core.ir import Node
from compiler.core.schedule import SOURCE_OPS, VIEW_OPS, KernelSpec
from compiler.core.types import DType

FLOPS_PER_ELEMENT = {
    "exp": 4, "log": 4, "tanh": 6, "sigmoid": 5, "erf": 6, "sqrt": 2, "rsqrt": 2, "pow": 4,
    "sin": 4, "cos": 4, "gelu": 10, "silu": 6, "softmax": 6, "log_softmax": 7,
    "layer_norm": 8, "rms_norm": 6, "group_norm": 8, "geglu": 12, "rope": 6,
    "embedding": 0, "gather": 0, "cast": 0, "cat": 0, "pad": 0, "where": 1,
}  # fmt: skip


GATHER_OPS = frozenset({"embedding", "gather"})


def node_flops(n: Node, type_of: dict[str, object]) -> float:
    """FLOPs of one body node: 2MNK matmul, 2*N*Cout*Ho*Wo*Cin/g*kh*kw conv, 4BHLSD attention
    (halved when causal), else a few per output element."""
    out = n.out.type
    if n.op == "matmul":
        return 2.0 * out.numel * type_of[n.inputs[0]].shape[-1]
    if n.op == "conv2d":
        _, cin_g, kh, kw = type_of[n.inputs[1]].shape
        return 2.0 * out.numel * cin_g * kh * kw
    if n.op == "sdpa":
        q, k = type_of[n.inputs[0]], type_of[n.inputs[1]]
        L, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
        flops = 4.0 * (out.numel // out.shape[-1]) * S * D
        return flops * causal_fraction(L, S) if n.attr("is_causal") else flops
    if n.op in VIEW_OPS or n.op in SOURCE_OPS:
        return 0.0
    return float(out.numel * FLOPS_PER_ELEMENT.get(n.op, 1))


def causal_fraction(L: int, S: int, block_m: int = 1) -> float:
    """Fraction of the L x S score matrix a causal kernel computes (diagonal tiles whole)."""
    if L <= 0 or S <= 0:
        return 1.0
    return min(1.0, 0.5 * (1 + block_m / L) * min(L, S) / S + max(0, S - L) / S)


def kernel_cost(spec: KernelSpec) -> tuple[float, int, int]:
    """(flops, bytes_read, bytes_written): every input read once, every output written once."""
    types = {v.name: v.type for v in spec.inputs} | {n.out.name: n.out.type for n in spec.body}
    flops = sum(node_flops(n, types) for n in spec.body)
    read = sum(gathered_bytes(v.name, v.type.nbytes, spec.body) for v in spec.inputs)
    written = sum(types[o].nbytes for o in spec.outputs)
    return flops, read, written


def gathered_bytes(name: str, nbytes: int, users: tuple[Node, ...]) -> int:
    """Bytes read of `name`: a table only gathered from (embedding, gather) is read at most
    once per gathered row; anything else is read whole."""
    uses = [n for n in users if name in n.inputs]
    if uses and all(n.op in GATHER_OPS and n.inputs[0] == name for n in uses):
        return min(nbytes, sum(n.out.type.nbytes for n in uses))
    return nbytes


def math_class(dtype: DType) -> str:
    """The peak a dot on this dtype runs at: tensor cores for f16/bf16; fp32 models keep
    input_precision="ieee" (fp32 parity on NVIDIA), so they run on the FP32 FMA pipes."""
    return "bf16" if dtype in (DType.f16, DType.bf16) else "fp32"
