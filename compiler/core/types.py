"""Element and tensor types of the IR: `DType` and `TensorType`.

They sit below the op table and the graph: an op's type rule maps input `TensorType`s to an
output `TensorType`, and a graph value carries one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """Element types of IR tensors. The value is the short name used when printing."""

    f64 = "f64"
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    i64 = "i64"
    i32 = "i32"
    bool = "bool"

    @property
    def is_float(self) -> bool:
        return self in (DType.f64, DType.f32, DType.f16, DType.bf16)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def max_finite(self) -> float:
        """The largest finite value of a float type (`torch.finfo(dtype).max`)."""
        return _MAX_FINITE[self]

    def __repr__(self) -> str:
        return f"DType.{self.value}"


_ITEMSIZE = {
    DType.f64: 8,
    DType.f32: 4,
    DType.f16: 2,
    DType.bf16: 2,
    DType.i64: 8,
    DType.i32: 4,
    DType.bool: 1,
}

_MAX_FINITE = {
    DType.f64: 1.7976931348623157e308,
    DType.f32: 3.4028234663852886e38,
    DType.f16: 65504.0,
    DType.bf16: 3.3895313892515355e38,
}


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def __str__(self) -> str:
        # 0-d prints as f32[()] so the printed graph stays valid Python
        dims = ",".join(map(str, self.shape)) if self.shape else "()"
        return f"{self.dtype.value}[{dims}]"
