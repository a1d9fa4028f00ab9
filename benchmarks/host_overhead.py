"""Host overhead per kernel of the llvm backend against eager PyTorch's per-op overhead.

On a 16-element tensor nothing but overhead is left:
- eager op: `torch.add(x, 1.0)` (dispatch, allocation);
- our kernel: one native kernel called through its generated kernel function (argument
  pointers, ctypes call) on preallocated tensors, as the program function calls it;
- our whole call: `compiled(x)` for `x + 1` (the module guard, input checks, conversions,
  output allocation), and the guard's check alone (Note [Guarding the module] in
  compiler/guard.py);
- our checked gather: the kernel function of `embedding(ids, table) + 1` on 4 ids of a 16-row
  table, whose kernel first checks the ids' range and whose driver then reads the check's word
  (Note [Index checks] in backends/index_maps.py): against "our kernel", what the check costs;
- a whole call per kernel, ours against Inductor's (torch.compile, default): a stack of
  `--layers` pre-norm MLP blocks (LayerNorm, Linear, GELU, Linear, residual) on a [1, 4, 16]
  input, where the arithmetic is negligible and a call is nearly all host cost, divided by
  each one's kernels (ours: the schedule's; Inductor's: the C++ kernels and extern GEMM calls
  in its generated `call`).

    python benchmarks/host_overhead.py [--calls 20000] [--layers 8]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import compiler


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


def inductor_launches(code: str) -> int:
    """The kernel launches in Inductor's generated `call`: C++ kernels and extern calls."""
    body = code[code.index("def call(") :] if "def call(" in code else code
    return len(
        re.findall(r"^\s+(?:cpp_fused_\w+|extern_kernels\.\w+|torch\.ops\.\w+\.\w+)\(", body, re.M)
    )


def per_kernel_us(layers: int, calls: int) -> dict[str, float]:
    """A whole call of `layers` small blocks, ours and Inductor's, per kernel."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    model = nn.Sequential(*[Block(16) for _ in range(layers)]).eval()
    x = torch.randn(1, 4, 16)
    ours = compiler.compile(model, (x,), backend="llvm")
    with torch.inference_mode():
        inductor = torch.compile(model)
        _, codes = run_and_get_code(inductor, x)
        launches = sum(inductor_launches(c) for c in codes)
        ours_us = per_call_us(lambda: ours(x), calls // 10)
        ind_us = per_call_us(lambda: inductor(x), calls // 10)
        eager_us = per_call_us(lambda: model(x), calls // 10)
    kernels = len(ours.schedule.kernels)
    return {
        f"eager, {layers} blocks (whole call)": eager_us,
        f"ours, {layers} blocks (whole call)": ours_us,
        f"Inductor, {layers} blocks (whole call)": ind_us,
        f"ours per kernel ({kernels} kernels)": ours_us / kernels,
        f"Inductor per launch ({launches} launches)": ind_us / max(launches, 1),
    }


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Median over 5 repeats of the mean time per call in a tight loop, microseconds."""
    for _ in range(100):
        fn()
    means = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(means)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args(argv)
    x = torch.randn(16)
    c = compiler.compile(lambda x: x + 1.0, (x,), backend="llvm")
    namespace = c._program("llvm").load_namespace()
    (k,) = c.schedule.kernels
    out = torch.empty(16)
    kernel = namespace[k.name]
    table, ids = torch.randn(16, 4), torch.tensor([1, 2, 3, 4])
    e = compiler.compile(lambda t, i: F.embedding(i, t) + 1.0, (table, ids), backend="llvm")
    (g,) = e.schedule.kernels
    gather = e._program("llvm").load_namespace()[g.name]
    gathered = torch.empty(4, 4)
    figures = {
        "eager op (torch.add)": per_call_us(lambda: torch.add(x, 1.0), args.calls),
        "our kernel (native call)": per_call_us(lambda: kernel(x, out), args.calls),
        "our whole compiled call": per_call_us(lambda: c(x), args.calls),
        "  of it, the module guard": per_call_us(c.guard.check, args.calls),
        "our checked gather": per_call_us(lambda: gather(table, ids, gathered), args.calls),
    }
    figures |= per_kernel_us(args.layers, args.calls)
    for name, us in figures.items():
        print(f"{name:40s} {us:8.2f} us")
    return figures


if __name__ == "__main__":
    main()
