"""Search spaces and pricing for the MMA kernels (GEMM, implicit-GEMM conv, attention).

Each list starts from the expert starting points of gpu_profiles.md section 2 for the target;
`tile()` in passes/tiling.py prices them all and keeps the fastest.

Note [Split-K partials and L2 domains]
A split-K GEMM writes `split` fp32 partial tiles per output tile and a second pass sums them.
The partials always count as DRAM writes (dirty L2 lines are written back). Their read-back
hits L2 only when one L2 serves the whole grid and they fit in half of it; on MI300X the grid
is spread over 8 XCDs, each with its own 4 MB L2, and the partials of one output tile were
written on different XCDs, so they are read from DRAM. The same split of L2 cuts the operand
reuse of a wave: with the pid remap of AMD's kernels (`num_xcds`), each XCD streams the row and
column panels of its own contiguous chunk of the wave.

Note [Implicit-GEMM registers]
A conv2d's A tile is gathered, not streamed: every [BLOCK_M, BLOCK_K] element has its own
input pixel, padding mask and address, and the [BLOCK_M, BLOCK_N] epilogue decomposes each
output row into (n, h, w) again; the accumulator also comes back to registers on sm_100 for
that epilogue. Measured with Triton 3.9 on the unet's convs (conv_in with Cin 4, K = 36, and
the 3x3 convs with K = 2880; cuobjdump), per thread, acc = BM*BN, a = BM*BK, b = BK*BN over
the threads: every sm_80/90/100 config with acc = 128 spilled (56-3700 B), (acc, a, b) =
(64, 32, 64) spilled 56-96 B on sm_90/100, and (64, 32, 32), (64, 32, 16), (64, 16, 32),
(32, 32, 32), (16, 32, 16) did not. `acc + 2a + b + 64` registers separates them at the
255-register limit (one config that fit, acc 128 with a 16 on sm_90, is refused too: the
model errs towards fitting). GEMMs keep the streamed-operand model of `_gemm_regs`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import NamedTuple

from compiler.core.gpu import DRAM_LATENCY_S, LAUNCH_S, GpuProfile, occupancy, roofline
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import Candidate, TileConfig, amd_note, finish, pow2, wave_options
from compiler.core.types import DType
from passes.cost import causal_fraction, math_class

# Achievable fractions (gpu_profiles.md section 3.1; calibrate per device).
ETA_COMPUTE = 0.75  # Triton GEMM fraction of dense tensor peak (cuBLAS: 0.81 on H100)
FULL_REUSE_INTENSITY = 64.0  # tile FLOP per operand element at which a tile feeds the MMA units
AMD_NONKDIM = 16  # mfma_16x16 "typically outperforms mfma_32x32" on MI300X GEMMs (2.4.4)

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
            out += _price_gemm(p, g, key, gm, flops, other, spec.kind == "conv2d")
    return out


def _gemm_regs(p: GpuProfile, acc: int, operand: int) -> int:
    if p.is_amd:
        return 2 * acc + operand + 32
    if p.arch == 100:
        return acc // 2 + operand // 2 + 48  # accumulator in TMEM
    if p.arch == 90:
        return acc + operand // 2 + 48  # wgmma reads operands from smem
    return acc + operand + 48


def _implicit_gemm_regs(acc: int, a: int, b: int) -> int:
    """Registers per thread of a conv2d tile on NVIDIA (Note [Implicit-GEMM registers]):
    accumulator, gathered A elements (pixel, mask, address) twice, B elements once."""
    return acc + 2 * a + b + 64


def _price_gemm(
    p: GpuProfile, g: Gemm, key: tuple[int, ...], gm: int, flops: float, other: int,
    conv: bool = False,
) -> list[Candidate]:  # fmt: skip
    """One candidate per key, or on gfx942 one per `waves_per_eu` choice; `conv`: an
    implicit GEMM (its A tile gathered)."""
    bm, bn, bk, s, w, split = key
    it = g.dtype.itemsize
    s_eff = max(1, s - p.stages_in_smem_offset)
    smem = (bm + bn) * bk * it * s_eff + (16 if p.arch == 100 else 0)
    threads = p.warp_size * w
    acc = bm * bn // threads
    regs = _gemm_regs(p, acc, (bm + bn) * bk * it // 4 // threads)
    if conv and not p.is_amd:
        regs = _implicit_gemm_regs(acc, bm * bk // threads, bk * bn // threads)
    cfg = TileConfig(
        (("BLOCK_M", bm), ("BLOCK_N", bn), ("BLOCK_K", bk)), w, s, split, gm,
        smem_bytes=smem, regs_per_thread=min(regs, p.max_regs_per_thread),
        grid=g.batch * math.ceil(g.M / bm) * math.ceil(g.N / bn) * split, flops=flops,
    )  # fmt: skip
    if smem > p.smem_per_block:
        return [Candidate(cfg, "smem")]
    if regs > p.max_regs_per_thread or (acc > 200 and p.arch != 100 and not p.is_amd):
        return [Candidate(cfg, "regs")]
    if not p.is_amd:
        return [_price_gemm_regs(p, g, cfg, regs, flops, other)]
    cfg = replace(
        cfg, matrix_instr_nonkdim=AMD_NONKDIM, kpack=2 if bk > 16 else 1, num_xcds=p.l2_domains
    )
    return [
        _price_gemm_regs(p, g, replace(cfg, waves_per_eu=wpe), vgprs, flops, other, (regs, 2 * acc))
        for wpe, vgprs in wave_options(regs, 2 * acc, w)
    ]


def _price_gemm_regs(
    p: GpuProfile, g: Gemm, cfg: TileConfig, regs: int, flops: float, other: int,
    predicted: tuple[int, int] = (0, 0),
) -> Candidate:  # fmt: skip
    M, N, K, it, ideal_ops = g.M, g.N, g.K, g.dtype.itemsize, g.ideal_operand_bytes
    bm, bn, bk = cfg.block("BLOCK_M"), cfg.block("BLOCK_N"), cfg.block("BLOCK_K")
    s, w, split, gm, grid = cfg.num_stages, cfg.num_warps, cfg.split_k, cfg.group_m, cfg.grid
    cfg = replace(cfg, regs_per_thread=regs)
    peak = p.peak(math_class(g.dtype))
    s_eff = max(1, s - p.stages_in_smem_offset)
    tiles = grid // split
    bps, limiter = occupancy(p, w, regs, cfg.smem_bytes, bm * bn // 128 if p.arch == 100 else 0)
    if bps == 0:
        return Candidate(cfg, limiter)
    slots = p.sm_count * bps
    # L2 catches re-reads within a wave: each L2 domain's share of a GROUP_M-swizzled wave
    # reads its row and column panels once; each wave streams its own panels from DRAM.
    share = math.ceil(min(grid, slots) / p.l2_domains)
    rows = min(gm, math.ceil(M / bm), share)
    cols = min(math.ceil(N / bn), math.ceil(share / rows))
    waves = math.ceil(grid / slots)
    no_reuse = tiles * (bm + bn) * K * it
    panels = waves * p.l2_domains * (rows * bm + cols * bn) * K * it / split
    operands = min(no_reuse, max(ideal_ops, panels))
    partials = split_k_partial_bytes(p, split, g.batch * M * N)
    eta = ETA_COMPUTE * min(1.0, bm * bn / (bm + bn) / FULL_REUSE_INTENSITY)
    padded = math.ceil(M / bm) * bm * math.ceil(N / bn) * bn * math.ceil(K / bk) * bk
    pad = M * N * K / padded if padded else 1.0  # K = 0: no MMA work, none of it padding
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
    if partials:
        note += f", split-K partials {partials / 1e6:.2f} MB"
    if pad < 0.9:
        note += f", {1 - pad:.0%} of the MMA work is padding"
    if p.is_amd:
        note += f"; {amd_note(cfg, *predicted)}"
    cfg = replace(cfg, dram_bytes=operands + other + partials)
    if split > 1:
        est = replace(est, time_s=est.time_s + LAUNCH_S)
    return Candidate(finish(cfg, p, est, bps, limiter, note))


def split_k_partial_bytes(p: GpuProfile, split: int, outputs: int) -> float:
    """DRAM bytes of `split` fp32 partials per output element (Note [Split-K partials and L2
    domains]): written back always, read back from DRAM unless one L2 holds them."""
    if split <= 1:
        return 0.0
    written = split * outputs * 4
    from_l2 = p.l2_domains == 1 and written <= p.l2_bytes / 2
    return written * (1 if from_l2 else 2)


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
        acc = (bm * Dp + bm * bn) // (ws * w)
        regs = (acc // 2 if p.arch == 100 else acc) + 40
        cfg = TileConfig(
            (("BLOCK_M", bm), ("BLOCK_N", bn), ("HEAD_DIM", Dp)), w, s,
            smem_bytes=smem, regs_per_thread=min(regs, 255), grid=BH * math.ceil(L / bm),
            flops=flops,
        )  # fmt: skip
        if smem > p.smem_per_block:
            out.append(Candidate(cfg, "smem"))
            continue
        if regs > p.max_regs_per_thread:
            out.append(Candidate(cfg, "regs"))
            continue
        options = [(0, regs)]
        if p.is_amd:  # flex-attention's ROCm configs keep kpack at its default (1)
            cfg = replace(cfg, matrix_instr_nonkdim=AMD_NONKDIM)
            options = wave_options(regs, acc, w)
        for wpe, vgprs in options:
            c = replace(cfg, waves_per_eu=wpe, regs_per_thread=vgprs)
            shape = (BH, L, S, D, it)
            vgpr = (regs, acc)
            out.append(_price_attention(p, c, a.attr("is_causal"), shape, peak, moved, vgpr))
    return out


def _price_attention(
    p: GpuProfile, cfg: TileConfig, causal: bool, shape: tuple[int, ...], peak: float,
    moved: int, predicted: tuple[int, int],
) -> Candidate:  # fmt: skip
    BH, L, S, D, it = shape
    bm, bn, Dp = cfg.block("BLOCK_M"), cfg.block("BLOCK_N"), cfg.block("HEAD_DIM")
    bps, limiter = occupancy(p, cfg.num_warps, cfg.regs_per_thread, cfg.smem_bytes)
    if bps == 0:
        return Candidate(cfg, limiter)
    padded = 4.0 * BH * L * S * Dp * (causal_fraction(L, S, bm) if causal else 1)
    eta = ETA_COMPUTE * min(1.0, bm * bn / (bm + bn) / FULL_REUSE_INTENSITY)
    inflight = 2 * bn * Dp * it * max(1, cfg.num_stages - p.stages_in_smem_offset)
    est = roofline(p, padded, moved, peak, eta, cfg.grid, bps, inflight)
    cfg = replace(cfg, dram_bytes=moved)
    note = f"head dim {D} padded to {Dp}" if Dp != D else ""
    if p.is_amd:
        note += ("; " if note else "") + amd_note(cfg, *predicted)
    return Candidate(finish(cfg, p, est, bps, limiter, note))
