"""torch dtype <-> IR DType."""

from __future__ import annotations

import torch

from compiler.core.errors import OpTypeError
from compiler.core.types import DType

TORCH_TO_DTYPE = {
    torch.float64: DType.f64,
    torch.float32: DType.f32,
    torch.float16: DType.f16,
    torch.bfloat16: DType.bf16,
    torch.int64: DType.i64,
    torch.int32: DType.i32,
    torch.bool: DType.bool,
}
DTYPE_TO_TORCH = {v: k for k, v in TORCH_TO_DTYPE.items()}


def to_dtype(dtype: torch.dtype) -> DType:
    try:
        return TORCH_TO_DTYPE[dtype]
    except KeyError:
        supported = ", ".join(str(d).removeprefix("torch.") for d in TORCH_TO_DTYPE)
        raise OpTypeError(f"dtype {dtype} is not supported (supported: {supported})") from None


def to_torch(dtype: DType) -> torch.dtype:
    return DTYPE_TO_TORCH[dtype]
