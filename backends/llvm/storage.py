"""Which element type the llvm backend stores each value in, and so how many bytes it asks the
memory planner for (`Storage.nbytes`).

Note [16-bit storage]
Floats compute in float32 inside native kernels. A value of IR type bf16 or f16 is *stored* in
that type (bf16 as i16 bit patterns: llvmlite has no bfloat type; f16 as LLVM `half`) wherever
only native kernels read and write it: a load widens exactly (bf16: a shift into the high half
of an f32; f16: `vcvtph2ps`), a store rounds to nearest even (NaN stays NaN, overflow gives
inf), so a kernel's 16-bit output is bit for bit its float32 result rounded, in half the bytes.

A value an extern call reads or writes stays float32: MKL's GEMMs, torch's matmul and
attention, and oneDNN take float32 operands here, as do the native attention kernel and every
part of a convolution kernel (the Winograd transforms and their fused epilogue read and write
float32). A value read by both kinds of step is stored once, in float32: torch's 16-bit CPU
GEMMs ran many times slower than its float32 ones where this was decided ([128, 512] x [512,
2048]: 0.93 ms in float32, 12.7 ms in bf16; figures in docs/llvm_backend.md, Measurements).

Graph inputs and outputs keep their own dtype where they are stored narrow: a bf16 model's
bf16 input and bf16 output pass without a conversion; a bf16 bias or norm weight a native
kernel reads is read as it is; a bf16 weight a GEMM reads is converted to float32 once and
cached (`Compiled.torch_inputs`). Float64 programs store every float in float64.

Semantics: the NumPy reference keeps bf16/f16 values unrounded between ops and rounds them at
the IR's casts. A value stored in 16 bits is also rounded where it is stored: one rounding
where eager bf16 rounds after every op, inside the bf16/f16 parity budget. Kernel-by-kernel
bisection (`Compiled.kernel_functions`) runs the program with every float in float32, which
computes exactly the reference's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from compiler.core.dtypes import to_torch
from compiler.core.schedule import ExternCall, Schedule, split_externs
from compiler.core.types import DType, TensorType

NARROW = (DType.bf16, DType.f16)


def storage_dtype(d: DType, float_dtype: str) -> torch.dtype:
    """A value's storage type when it is not stored narrow: floats in the compute type."""
    if d.is_float:
        return torch.float64 if float_dtype == "float64" else torch.float32
    return to_torch(d)


@dataclass(frozen=True)
class Storage:
    """Storage types by value name: `narrow` values in their own 16-bit type, every other
    float in the compute type `float_dtype`, integers and bools as they are."""

    float_dtype: str
    narrow: frozenset[str]

    def dtype(self, name: str, t: TensorType) -> torch.dtype:
        if name in self.narrow:
            return to_torch(t.dtype)
        return storage_dtype(t.dtype, self.float_dtype)

    def nbytes(self, name: str, t: TensorType) -> int:
        return max(t.numel * self.dtype(name, t).itemsize, 1)

    def narrow_in(self, names: list[str]) -> frozenset[str]:
        """The names among `names` stored narrow (a native part's `render_kernel` argument)."""
        return frozenset(n for n in names if n in self.narrow)


def plan_storage(
    s: Schedule, float_dtype: str, externs: Mapping[str, str], sixteen_bit: bool = True
) -> Storage:
    """The storage of every value of `s` (Note [16-bit storage]); `externs` as `split_externs`
    takes them. Without `sixteen_bit`, or in a float64 program, nothing is narrow."""
    if not sixteen_bit or float_dtype != "float32":
        return Storage(float_dtype, frozenset())
    narrow = {v.name for v in s.graph.inputs if v.type.dtype in NARROW}
    wide: set[str] = set()
    for k in s.kernels:
        steps = split_externs(k, externs)
        convolution = any(isinstance(st, ExternCall) and st.node.op == "conv2d" for st in steps)
        for st in steps:
            if isinstance(st, ExternCall):
                wide.update(v.name for v in st.inputs)
                wide.add(st.output)
                continue
            ends = [(v.name, v.type) for v in st.inputs] + [(o, st.type_of(o)) for o in st.outputs]
            if convolution:
                wide.update(name for name, _ in ends)
            else:
                narrow.update(name for name, t in ends if t.dtype in NARROW)
    return Storage(float_dtype, frozenset(narrow - wide))


__all__ = ["Storage", "plan_storage", "storage_dtype"]
