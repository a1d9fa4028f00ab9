"""tile_kernels: Schedule x GpuProfile -> Schedule with a TileConfig on every kernel.

`tile(spec, profile)` enumerates the expert starting points of gpu_profiles.md section 2 for
the kernel's kind and target (the search space, not the answer), drops the candidates that
cannot run (shared memory over the per-block limit, accumulators that would spill), prices the
rest with the roofline of section 3 (compute at a fraction of peak, bandwidth limited by the
bytes in flight (Little's law), wave quantization over SMs x blocks per SM) and keeps the
fastest, recording the runner-up. It is analytic and deterministic: nothing is compiled, and
ties go to the earlier (more conventional) candidate. GEMM and attention spaces live in
passes/tiling_mma.py, the TileConfig data and the choice in compiler/core/tile_config.py.

Note [Why the model, not a lookup]
The same GEMM lands on different tiles per GPU because the limits differ. A 4096^3 bf16 GEMM:
h100 takes 128x128x64 s3 w4 (96 KB, 2 blocks/SM); on l4 that tile's 64 KB (sm_89 keeps one
stage in registers) fits one block per 100 KB SM, so 128x128x32 s3 (2 blocks/SM) wins; mi300x
takes 128x128x64 s2 w8 with mfma 16x16 and kpack 2 (one 32 KB LDS buffer of 64 KB). The
reason string says which limit decided, and names the next larger tile with its limiter.

Note [Measured bounds]
Target verification compiles the chosen config; when it overflows shared memory by a factor f
(measured / modelled: operand tiles the model does not count, such as RoPE's partner and
cos/sin tiles or one B tile per segment of a joint-N GEMM) every config of that kernel is
suspect by the same factor, and when it spills at r modelled registers every config modelled
at r or more is. `tile(..., smem_scale=f, max_regs=r - 1)` refuses those at once, so retiling
does not walk a row of configs that fail the same way.
"""

from __future__ import annotations

import math
from dataclasses import replace

from compiler.core.gpu import LAUNCH_S, GpuProfile, occupancy, roofline
from compiler.core.schedule import KernelSpec, Schedule
from compiler.core.tile_config import Candidate, TileConfig, choose, finish, pow2
from passes.cost import kernel_cost
from passes.tiling_mma import (
    Gemm,
    attention_candidates,
    gemm_candidates,
    gemm_problem,
    split_k_partial_bytes,
)

__all__ = ["Gemm", "TileConfig", "gemm_problem", "tile", "tile_kernels"]

ETA_COMPUTE_VECTOR = 0.6  # non-tensor FP32 FMA pipes in fused elementwise/reduction bodies


def _types(spec: KernelSpec) -> dict:
    return {v.name: v.type for v in spec.inputs} | {n.out.name: n.out.type for n in spec.body}


TWO_PASS = frozenset({"layer_norm", "rms_norm", "group_norm", "softmax", "log_softmax"})


def reduction_candidates(
    spec: KernelSpec, p: GpuProfile, flops: float, read: int, written: int
) -> list[Candidate]:
    types = _types(spec)
    names = set(spec.anchors)
    a = next((n for n in spec.body if n.out.name in names), spec.body[-1])
    x = types[a.inputs[0]] if a.inputs else a.out.type
    axes = spec.reduction_axes or (x.rank - 1,)
    row = math.prod(x.shape[d] for d in axes if d < x.rank) or 1
    if a.op == "group_norm":
        row //= a.attr("groups")
    rows = max(1, x.numel // row)
    it = x.dtype.itemsize
    passes = 2 if a.op in TWO_PASS else 1
    ws, amd = p.warp_size, p.is_amd
    max_w = 8 if amd else 16
    out: list[Candidate] = []
    rb = pow2(row)
    # persistent: the whole row (or XBLOCK rows) in registers, one read
    xblocks = (1, min(8, 1024 // rb)) if rb <= 512 else (1,)
    for xb in dict.fromkeys(xblocks):
        for w in dict.fromkeys((min(max_w, max(1, rb * xb // 256)), 4, 8, 16)):
            if w > max_w:
                continue
            regs = 24 + 3 * math.ceil(xb * rb / (ws * w))
            cfg = TileConfig(
                (("XBLOCK", xb), ("RBLOCK", rb)), w, 1, persistent=True,
                grid=math.ceil(rows / xb), regs_per_thread=min(regs, 255), flops=flops,
            )  # fmt: skip
            if regs > p.max_regs_per_thread:
                out.append(Candidate(cfg, "regs"))
                continue
            out.append(_price_reduction(p, cfg, read + written, xb * rb * it, 0))
    # looped (and split over programs when there are fewer rows than SMs)
    max_r = 1024 if p.arch == 100 else 2048
    for r in dict.fromkeys(min(rb, b) for b in (max_r, 1024, 512)):
        w = min(max_w, max(2, r // 128 // (2 if amd else 1)))
        for split in (1, 2, 4, 8, 16, 32, 64):
            if split > 1 and (rows * split > 4 * p.sm_count or row // split < r):
                continue
            cfg = TileConfig(
                (("XBLOCK", 1), ("RBLOCK", r)), w, 1, split_k=split,
                grid=rows * split, regs_per_thread=24 + 3 * math.ceil(r / (ws * w)), flops=flops,
            )  # fmt: skip
            # a second pass over the row hits L2 when the rows in flight fit in half of it;
            # split rows finish in a second launch, so then all of x must fit
            in_flight = min(rows, p.sm_count * 4) * row * it if split == 1 else x.nbytes
            again = 0 if passes == 1 or in_flight <= p.l2_bytes / 2 else (passes - 1) * x.nbytes
            # split rows leave `passes` fp32 partial statistics per split for that launch
            partials = split_k_partial_bytes(p, split, rows * passes)
            extra = LAUNCH_S if split > 1 else 0.0
            moved = read + written + again + partials
            out.append(_price_reduction(p, cfg, moved, r * it, extra))
    return out


def _price_reduction(
    p: GpuProfile, cfg: TileConfig, moved: float, inflight: int, extra_s: float
) -> Candidate:
    bps, limiter = occupancy(p, cfg.num_warps, cfg.regs_per_thread, 4 * 32 * cfg.num_warps)
    peak = p.peak("fp32")
    est = roofline(p, cfg.flops, moved, peak, ETA_COMPUTE_VECTOR, cfg.grid, bps, inflight)
    est = replace(est, time_s=est.time_s + extra_s)
    cfg = replace(cfg, smem_bytes=4 * 32 * cfg.num_warps, dram_bytes=moved)
    note = "row in registers" if cfg.persistent else f"looped, {moved / 1e6:.2f} MB moved"
    return Candidate(finish(cfg, p, est, bps, limiter, note))


def pointwise_candidates(
    spec: KernelSpec, p: GpuProfile, flops: float, moved: int
) -> list[Candidate]:
    numel = max(1, math.prod(spec.domain))
    ws, amd = p.warp_size, p.is_amd
    default = max(256, min(numel // 128, 1024))
    sizes = [default, 256, 512, 1024, 2048, 4096] + ([8192] if amd else [])
    max_w = 4 if amd else 8
    out: list[Candidate] = []
    seen = set()
    for xb0 in sizes:
        xb = min(xb0, pow2(numel))
        for per_warp in (256, 64):
            w = pow2(min(max_w, max(1, xb // per_warp)))
            if not amd and xb >= 128:
                w = max(w, 4)
            if (xb, w) in seen:
                continue
            seen.add((xb, w))
            ept = max(1, xb // (ws * w))
            regs = 16 + ept * (len(spec.inputs) + 2)
            cfg = TileConfig(
                (("XBLOCK", xb),), w, 1, grid=math.ceil(numel / xb),
                regs_per_thread=min(regs, 255), flops=flops, dram_bytes=moved,
            )  # fmt: skip
            if regs > p.max_regs_per_thread:
                out.append(Candidate(cfg, "regs"))
                continue
            bps, limiter = occupancy(p, w, regs, 0)
            inflight = xb * moved / numel
            est = roofline(p, flops, moved, p.peak("fp32"), ETA_COMPUTE_VECTOR, cfg.grid, bps,
                           inflight)  # fmt: skip
            out.append(Candidate(finish(cfg, p, est, bps, limiter)))
    return out


def launch_key(c: TileConfig) -> tuple:
    """What makes two configs the same binary: blocks, warps, stages, split-K, AMD knobs."""
    return (c.blocks, c.num_warps, c.num_stages, c.split_k, c.waves_per_eu,
            c.matrix_instr_nonkdim, c.kpack)  # fmt: skip


def tile(
    spec: KernelSpec,
    profile: GpuProfile,
    exclude: tuple[TileConfig, ...] = (),
    *,
    smem_scale: float = 1.0,
    max_regs: int | None = None,
) -> TileConfig:
    """The tile config for `spec` on `profile`: fastest under the cost model, with the
    runner-up and a one-line reason. `exclude`: configs a target compile rejected (spills,
    shared memory); they are not chosen again.

    What such a compile measured can also bound the rest (Note [Measured bounds]):
    `smem_scale` (> 1) multiplies every candidate's modelled shared memory before the
    per-block limit is applied, and `max_regs` refuses candidates modelled at more
    registers per thread."""
    if spec.empty:
        why = "every output is empty (a size-0 dimension): nothing to launch"
        return TileConfig((("XBLOCK", 1),), 1, grid=0, bound="none", gpu=profile.name, reason=why)
    flops, read, written = kernel_cost(spec)
    if spec.kind in ("matmul", "conv2d"):
        what, cands = "gemm", gemm_candidates(spec, profile, flops, read + written)
    elif spec.kind == "attention":
        what, cands = "attention", attention_candidates(spec, profile, flops, read + written)
    elif spec.kind == "reduction":
        what, cands = "reduction", reduction_candidates(spec, profile, flops, read, written)
    else:
        what, cands = "pointwise", pointwise_candidates(spec, profile, flops, read + written)
    if exclude:
        banned = {launch_key(c) for c in exclude}
        cands = [
            Candidate(c.config, "excluded") if launch_key(c.config) in banned else c for c in cands
        ]
    if smem_scale > 1 or max_regs is not None:
        cands = [_measured(c, profile, smem_scale, max_regs) for c in cands]
    return choose(cands, profile, what)


def _measured(c: Candidate, p: GpuProfile, smem_scale: float, max_regs: int | None) -> Candidate:
    """`c`, refused when what compiles measured rules it out (Note [Measured bounds])."""
    if c.rejected:
        return c
    if c.config.smem_bytes * smem_scale > p.smem_per_block:
        return Candidate(c.config, "smem")
    if max_regs is not None and c.config.regs_per_thread > max_regs:
        return Candidate(c.config, "regs")
    return c


def tile_kernels(schedule: Schedule, profile: GpuProfile) -> Schedule:
    """A new schedule whose every kernel carries `tile=` for `profile`; pure: `schedule` is
    untouched, and the same input gives an equal result. Kernels and refusals
    are kept; only each kernel's `tile` changes (printing the schedule shows it):

        Before:  k0_fused_matmul_add  matmul  domain=[1, 1024, 2304]
        After:   k0_fused_matmul_add  matmul  domain=[1, 1024, 2304]
                   tile (h100): 128x128x64 s3 w4 (12.5 us, compute)
                     gemm 128x128x64 s3 w4: compute-bound 12.5 us; 2 blocks/SM, 144 programs;
                     smem 96 of 227 KB, 208 regs; ...
    """
    kernels = tuple(replace(k, tile=tile(k, profile)) for k in schedule.kernels)
    return replace(schedule, kernels=kernels)
