"""What target verification reports: one `TargetResult` per kernel (or split-K pass) and
target, gathered in a `TargetReport` that prints as a table per GPU and has `.to_dict()`.

    print(report)   # per GPU: a summary line, then one row per kernel (split-K passes apart)
    gpt2 on h100 (cuda:90/32): 31 kernels, max 168 regs, 0 B spilled, max smem 96/227 KB, ...
    kernel               kind      config            regs spill smem KB blk/SM occ  tensor cores
    k1_fused_matmul_add  matmul    128x128x64 s3 w4   168     0  96/227      2 0.12 HGMMA:16

A result is ok when nothing spills, shared memory fits the profile's per-block limit, a
16-bit matmul/conv2d/attention kernel runs on tensor cores (its SASS/AMDGCN has the target's
MMA opcodes) and an fp32 one has no TF32 instruction (fp32 models compile with IEEE dots).
`Progress` logs how far a long verification is, under the `tilefuse.targets` logger.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tilefuse.targets")


@dataclass(frozen=True)
class TargetResult:
    """One compiled kernel (or split-K pass) on one profile's target.

    `tensor_cores` is None for a launch without a dot (pointwise, reductions, the split-K
    second pass), else whether its binary has tensor-core opcodes (`mma_ops`). `tf32_ops`
    counts TF32 MMA instructions (an fp32 kernel must have none). `retiled` lists the configs
    that went back to tiling and why; `error` says why a kernel could not be compiled."""

    kernel: str
    kind: str
    gpu: str
    target: str
    config: str
    dtype: str
    regs: int
    spill_bytes: int
    smem_bytes: int
    smem_limit: int
    blocks_per_sm: int
    occupancy: float  # resident warps (waves) / the SM's (CU's) maximum
    limiter: str
    tensor_cores: bool | None
    mma_ops: dict[str, int] = field(default_factory=dict)
    tf32_ops: int = 0
    retiled: str = ""
    note: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        if self.error or self.spill_bytes or self.smem_bytes > self.smem_limit:
            return False
        if self.tf32_ops:
            return False
        return self.tensor_cores is not False or self.dtype in ("fp32", "fp64")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"ok": self.ok}


HEAD = (
    f"{'kernel':34} {'kind':9} {'config':26} {'regs':>4} {'spill':>5} {'smem KB':>9} "
    f"{'blk/SM':>6} {'occ':>5}  {'tensor cores':14} ok"
)


@dataclass(frozen=True)
class TargetReport:
    """Every kernel of a model compiled for every target asked for."""

    results: tuple[TargetResult, ...]
    model: str = ""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> tuple[TargetResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    def gpus(self) -> list[str]:
        return list(dict.fromkeys(r.gpu for r in self.results))

    def summary(self, gpu: str) -> dict[str, Any]:
        """The figures of one GPU: kernels, launches, max registers, spilled bytes, max smem,
        lowest occupancy, dot kernels and those on tensor cores, retiled kernels, ok."""
        rs = [r for r in self.results if r.gpu == gpu]
        dots = [r for r in rs if r.tensor_cores is not None]
        return {
            "kernels": len({r.kernel.split(".")[0] for r in rs}),
            "launches": len(rs),
            "max_regs": max((r.regs for r in rs), default=0),
            "spill_bytes": sum(r.spill_bytes for r in rs),
            "max_smem_bytes": max((r.smem_bytes for r in rs), default=0),
            "smem_limit": rs[0].smem_limit if rs else 0,
            "min_occupancy": min((r.occupancy for r in rs if not r.error), default=0.0),
            "dot_kernels": len(dots),
            "tensor_core_kernels": sum(bool(r.tensor_cores) for r in dots),
            "retiled": sum(bool(r.retiled) for r in rs),
            "errors": sum(bool(r.error) for r in rs),
            "ok": all(r.ok for r in rs),
        }

    def to_dict(self) -> dict[str, Any]:
        """`kernels`: one entry per kernel (split-K passes apart) and target; `per_gpu`: the
        summary of each GPU."""
        return {
            "model": self.model,
            "ok": self.ok,
            "kernels": [r.to_dict() for r in self.results],
            "per_gpu": {g: self.summary(g) for g in self.gpus()},
        }

    def __str__(self) -> str:
        parts = []
        for gpu in self.gpus():
            rs = [r for r in self.results if r.gpu == gpu]
            s = self.summary(gpu)
            name = f"{self.model} on " if self.model else ""
            head = (
                f"{name}{gpu} ({rs[0].target}): {s['kernels']} kernels, max {s['max_regs']} "
                f"regs, {s['spill_bytes']} B spilled, max smem {s['max_smem_bytes'] / 1024:.0f}"
                f"/{s['smem_limit'] // 1024} KB, {s['tensor_core_kernels']}/{s['dot_kernels']} "
                f"dot kernels on tensor cores, {s['retiled']} retiled: "
                + ("ok" if s["ok"] else f"{sum(not r.ok for r in rs)} NOT ok")
            )
            parts.append("\n".join([head, HEAD, *(_row(r) for r in rs)]))
        return "\n\n".join(parts) if parts else "no kernels verified"


def _row(r: TargetResult) -> str:
    if r.error:
        return f"{r.kernel[:34]:34} {r.kind:9} {r.config[:26]:26} ERROR {r.error}"
    if r.tensor_cores is None:
        tc = "-"
    else:
        tc = ",".join(f"{k}:{v}" for k, v in r.mma_ops.items()) or "none"
        tc += f" TF32:{r.tf32_ops}" if r.tf32_ops else ""
    smem = f"{r.smem_bytes / 1024:.0f}/{r.smem_limit // 1024}"
    lines = [
        f"{r.kernel[:34]:34} {r.kind:9} {r.config[:26]:26} {r.regs:>4} {r.spill_bytes:>5} "
        f"{smem:>9} {r.blocks_per_sm:>6} {r.occupancy:>5.2f}  {tc[:14]:14} "
        f"{'yes' if r.ok else 'NO'}"
    ]
    lines += [f"    retiled: {r.retiled}"] if r.retiled else []
    lines += [f"    note: {r.note}"] if r.note else []
    return "\n".join(lines)


class Progress:
    """Progress of a verification run: a line every `every` kernels or `seconds` (and at the
    end) on the `tilefuse.targets` logger at INFO, and on stderr when `echo`."""

    def __init__(
        self, total: int, what: str, *, echo: bool, every: int = 25, seconds: float = 20.0
    ) -> None:
        self.total, self.what, self.echo = total, what, echo
        self.every, self.seconds = every, seconds
        self.done = self.compiled = self.cached = 0
        self.start = self.last = time.perf_counter()

    def count(self, cached: bool) -> None:
        """One target compile finished (`cached`: read from the disk cache)."""
        self.cached += cached
        self.compiled += not cached

    def step(self) -> None:
        """One kernel verified on one target."""
        self.done += 1
        now = time.perf_counter()
        if self.done == self.total or self.done % self.every == 0 or now - self.last > self.seconds:
            self.last = now
            self.emit(now)

    def emit(self, now: float) -> None:
        took = now - self.start
        line = (
            f"verifying {self.what}: {self.done}/{self.total} kernels, {self.compiled} "
            f"compiled, {self.cached} from the cache, {took:.0f} s"
        )
        if 0 < self.done < self.total and self.compiled:
            line += f" (about {took / self.done * (self.total - self.done):.0f} s left)"
        log.info("%s", line)
        if self.echo:
            print(f"[tilefuse] {line}", file=sys.stderr, flush=True)
