"""tile_kernels: Schedule x GpuProfile -> Schedule with a TileConfig on every kernel.

`tile(spec, profile)` enumerates the expert starting points of gpu_profiles.md section 2 for
the kernel's kind and target (the search space, not the answer), drops the candidates that
cannot run (shared memory over the per-block limit, accumulators that would spill), prices the
rest with the roofline of section 3 (compute at a fraction of peak, bandwidth limited by the
bytes in flight (Little's law), wave quantization over SMs x blocks per SM) and keeps the
fastest, recording the runner-up. It is analytic and deterministic: nothing is compiled, and
ties go to the earlier (more conventional) candidate.

    Before:  k1_fused_matmul_add  matmul  domain=[1, 1024, 2304]          (tile=None)
    After:   k1_fused_matmul_add with tile=TileConfig(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64,
             num_stages=3, num_warps=4, ...), tile.reason = "gemm 128x128x64 s3 w4:
             compute-bound 12.4 us; 2 blocks/SM, 144 programs; smem 96 of 227 KB, 208 regs; ..."

Note [Why the model, not a lookup]
The same GEMM lands on different tiles per GPU because the limits differ. A 4096^3 bf16 GEMM:
h100 takes 128x128x64 s3 w4 (96 KB, 2 blocks/SM); on l4 that tile's 64 KB (sm_89 keeps one
stage in registers) fits one block per 100 KB SM, so 128x128x32 s3 (2 blocks/SM) wins; mi300x
takes 128x128x64 s2 w8 (one 32 KB LDS buffer of 64 KB). The reason string says which limit
decided, and names the next larger tile with its limiter.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from compiler.gpu import DRAM_LATENCY_S, KB, LAUNCH_S, Estimate, GpuProfile, occupancy, roofline
from compiler.ir import DType
from compiler.schedule import KernelSpec, Schedule
from passes.cost import causal_fraction, kernel_cost, math_class

# Achievable fractions and latencies (gpu_profiles.md section 3.1; calibrate per device).
ETA_COMPUTE = 0.75  # Triton GEMM fraction of dense tensor peak (cuBLAS: 0.81 on H100)
ETA_COMPUTE_VECTOR = 0.6  # non-tensor FP32 FMA pipes in fused elementwise/reduction bodies
FULL_REUSE_INTENSITY = 64.0  # tile FLOP per operand element at which a tile feeds the MMA units


@dataclass(frozen=True)
class TileConfig:
    """The launch shape a profile chose for one kernel, with its estimate and why.

    `blocks` maps constexpr block names to sizes, e.g. (("BLOCK_M", 128), ("BLOCK_N", 128),
    ("BLOCK_K", 64)); `persistent` is for reductions (the whole row in registers)."""

    blocks: tuple[tuple[str, int], ...]
    num_warps: int
    num_stages: int = 1
    split_k: int = 1
    group_m: int = 1
    persistent: bool = False
    est_time_s: float = 0.0
    bound: str = "memory"
    blocks_per_sm: int = 1
    regs_per_thread: int = 0
    smem_bytes: int = 0
    grid: int = 1
    dram_bytes: float = 0.0
    flops: float = 0.0
    limiter: str = ""
    reason: str = ""
    runner_up: TileConfig | None = None

    def block(self, name: str) -> int:
        return dict(self.blocks)[name]

    @property
    def short(self) -> str:
        """`128x256x64 s3 w8` style: the block sizes, then stages, warps and options."""
        dims = "x".join(str(v) for _, v in self.blocks)
        extra = f" split{self.split_k}" if self.split_k > 1 else ""
        extra += " persistent" if self.persistent else ""
        return f"{dims} s{self.num_stages} w{self.num_warps}{extra}"

    def __str__(self) -> str:
        return f"{self.short} ({self.est_time_s * 1e6:.1f} us, {self.bound})"


# --- choosing


@dataclass(frozen=True)
class Candidate:
    config: TileConfig
    rejected: str = ""  # why it cannot run ("smem", "regs"), empty when it can


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
    larger = [
        c for c in ok if math.prod(v for _, v in c.blocks) > math.prod(v for _, v in best.blocks)
    ]
    if larger:  # why a bigger tile lost: usually occupancy (smem, regs) or waves
        big = min(larger, key=lambda c: (math.prod(v for _, v in c.blocks), c.est_time_s))
        parts.append(
            f"larger {big.short}: {big.blocks_per_sm} blocks/SM ({big.limiter}), "
            f"{big.est_time_s * 1e6:.1f} us"
        )
    reason = "; ".join(parts) + (f"; {best.reason}" if best.reason else "")
    return replace(best, reason=reason, runner_up=runner)


def _finish(
    cfg: TileConfig, p: GpuProfile, est: Estimate, bps: int, limiter: str, note: str = ""
) -> TileConfig:
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


# --- search spaces (gpu_profiles.md section 2) and their pricing

# (BM, BN, BK, stages, warps, group_m). Each list starts with the target's "GEMM default" and
# "big-GEMM config" of section 2.1(d), so the expert default wins ties; the rest are tutorial 03
# and Inductor's mm/persistent/Blackwell configs.
GEMM_CUDA = [
    (128, 128, 64, 3, 4, 8), (128, 256, 64, 3, 8, 8), (128, 128, 32, 4, 4, 8),
    (128, 64, 32, 4, 4, 8), (64, 128, 32, 4, 4, 8), (64, 256, 32, 4, 4, 8),
    (128, 32, 32, 4, 4, 8), (64, 32, 32, 5, 2, 8), (32, 64, 32, 5, 2, 8),
    (64, 64, 32, 2, 4, 8), (64, 64, 64, 3, 8, 8), (128, 128, 128, 4, 8, 8),
    (128, 256, 64, 4, 8, 8), (256, 128, 64, 4, 8, 8), (256, 128, 64, 3, 8, 8),
    (128, 128, 64, 4, 8, 8), (128, 128, 64, 5, 4, 8), (32, 32, 128, 2, 4, 8),
    (64, 32, 128, 5, 4, 8), (64, 128, 64, 3, 4, 8), (128, 64, 32, 3, 4, 8),
    (128, 256, 128, 2, 8, 8), (256, 128, 64, 4, 4, 8),
]  # fmt: skip
GEMM_SM89_FIRST = [(128, 64, 32, 4, 4, 8), (128, 128, 32, 3, 4, 8), (128, 128, 64, 3, 4, 8)]
GEMM_SM100_FIRST = [(128, 128, 128, 3, 4, 8), (256, 128, 64, 3, 8, 8), (128, 256, 64, 4, 8, 8)]
GEMM_SM80_FIRST = [(128, 128, 32, 4, 4, 8), (128, 128, 64, 3, 4, 8), (128, 256, 64, 3, 8, 8)]
GEMM_HIP = [
    (128, 128, 64, 2, 8, 8), (256, 256, 64, 2, 8, 4), (256, 128, 64, 2, 8, 4),
    (128, 256, 16, 2, 4, 1), (256, 256, 16, 2, 8, 4), (128, 128, 32, 2, 8, 1),
    (64, 128, 32, 2, 4, 8), (64, 64, 32, 2, 4, 1), (128, 128, 64, 2, 4, 16),
    (128, 256, 32, 2, 4, 16), (64, 64, 64, 2, 4, 8), (32, 32, 64, 2, 4, 8),
]  # fmt: skip
SPLIT_K = (1, 2, 4, 8, 16)


def gemm_configs(p: GpuProfile) -> list[tuple[int, ...]]:
    if p.is_amd:
        return GEMM_HIP
    first = {80: GEMM_SM80_FIRST, 89: GEMM_SM89_FIRST, 100: GEMM_SM100_FIRST}.get(p.arch, [])
    return list(dict.fromkeys(first + GEMM_CUDA))


def pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def _types(spec: KernelSpec) -> dict:
    return {v.name: v.type for v in spec.inputs} | {n.out.name: n.out.type for n in spec.body}


class Gemm(NamedTuple):
    batch: int
    M: int
    N: int
    K: int
    dtype: DType
    ideal_operand_bytes: int


def gemm_problem(spec: KernelSpec) -> Gemm:
    """The GEMM a matmul/conv2d kernel computes: conv2d as implicit GEMM (M = N*Ho*Wo,
    N = Cout/groups, K = Cin/groups*kh*kw), horizontal matmuls reading one input as one GEMM
    over the concatenated N."""
    types = _types(spec)
    anchors = [n for n in spec.body if n.op in ("matmul", "conv2d")]
    a = anchors[0]
    x, w = types[a.inputs[0]], types[a.inputs[1]]
    if a.op == "conv2d":
        n, cout, ho, wo = a.out.type.shape
        g = a.attr("groups") or 1
        _, cin_g, kh, kw = w.shape
        return Gemm(g, n * ho * wo, cout // g, cin_g * kh * kw, x.dtype, x.nbytes + w.nbytes)
    out = a.out.type
    batch = math.prod(out.shape[:-2])
    N = sum(m.out.type.shape[-1] for m in anchors if m.inputs[0] == a.inputs[0])
    ops = x.nbytes + sum(types[m.inputs[1]].nbytes for m in anchors)
    return Gemm(batch, out.shape[-2], N, x.shape[-1], x.dtype, ops)


def gemm_candidates(spec: KernelSpec, p: GpuProfile, flops: float, moved: int) -> list[Candidate]:
    g = gemm_problem(spec)
    batch, M, N, K = g.batch, g.M, g.N, g.K
    other = max(0, moved - g.ideal_operand_bytes)  # epilogue inputs and outputs
    seen, out = set(), []
    for bm0, bn0, bk0, s, w0, gm in gemm_configs(p):
        bm, bn = min(bm0, max(16, pow2(M))), min(bn0, max(16, pow2(N)))
        bk = min(bk0, max(16, pow2(K)))
        w = max(1, min(w0, bm * bn // 256))
        if p.arch in (90, 100):
            w = max(4, w - w % 4)  # wgmma/tcgen05 work in warpgroups
            if w == 8 and bm * bn < 128 * 128:
                continue  # tutorial keep(): 8 warps need at least a 128x128 tile on Hopper
        tiles = batch * math.ceil(M / bm) * math.ceil(N / bn)
        for split in SPLIT_K:
            if split > 1 and (tiles >= p.sm_count or K // split < 4 * bk):
                continue
            key = (bm, bn, bk, s, w, split)
            if key in seen:
                continue
            seen.add(key)
            out.append(_price_gemm(p, g, key, gm, flops, other))
    return out


def _price_gemm(
    p: GpuProfile, g: Gemm, key: tuple[int, ...], gm: int, flops: float, other: int
) -> Candidate:
    bm, bn, bk, s, w, split = key
    M, N, K, it, ideal_ops = g.M, g.N, g.K, g.dtype.itemsize, g.ideal_operand_bytes
    tiles = g.batch * math.ceil(M / bm) * math.ceil(N / bn)
    peak = p.peak(math_class(g.dtype))
    s_eff = max(1, s - p.stages_in_smem_offset)
    smem = (bm + bn) * bk * it * s_eff + (16 if p.arch == 100 else 0)
    threads = p.warp_size * w
    acc = bm * bn // threads
    operand = (bm + bn) * bk * it // 4 // threads
    if p.is_amd:
        regs = 2 * acc + operand + 32
    elif p.arch == 100:
        regs = acc // 2 + operand // 2 + 48  # accumulator in TMEM
    elif p.arch == 90:
        regs = acc + operand // 2 + 48  # wgmma reads operands from smem
    else:
        regs = acc + operand + 48
    grid = tiles * split
    cfg = TileConfig(
        (("BLOCK_M", bm), ("BLOCK_N", bn), ("BLOCK_K", bk)), w, s, split, gm,
        smem_bytes=smem, regs_per_thread=min(regs, p.max_regs_per_thread), grid=grid,
        flops=flops,
    )  # fmt: skip
    if smem > p.smem_per_block:
        return Candidate(cfg, "smem")
    if regs > p.max_regs_per_thread or (acc > 200 and p.arch != 100 and not p.is_amd):
        return Candidate(cfg, "regs")
    bps, limiter = occupancy(p, w, regs, smem, bm * bn // 128 if p.arch == 100 else 0)
    if bps == 0:
        return Candidate(cfg, limiter)
    slots = p.sm_count * bps
    # L2 catches re-reads within a wave: a GROUP_M-swizzled wave reads gm row panels and
    # slots/gm column panels; each wave streams its own panels from DRAM.
    rows = min(gm, math.ceil(M / bm))
    cols = min(math.ceil(N / bn), math.ceil(min(grid, slots) / rows))
    waves = math.ceil(grid / slots)
    no_reuse = tiles * (bm + bn) * K * it
    operands = min(no_reuse, max(ideal_ops, waves * (rows * bm + cols * bn) * K * it / split))
    partials = 2 * split * M * N * 4 if split > 1 else 0
    eta = ETA_COMPUTE * min(1.0, bm * bn / (bm + bn) / FULL_REUSE_INTENSITY)
    pad = M * N * K / (math.ceil(M / bm) * bm * math.ceil(N / bn) * bn * math.ceil(K / bk) * bk)
    eta *= pad  # masked lanes of edge tiles still cost MMA time
    # the pipeline hides DRAM latency when the stages in flight cover it
    t_step = 2 * bm * bn * bk / (peak / p.sm_count / bps)
    eta *= min(1.0, max(1, s - 1) * t_step / DRAM_LATENCY_S)
    # filling the pipeline and storing the tile stall the SM unless another block overlaps it
    t_tile = math.ceil(K / split / bk) * t_step
    eta *= t_tile / (t_tile + DRAM_LATENCY_S / bps)
    inflight = s_eff * (bm + bn) * bk * it
    est = roofline(p, flops, operands + other + partials, peak, eta, grid, bps, inflight)
    note = f"{operands / max(ideal_ops, 1):.2f}x operand bytes"
    if pad < 0.9:
        note += f", {1 - pad:.0%} of the MMA work is padding"
    cfg = replace(cfg, dram_bytes=operands + other + partials)
    if split > 1:
        est = replace(est, time_s=est.time_s + LAUNCH_S)
    return Candidate(_finish(cfg, p, est, bps, limiter, note))


def attention_candidates(
    spec: KernelSpec, p: GpuProfile, flops: float, moved: int
) -> list[Candidate]:
    types = _types(spec)
    a = next(n for n in spec.body if n.op == "sdpa")
    q, k = types[a.inputs[0]], types[a.inputs[1]]
    BH, L, S, D = math.prod(q.shape[:-2]), q.shape[-2], k.shape[-2], q.shape[-1]
    Dp, it, ws, off = pow2(max(D, 16)), q.dtype.itemsize, p.warp_size, p.stages_in_smem_offset
    peak = p.peak(math_class(q.dtype))
    stages = (1,) if p.is_amd else (3, 2, 4)
    out, seen = [], set()
    for bm0, bn0, w, s in itertools.product((128, 64), (64, 128, 32), (4, 8), stages):
        bm, bn = min(bm0, max(16, pow2(L))), min(bn0, max(16, pow2(S)))
        if p.arch == 90 and w == 8 and bm * bn < 128 * 128:
            continue
        if (bm, bn, w, s) in seen:
            continue
        seen.add((bm, bn, w, s))
        smem = bm * Dp * it + 2 * bn * Dp * it * max(1, s - off)
        threads = ws * w
        acc = (bm * Dp + bm * bn) // threads
        regs = (acc // 2 if p.arch == 100 else acc) + 40
        grid = BH * math.ceil(L / bm)
        cfg = TileConfig(
            (("BLOCK_M", bm), ("BLOCK_N", bn), ("HEAD_DIM", Dp)), w, s,
            smem_bytes=smem, regs_per_thread=min(regs, 255), grid=grid, flops=flops,
        )  # fmt: skip
        if smem > p.smem_per_block:
            out.append(Candidate(cfg, "smem"))
            continue
        if regs > p.max_regs_per_thread:
            out.append(Candidate(cfg, "regs"))
            continue
        bps, limiter = occupancy(p, w, regs, smem)
        causal = a.attr("is_causal")
        padded = 4.0 * BH * L * S * Dp * (causal_fraction(L, S, bm) if causal else 1)
        eta = ETA_COMPUTE * min(1.0, bm * bn / (bm + bn) / FULL_REUSE_INTENSITY)
        inflight = 2 * bn * Dp * it * max(1, s - off)
        est = roofline(p, padded, moved, peak, eta, grid, bps, inflight)
        cfg = replace(cfg, dram_bytes=moved)
        note = f"head dim {D} padded to {Dp}" if Dp != D else ""
        out.append(Candidate(_finish(cfg, p, est, bps, limiter, note)))
    return out


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
            # a second pass over the row hits L2 when the rows in flight fit in half of it
            in_flight = min(rows * split, p.sm_count * 4) * row * it / split
            again = 0 if passes == 1 or in_flight <= p.l2_bytes / 2 else (passes - 1) * x.nbytes
            extra = LAUNCH_S if split > 1 else 0.0
            out.append(_price_reduction(p, cfg, read + written + again, r * it, extra))
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
    return Candidate(_finish(cfg, p, est, bps, limiter, note))


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
            out.append(Candidate(_finish(cfg, p, est, bps, limiter)))
    return out


def tile(spec: KernelSpec, profile: GpuProfile) -> TileConfig:
    """The tile config for `spec` on `profile`: fastest under the cost model, with the
    runner-up and a one-line reason."""
    flops, read, written = kernel_cost(spec)
    if spec.kind in ("matmul", "conv2d"):
        return choose(gemm_candidates(spec, profile, flops, read + written), profile, "gemm")
    if spec.kind == "attention":
        cands = attention_candidates(spec, profile, flops, read + written)
        return choose(cands, profile, "attention")
    if spec.kind == "reduction":
        cands = reduction_candidates(spec, profile, flops, read, written)
        return choose(cands, profile, "reduction")
    cands = pointwise_candidates(spec, profile, flops, read + written)
    return choose(cands, profile, "pointwise")


def tile_kernels(schedule: Schedule, profile: GpuProfile) -> Schedule:
    """A new schedule whose every kernel carries `tile=` for `profile` (pure)."""
    kernels = tuple(replace(k, tile=tile(k, profile)) for k in schedule.kernels)
    return replace(schedule, kernels=kernels)
