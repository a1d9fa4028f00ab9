"""explain: the plan of a compiled model priced on one or more GPU profiles.

For every kernel: kind, fused ops, bytes read and written, FLOPs, the tile config `tile()`
chose, the estimated time and whether it is memory- or compute-bound. Totals set the plan's
HBM traffic against three references:

    eager_bytes        every ATen op of the captured graph as one kernel: reads its inputs,
                       writes its output (views and sources are free)
    lower_bound_bytes  each kernel of the plan reads each input once and writes each output
                       once: the best tiling can reach; `bytes` / this shows tile re-reads
    model_min_bytes    graph inputs (weights included) read once, outputs written once: what
                       only a whole-model megakernel could reach

`bytes` is the DRAM traffic the cost model predicts for the chosen tiles (operand re-reads a
wave's L2 cannot catch, second passes of looped reductions, split-K partials).

With several GPUs the report ranks them by estimated time and by energy at TDP (an upper
bound: time x TDP) and says whether weights + peak activations fit in each one's memory.
With `targets` (a TargetReport from `Compiled.verify_targets`, `tilefuse explain --targets`)
the per-kernel registers, spills, shared memory, occupancy and tensor-core table of every
kernel compiled for each GPU's target follows the plan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.core.gpu import GB, PROFILES, GpuProfile, GpuSpec, resolve_profiles
from compiler.core.ir import Graph
from compiler.core.schedule import SOURCE_OPS, VIEW_OPS, KernelSpec, Schedule
from passes.cost import GATHER_OPS, kernel_cost, math_class
from passes.memory import plan_memory, stored_in
from passes.tiling import gemm_problem, tile_kernels

FREE_OPS = VIEW_OPS | SOURCE_OPS


@dataclass(frozen=True)
class KernelRow:
    """One kernel of the plan on one GPU."""

    name: str
    kind: str
    ops: tuple[str, ...]
    bytes_read: int
    bytes_written: int
    dram_bytes: float
    flops: float
    tile: str
    est_time_s: float
    bound: str
    reason: str
    blocks: tuple[tuple[str, int], ...] = ()
    math: str = "fp32"  # the peak it runs against: "bf16" (tensor cores) or "fp32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "ops": list(self.ops),
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "dram_bytes": self.dram_bytes,
            "flops": self.flops,
            "tile": self.tile,
            "blocks": dict(self.blocks),
            "est_time_s": self.est_time_s,
            "bound": self.bound,
            "math": self.math,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GpuPlan:
    """The schedule tiled and priced for one profile."""

    profile: GpuProfile
    rows: tuple[KernelRow, ...]
    memory_needed: int

    @property
    def est_time_s(self) -> float:
        return sum(r.est_time_s for r in self.rows)

    @property
    def bytes(self) -> float:
        return sum(r.dram_bytes for r in self.rows)

    @property
    def energy_j(self) -> float:
        return self.est_time_s * self.profile.tdp_w

    @property
    def fits(self) -> bool:
        return self.memory_needed <= self.profile.hbm_bytes


@dataclass(frozen=True)
class ExplainReport:
    """What `Compiled.explain()` returns: print it for tables, `.to_dict()` for the figures."""

    model: str
    plans: tuple[GpuPlan, ...]
    eager_bytes: int
    lower_bound_bytes: int
    model_min_bytes: int
    flops: float
    advice: tuple[str, ...] = ()
    targets: Any = None  # a TargetReport when target verification ran (`explain --targets`)

    def totals(self, plan: GpuPlan) -> dict[str, Any]:
        return {
            "bytes": plan.bytes,
            "eager_bytes": self.eager_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "model_min_bytes": self.model_min_bytes,
            "flops": self.flops,
            "est_time_s": plan.est_time_s,
            "energy_j": plan.energy_j,
            "memory_needed": plan.memory_needed,
            "fits": plan.fits,
            "kernels": len(plan.rows),
        }

    def to_dict(self) -> dict[str, Any]:
        """Per-kernel rows and totals of the first GPU at the top level, every GPU under
        `per_gpu`, and rankings by time and energy."""
        first = self.plans[0]
        return {
            "model": self.model,
            "gpu": first.profile.name,
            "kernels": [r.to_dict() for r in first.rows],
            "totals": self.totals(first),
            "per_gpu": {
                p.profile.name: {"kernels": [r.to_dict() for r in p.rows], "totals": self.totals(p)}
                for p in self.plans
            },
            "ranking": {
                "time": [p.profile.name for p in sorted(self.plans, key=lambda p: p.est_time_s)],
                "energy": [p.profile.name for p in sorted(self.plans, key=lambda p: p.energy_j)],
            },
            "advice": list(self.advice),
        } | ({"targets": self.targets.to_dict()} if self.targets is not None else {})

    def plot(self, path: str | Path) -> Path:
        """Draw the roofline of every GPU (memory slope, compute ceilings) with each kernel
        at its arithmetic intensity and estimated FLOP/s, as a PNG at `path` (needs
        matplotlib: the `dev` extra)."""
        return plot_roofline(self, Path(path))

    def __str__(self) -> str:
        parts = [self._table(p) for p in self.plans]
        if len(self.plans) > 1:
            parts.append(self._ranking())
        if self.advice:
            parts.append("advice:\n" + "\n".join(f"  {a}" for a in self.advice))
        if self.targets is not None:
            parts.append("target verification (Triton compiled for each GPU's target):")
            parts.append(str(self.targets))
        return "\n\n".join(parts) + "\n"

    def _table(self, plan: GpuPlan) -> str:
        p = plan.profile
        head = (
            f"{self.model} on {p.name} ({p.full_name}, {p.hbm_bw / 1e12:g} TB/s, "
            f"bf16 {p.bf16_flops / 1e12:g} TFLOP/s): {len(plan.rows)} kernels"
        )
        cols = (
            f"{'kernel':34} {'kind':9} {'read':>9} {'written':>9} {'dram':>9} {'FLOPs':>9} "
            f"{'tile':32} {'est':>9}  bound"
        )
        lines = [head, cols]
        for r in plan.rows:
            lines.append(
                f"{r.name[:34]:34} {r.kind:9} {_b(r.bytes_read):>9} {_b(r.bytes_written):>9} "
                f"{_b(r.dram_bytes):>9} {_f(r.flops):>9} {r.tile[:32]:32} "
                f"{_t(r.est_time_s):>9}  {r.bound}"
            )
            lines.append(f"{'':4}ops: {', '.join(r.ops)}")
        t = self.totals(plan)
        lines.append(
            f"total: {_b(t['bytes'])} moved ({t['bytes'] / max(1, t['eager_bytes']):.2f}x eager "
            f"{_b(t['eager_bytes'])}, {t['bytes'] / max(1, t['lower_bound_bytes']):.2f}x lower "
            f"bound {_b(t['lower_bound_bytes'])}, model minimum {_b(t['model_min_bytes'])}), "
            f"{_f(t['flops'])}FLOP, est. {_t(t['est_time_s'])}, {t['energy_j']:.3g} J at TDP; "
            f"needs {_b(plan.memory_needed)} of {p.hbm_bytes / GB:g} GB "
            f"({'fits' if plan.fits else 'does NOT fit'})"
        )
        return "\n".join(lines)

    def _ranking(self) -> str:
        lines = ["ranking (estimated time; energy at TDP; memory):"]
        by_time = sorted(self.plans, key=lambda p: p.est_time_s)
        best_e = min(p.energy_j for p in self.plans)
        for i, p in enumerate(by_time, 1):
            lines.append(
                f"  {i}. {p.profile.name:8} {_t(p.est_time_s):>9}  {p.energy_j:.3g} J "
                f"({p.energy_j / best_e:.2f}x best)  {'fits' if p.fits else 'does NOT fit'}"
            )
        return "\n".join(lines)


def _b(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _f(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} "


def _t(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def eager_bytes(g: Graph) -> int:
    """Op-by-op traffic of `g`: every compute node reads its inputs and writes its output;
    views and sources move nothing, and reading through a view reads at most its base."""
    producers = g.producers()

    def base_bytes(name: str) -> int:
        size = g.type_of(name).nbytes
        n = producers.get(name)
        while n is not None and n.op in VIEW_OPS and n.inputs:
            size = min(size, g.type_of(n.inputs[0]).nbytes)
            n = producers.get(n.inputs[0])
        return size

    total = 0
    for n in g.nodes:
        if n.op in FREE_OPS:
            continue
        reads = [base_bytes(i) for i in n.inputs]
        if n.op in GATHER_OPS:  # the table is read once per gathered row, at most whole
            reads[0] = min(reads[0], n.out.type.nbytes)
        total += sum(reads) + n.out.type.nbytes
    return total


def lower_bound_bytes(s: Schedule) -> int:
    """Each kernel reads each input once and writes each output once."""
    return sum(r + w for _, r, w in map(kernel_cost, s.kernels))


def model_min_bytes(g: Graph) -> int:
    """Graph inputs (weights included) read once, graph outputs written once."""
    return sum(v.type.nbytes for v in g.inputs) + sum(g.type_of(o).nbytes for o in g.outputs)


def kernel_math(k: KernelSpec) -> str:
    """The peak a kernel's FLOPs run at: tensor cores for a 16-bit GEMM/conv/attention,
    the FP32 pipes otherwise."""
    if k.kind in ("matmul", "conv2d", "attention"):
        anchor = next(n for n in k.body if n.op in ("matmul", "conv2d", "sdpa"))
        return math_class(k.type_of(anchor.inputs[0]).dtype)
    return "fp32"


def plan_for(s: Schedule, profile: GpuProfile, memory_needed: int) -> GpuPlan:
    """Price every kernel of `s` on `profile`, tiling it first unless `compile(gpu=)` already
    tiled it for this profile."""
    tiled = all(
        k.tile is not None and k.tile.gpu == profile.name and PROFILES.get(k.tile.gpu) is profile
        for k in s.kernels
    )
    rows = []
    for k in (s if tiled else tile_kernels(s, profile)).kernels:
        flops, read, written = kernel_cost(k)
        t = k.tile
        rows.append(
            KernelRow(
                k.name, k.kind, tuple(k.compute_ops), read, written, t.dram_bytes or read + written,
                flops, t.short, t.est_time_s, t.bound, t.reason, t.blocks, kernel_math(k),
            )
        )  # fmt: skip
    return GpuPlan(profile, tuple(rows), memory_needed)


def shape_advice(s: Schedule, plan: GpuPlan, min_waste: float = 0.02) -> list[str]:
    """Dimensions that waste tile work on this GPU: a GEMM M/N/K or an attention head dim
    that pads up to the tile, the nearest sizes that would not, and the time at stake (each
    compute-bound kernel's estimate x its padded fraction), grouped over kernels."""
    found: dict[tuple[str, int, int], list[tuple[str, float]]] = {}
    for k, row in zip(s.kernels, plan.rows, strict=True):
        if row.bound != "compute":
            continue
        blocks = dict(row.blocks)
        if k.kind in ("matmul", "conv2d"):
            _, M, N, K, _, _ = gemm_problem(k)
            dims = [("M", M, blocks["BLOCK_M"]), ("N", N, blocks["BLOCK_N"])]
            dims.append(("K", K, blocks["BLOCK_K"]))
        elif k.kind == "attention":
            sdpa = next(n for n in k.body if n.op == "sdpa")
            dims = [("head dim", k.type_of(sdpa.inputs[0]).shape[-1], blocks["HEAD_DIM"])]
        else:
            continue
        for what, size, block in dims:
            if size < block // 2 and what != "head dim":
                continue  # smaller than half a tile: the tile shrinks, not the model
            padded = -(-size // block) * block
            if 1 - size / padded >= min_waste:
                found.setdefault((what, size, block), []).append(
                    (row.name, row.est_time_s * (1 - size / padded))
                )
    out = []
    for (what, size, block), hits in found.items():
        padded, down = -(-size // block) * block, size // block * block
        names = ", ".join(n for n, _ in hits[:3]) + (", ..." if len(hits) > 3 else "")
        lower = f", {what} {down} would save it" if down else ""
        out.append(
            f"{what} {size} pads to {padded} in {block}-wide tiles on {plan.profile.name} in "
            f"{len(hits)} kernel(s) ({names}): {1 - size / padded:.0%} of their MMA work, up to "
            f"{sum(t for _, t in hits) * 1e6:.1f} us of {plan.est_time_s * 1e6:.1f} us, is "
            f"padding; {what} {padded} would do useful work in the same time{lower}"
        )
    return out


def explain(
    schedule: Schedule,
    captured_graph: Graph,
    gpu: GpuSpec = None,
) -> ExplainReport:
    """Price `schedule` on each GPU of `gpu` (None: the device present, else h100). Its
    memory is the model's plus the arena of a GPU program, which stores every value in its IR
    dtype (`passes.memory.stored_in`)."""
    profiles = resolve_profiles(gpu)
    g = schedule.graph
    memory_needed = model_min_bytes(g) + plan_memory(schedule, stored_in(schedule)).size
    plans = tuple(plan_for(schedule, p, memory_needed) for p in profiles)
    flops = sum(kernel_cost(k)[0] for k in schedule.kernels)
    advice = [a for p in plans[:1] for a in shape_advice(schedule, p)]
    return ExplainReport(
        g.name,
        plans,
        eager_bytes(captured_graph),
        lower_bound_bytes(schedule),
        model_min_bytes(g),
        flops,
        tuple(advice),
    )


# ----------------------------------------------------------------------------- roofline plot
# plot_roofline: an explain report as a roofline PNG, one panel per GPU profile.
#
# Each panel has the profile's memory slope (HBM bandwidth x intensity) and a compute ceiling
# for every math class its kernels run at (tensor BF16/FP16, FP32 pipes); each kernel is a point
# at its arithmetic intensity (FLOPs / the DRAM bytes the cost model predicts for its tile) and
# its estimated achieved FLOP/s (FLOPs / estimated time, launch included), labelled `k<n>`
# and coloured by kind. Kernels without FLOPs (pure copies, gathers) have no place on a log
# axis and are counted in the panel's title instead.
#
# matplotlib is imported here only, with the Agg backend (no display needed); it is in the
# `dev` extra, and a missing install is a clear error.

KIND_COLORS = {
    "matmul": "tab:blue",
    "conv2d": "tab:purple",
    "attention": "tab:red",
    "reduction": "tab:green",
    "pointwise": "tab:orange",
}
MATH_LABELS = {"bf16": "BF16/FP16 tensor", "fp32": "FP32"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(
            "explain --plot needs matplotlib, which is not installed: "
            "pip install matplotlib (or the project's dev extra: pip install -e '.[dev]')"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(name: str) -> str:
    m = re.match(r"k\d+", name)
    return m.group(0) if m else name[:8]


def _panel(ax: Any, plan: GpuPlan, x_range: tuple[float, float]) -> None:
    p = plan.profile
    lo, hi = x_range
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    maths = sorted({r.math for r in plan.rows if r.flops > 0} | {"fp32"}, reverse=False)
    for m in maths:
        peak = p.peak(m)
        ax.plot(xs, [min(peak, p.hbm_bw * x) for x in xs], color="black", lw=1.5)
        ridge = peak / p.hbm_bw
        ax.annotate(
            f"{MATH_LABELS.get(m, m)} {peak / 1e12:g} TFLOP/s (ridge {ridge:.0f})",
            (hi, peak), xytext=(-4, 3), textcoords="offset points", ha="right", fontsize=8,
        )  # fmt: skip
    ax.annotate(
        f"HBM {p.hbm_bw / 1e12:g} TB/s",
        (lo * 3, p.hbm_bw * lo * 3), xytext=(-24, 12), textcoords="offset points", fontsize=8,
    )  # fmt: skip
    shown = [r for r in plan.rows if r.flops > 0 and r.est_time_s > 0 and r.dram_bytes > 0]
    for kind, color in KIND_COLORS.items():
        pts = [r for r in shown if r.kind == kind]
        if not pts:
            continue
        ax.scatter(
            [r.flops / r.dram_bytes for r in pts],
            [r.flops / r.est_time_s for r in pts],
            s=28, color=color, label=kind, zorder=3, edgecolors="black", linewidths=0.4,
        )  # fmt: skip
        spots: dict[tuple[float, float], list[str]] = {}  # identical layers share a point
        for r in pts:
            xy = (r.flops / r.dram_bytes, r.flops / r.est_time_s)
            spots.setdefault((float(f"{xy[0]:.3g}"), float(f"{xy[1]:.3g}")), []).append(r.name)
        for xy, names in spots.items():
            text = ",".join(_label(n) for n in names[:3]) + (
                f" +{len(names) - 3}" * (len(names) > 3)
            )
            ax.annotate(
                text, xy, xytext=(4, -10), textcoords="offset points", fontsize=6.5, color=color
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    top = max(p.peak(m) for m in maths)
    ys = [r.flops / r.est_time_s for r in shown] or [top / 1e3]
    ax.set_ylim(min(min(ys) / 3, p.hbm_bw * lo), top * 3)
    ax.set_xlabel("arithmetic intensity (FLOP / DRAM byte)")
    ax.set_ylabel("estimated FLOP/s (launch included)")
    hidden = len(plan.rows) - len(shown)
    note = f", {hidden} without FLOPs not shown" if hidden else ""
    ax.set_title(
        f"{p.name} ({p.full_name}): {len(plan.rows)} kernels, est. "
        f"{plan.est_time_s * 1e6:.0f} us{note}",
        fontsize=9,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def plot_roofline(report: ExplainReport, path: Path) -> Path:
    """Write the report's rooflines to `path` (PNG) and return it."""
    plt = _pyplot()
    rows = [r for plan in report.plans for r in plan.rows if r.flops > 0 and r.dram_bytes > 0]
    ints = [r.flops / r.dram_bytes for r in rows] or [1.0]
    ridges = [pl.profile.ridge("bf16") for pl in report.plans]
    lo = 10 ** math.floor(math.log10(min(min(ints), 1.0) / 2))
    hi = 10 ** math.ceil(math.log10(max(max(ints), *ridges) * 4))
    n = len(report.plans)
    cols = min(n, 2)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(7.5 * cols, 5.2 * nrows), squeeze=False)
    for ax, plan in zip(axes.flat, report.plans, strict=False):
        _panel(ax, plan, (lo, hi))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{report.model}: roofline per GPU (estimates, uncalibrated)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path
