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
  (Note [Index checks] in backends/index_maps.py): against "our kernel", what the check costs.

    python benchmarks/host_overhead.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import compiler


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
    for name, us in figures.items():
        print(f"{name:28s} {us:6.2f} us")
    return figures


if __name__ == "__main__":
    main()
