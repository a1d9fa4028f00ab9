"""plot_roofline: an explain report as a roofline PNG, one panel per GPU profile.

Each panel has the profile's memory slope (HBM bandwidth x intensity) and a compute ceiling
for every math class its kernels run at (tensor BF16/FP16, FP32 pipes); each kernel is a point
at its arithmetic intensity (FLOPs / the DRAM bytes the cost model predicts for its tile) and
its estimated achieved FLOP/s (FLOPs / estimated time, launch included), labelled `k<n>`
and coloured by kind. Kernels without FLOPs (pure copies, gathers) have no place on a log
axis and are counted in the panel's title instead.

matplotlib is imported here only, with the Agg backend (no display needed); it is in the
`dev` extra, and a missing install is a clear error.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compiler.explain import ExplainReport, GpuPlan

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
