"""The parity rule: a compiled output against eager PyTorch and the float64 reference.

The reference is eager PyTorch in float64 on the same inputs (weights cast to f64, and float32
that the model's own code asks for widened too: `Float64Mode`). A compiled output passes when

    max|out - ref| <= k * max|eager_at_dtype - ref| + rtol_floor * max|ref|

with k = 2 and rtol_floor = 1e-5 (f32), 1e-3 (f16), 8e-3 (bf16): the FlashAttention test rule,
plus a floor for when eager's own error is ~0. Integer and bool outputs must match exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

K = 2.0
RTOL_FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float64: 1e-12}


@dataclass(frozen=True)
class ParityRow:
    output: str
    backend: str
    dtype: str
    max_abs: float
    max_rel: float
    eager_err: float
    budget: float
    ok: bool
    note: str = ""


@dataclass
class ParityReport:
    model: str
    rows: list[ParityRow] = field(default_factory=list)
    compiled: Any = field(default=None, repr=False)  # the Compiled that was checked
    divergences: dict[str, Any] = field(default_factory=dict)  # backend -> first bad kernel

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ok": self.ok,
            "rows": [asdict(r) for r in self.rows],
            "divergences": {b: str(d) for b, d in self.divergences.items()},
        }

    def __str__(self) -> str:
        head = (
            "output",
            "backend",
            "dtype",
            "max abs err",
            "max rel err",
            "eager err",
            "budget",
            "verdict",
        )
        body = [
            (
                r.output,
                r.backend,
                r.dtype,
                f"{r.max_abs:.3e}",
                f"{r.max_rel:.3e}",
                f"{r.eager_err:.3e}",
                f"{r.budget:.3e}",
                ("ok" if r.ok else "FAIL") + (f" ({r.note})" if r.note else ""),
            )
            for r in self.rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [f"parity of {self.model} against eager float64 (k={K:g})", fmt.format(*head)]
        lines += [fmt.format(*row) for row in body]
        for backend, d in self.divergences.items():
            lines.append(f"[{backend}] {d}")
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


def _to_f64(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().to(torch.float64)
    return x


_NARROW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_TO_DOUBLE = {torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16}


def _widen(x: Any) -> Any:
    return torch.float64 if x in _NARROW_FLOATS else x


class Float64Mode(TorchFunctionMode):
    """Runs a model in float64 even where its code names a narrower float.

    Models pin float32 in places (`arange(..., dtype=torch.float32)` in timestep embeddings,
    `.to(torch.float32)` in RMSNorm, `.float()`): without this the "float64" reference would
    round exactly as eager float32 does there, eager's own error would read as zero, and the
    budget would not see it. Under this mode those requests ask for float64 instead.
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _TO_DOUBLE:
            func = torch.Tensor.double
        if "dtype" in kwargs:
            kwargs["dtype"] = _widen(kwargs["dtype"])
        if func is torch.Tensor.to or func is torch.Tensor.type:
            args = tuple(_widen(a) for a in args)
        return func(*args, **kwargs)


def reference_f64(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """Eager PyTorch in float64: weights and float inputs cast up, narrower floats the code
    asks for widened (`Float64Mode`), new float tensors float64 by default."""
    model64 = (
        copy.deepcopy(model).to(torch.float64) if isinstance(model, torch.nn.Module) else model
    )
    args64 = pytree.tree_map(_to_f64, tuple(args))
    kwargs64 = pytree.tree_map(_to_f64, dict(kwargs))
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        with torch.no_grad(), Float64Mode():
            return model64(*args64, **kwargs64)
    finally:
        torch.set_default_dtype(default)


def compare(name: str, backend: str, out: Any, eager: Any, ref: Any) -> ParityRow:
    """One output leaf against the reference, with eager's error setting the budget."""
    if not isinstance(out, torch.Tensor):
        ok = out == eager
        return ParityRow(
            name,
            backend,
            type(out).__name__,
            0.0,
            0.0,
            0.0,
            0.0,
            bool(ok),
            "" if ok else f"got {out!r}, eager {eager!r}",
        )
    dtype = str(eager.dtype).removeprefix("torch.")
    if tuple(out.shape) != tuple(eager.shape) or out.dtype != eager.dtype:
        return ParityRow(
            name,
            backend,
            dtype,
            float("inf"),
            float("inf"),
            0.0,
            0.0,
            False,
            f"got {out.dtype} {list(out.shape)}, eager {eager.dtype} {list(eager.shape)}",
        )
    if not eager.is_floating_point():
        mismatches = int((out != eager).sum())
        return ParityRow(
            name,
            backend,
            dtype,
            float(mismatches),
            0.0,
            0.0,
            0.0,
            mismatches == 0,
            f"{mismatches} elements differ" if mismatches else "exact",
        )
    ref64 = ref.detach().to(torch.float64)
    out64, eager64 = out.detach().to(torch.float64), eager.detach().to(torch.float64)
    # inf and nan must sit where eager has them (same sign); error is measured elsewhere
    finite = torch.isfinite(eager64)
    same_special = bool(
        torch.equal(out64[~finite].nan_to_num(nan=7.0), eager64[~finite].nan_to_num(nan=7.0))
    )
    keep = finite & torch.isfinite(ref64)
    err = (out64 - ref64).abs()[keep]
    eager_err = float((eager64 - ref64).abs()[keep].max()) if keep.any() else 0.0
    scale = float(ref64[keep].abs().max()) if keep.any() else 0.0
    max_abs = float(err.max()) if err.numel() else 0.0
    budget = K * eager_err + RTOL_FLOOR[eager.dtype] * scale
    nan_note = ""
    if torch.isnan(err).any() or not torch.isfinite(out64[keep]).all():
        max_abs, nan_note = float("nan"), "NaN or inf where eager is finite"
    elif not same_special:
        max_abs, nan_note = float("inf"), "inf/NaN positions differ from eager's"
    return ParityRow(
        name,
        backend,
        dtype,
        max_abs,
        max_abs / scale if scale else 0.0,
        eager_err,
        budget,
        max_abs <= budget,
        nan_note,
    )


def output_leaves(tree: Any) -> list[tuple[str, Any]]:
    try:
        flat, _ = pytree.tree_flatten_with_path(tree)
    except ValueError:  # a node type registered without key paths (diffusers' BaseOutput)
        leaves, _ = pytree.tree_flatten(tree)
        names = [f"[{k!r}]" for k in tree] if isinstance(tree, Mapping) else []
        if len(names) != len(leaves):
            names = [f"output[{i}]" for i in range(len(leaves))]
        return list(zip(names, leaves, strict=True))
    return [(pytree.keystr(path) or "output", leaf) for path, leaf in flat]
