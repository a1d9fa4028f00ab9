"""TileConfig and the choice among priced candidates, shared by the tiling search spaces.

A `TileConfig` is plain frozen data: the launch shape one GPU profile chose for one kernel
(block sizes, warps, stages, split-K, GROUP_M, and on AMD gfx942 the `waves_per_eu`,
`matrix_instr_nonkdim` and `kpack` knobs of gpu_profiles.md section 2.4), its estimate, the
runner-up and a one-line reason. `choose` keeps the fastest runnable candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from compiler.core.gpu import KB, Estimate, GpuProfile


@dataclass(frozen=True)
class TileConfig:
    """The launch shape a profile chose for one kernel, with its estimate and why.

    `blocks` maps constexpr block names to sizes, e.g. (("BLOCK_M", 128), ("BLOCK_N", 128),
    ("BLOCK_K", 64)); `persistent` is for reductions (the whole row in registers). The AMD
    knobs are 0 (unset: the compiler's default) on NVIDIA: `waves_per_eu` pins the waves per
    SIMD the compiler must fit (it caps VGPRs at 512 / n), `matrix_instr_nonkdim` picks
    mfma_16x16 or mfma_32x32, `kpack` packs K for the MFMA operand loads; `num_xcds` > 1 means
    the kernel remaps program ids so each XCD (with its own L2) takes a contiguous chunk."""

    blocks: tuple[tuple[str, int], ...]
    num_warps: int
    num_stages: int = 1
    split_k: int = 1
    group_m: int = 1
    persistent: bool = False
    waves_per_eu: int = 0
    matrix_instr_nonkdim: int = 0
    kpack: int = 1
    num_xcds: int = 1
    est_time_s: float = 0.0
    bound: str = "memory"
    blocks_per_sm: int = 1
    regs_per_thread: int = 0
    smem_bytes: int = 0
    grid: int = 1
    dram_bytes: float = 0.0
    flops: float = 0.0
    limiter: str = ""
    gpu: str = ""  # the profile it was chosen for
    reason: str = ""
    runner_up: TileConfig | None = None

    def block(self, name: str) -> int:
        return dict(self.blocks)[name]

    @property
    def short(self) -> str:
        """`128x256x64 s3 w8` style: the block sizes, then stages, warps and options
        (`wpe2 nk16 kp2` for the AMD knobs)."""
        dims = "x".join(str(v) for _, v in self.blocks)
        extra = f" split{self.split_k}" if self.split_k > 1 else ""
        extra += " persistent" if self.persistent else ""
        extra += f" wpe{self.waves_per_eu}" if self.waves_per_eu else ""
        extra += f" nk{self.matrix_instr_nonkdim}" if self.matrix_instr_nonkdim else ""
        extra += f" kp{self.kpack}" if self.kpack > 1 else ""
        return f"{dims} s{self.num_stages} w{self.num_warps}{extra}"

    def triton_options(self) -> dict[str, Any]:
        """The launch/compile options Triton takes for this config (AMD knobs only when set)."""
        opts: dict[str, Any] = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        for name in ("waves_per_eu", "matrix_instr_nonkdim"):
            if getattr(self, name):
                opts[name] = getattr(self, name)
        if self.kpack > 1:
            opts["kpack"] = self.kpack
        return opts

    def __str__(self) -> str:
        return f"{self.short} ({self.est_time_s * 1e6:.1f} us, {self.bound})"


@dataclass(frozen=True)
class Candidate:
    config: TileConfig
    rejected: str = ""  # why it cannot run ("smem", "regs"), empty when it can


def pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def _size(c: TileConfig) -> int:
    return math.prod(v for _, v in c.blocks)


def choose(cands: list[Candidate], p: GpuProfile, what: str) -> TileConfig:
    """The fastest runnable candidate (first wins ties), with the runner-up and a reason."""
    ok = [c.config for c in cands if not c.rejected]
    if not ok:  # nothing fits: keep the smallest so later stages still have a config
        ok = [min((c.config for c in cands), key=lambda c: c.smem_bytes)]
    ranked = sorted(range(len(ok)), key=lambda i: (round(ok[i].est_time_s, 12), i))
    best = ok[ranked[0]]
    runner = ok[ranked[1]] if len(ranked) > 1 else None
    n_smem = sum(c.rejected == "smem" for c in cands)
    n_regs = sum(c.rejected == "regs" for c in cands)
    cap = p.smem_per_block // KB
    parts = [
        f"{what} {best.short}: {best.bound}-bound {best.est_time_s * 1e6:.1f} us",
        f"{best.blocks_per_sm} blocks/SM, {best.grid} programs",
        f"smem {best.smem_bytes / KB:.0f} of {cap} KB, {best.regs_per_thread} regs",
    ]
    if n_smem or n_regs:
        parts.append(f"{len(cands)} candidates, {n_smem} over {cap} KB smem, {n_regs} would spill")
    if runner is not None:
        parts.append(f"runner-up {runner.short} {runner.est_time_s * 1e6:.1f} us")
    larger = [c for c in ok if _size(c) > _size(best)]
    if larger:  # why a bigger tile lost: usually occupancy (smem, regs) or waves
        big = min(larger, key=lambda c: (_size(c), c.est_time_s))
        parts.append(
            f"larger {big.short}: {big.blocks_per_sm} blocks/SM ({big.limiter}), "
            f"{big.est_time_s * 1e6:.1f} us"
        )
    reason = "; ".join(parts) + (f"; {best.reason}" if best.reason else "")
    return replace(best, reason=reason, runner_up=runner, gpu=p.name)


def finish(
    cfg: TileConfig, p: GpuProfile, est: Estimate, bps: int, limiter: str, note: str = ""
) -> TileConfig:
    """`cfg` with its estimate, occupancy and the model's part of the reason."""
    why = f"limited by {limiter}, {est.waves} waves at {est.wave_eff:.0%}"
    if est.mem_frac < 1:
        why += f", {est.mem_frac:.0%} of the bytes in flight the bandwidth needs"
    return replace(
        cfg,
        est_time_s=est.time_s,
        bound=est.bound,
        blocks_per_sm=bps,
        limiter=limiter,
        reason=why + (f", {note}" if note else ""),
    )


# --- AMD gfx942 knobs (gpu_profiles.md 2.4)

VGPR_SQUEEZE = 0.9  # waves_per_eu may cap VGPRs at most 10% below the predicted count


def vgpr_cap(waves: int) -> int:
    """The VGPRs per lane that let `waves` waves share a SIMD (512 per lane, granule 8)."""
    return 512 // waves // 8 * 8


def waves_per_simd(vgprs: int) -> int:
    return min(8, 512 // (math.ceil(max(vgprs, 1) / 8) * 8))


def wave_options(vgprs: int, floor: int, warps: int) -> list[tuple[int, int]]:
    """(waves_per_eu, VGPRs) to price on gfx942: the compiler's default (0) with the predicted
    VGPRs, and, when the kernel sits just above an occupancy step (8 waves at <= 64 VGPRs,
    4 at <= 128, 3 at <= 168, 2 at <= 256), `waves_per_eu` = the next wave count that fits one
    more workgroup of `warps` waves per CU, which makes the compiler fit that count's VGPR
    cap; only where the cap keeps >= 90 % of the predicted VGPRs and `floor` (the
    accumulator, which must not spill)."""
    out = [(0, vgprs)]
    natural = waves_per_simd(vgprs)
    n = next((n for n in range(natural + 1, 9) if n * 4 // warps > natural * 4 // warps), 0)
    if n and vgpr_cap(n) >= max(VGPR_SQUEEZE * vgprs, floor):
        out.append((n, vgpr_cap(n)))
    return out


def amd_note(cfg: TileConfig, predicted: int, floor: int) -> str:
    """Why the AMD knobs of `cfg` are what they are, for the reason string (`predicted` VGPRs
    before any cap, `floor` the ones that must not spill)."""
    parts = []
    if cfg.matrix_instr_nonkdim:
        nk = cfg.matrix_instr_nonkdim
        parts.append(f"mfma_{nk}x{nk} (nonkdim {nk}: 16x16 beats 32x32 on MI300X, ROCm guide)")
    if "BLOCK_K" in dict(cfg.blocks):  # GEMMs; attention keeps Triton's default kpack
        parts.append(f"kpack {cfg.kpack} (BLOCK_K {'> 16' if cfg.kpack > 1 else '<= 16'})")
    if cfg.waves_per_eu:
        parts.append(
            f"waves_per_eu {cfg.waves_per_eu} caps VGPRs at {vgpr_cap(cfg.waves_per_eu)} "
            f"(predicted {predicted}) for {cfg.waves_per_eu} waves/SIMD instead of "
            f"{waves_per_simd(predicted)}"
        )
    else:
        n = waves_per_simd(predicted)
        why = (
            f"waves_per_eu {n + 1} would not be faster"
            if len(wave_options(predicted, floor, cfg.num_warps)) > 1
            else "no occupancy step within 10%"
        )
        parts.append(f"waves_per_eu default: {predicted} VGPRs allow {n} waves/SIMD ({why})")
    if cfg.num_xcds > 1:
        parts.append(f"pids remapped over {cfg.num_xcds} XCDs (each its own L2)")
    return ", ".join(parts)
