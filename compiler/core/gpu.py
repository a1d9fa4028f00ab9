"""GPU profiles: the figures tiling and `explain` price a schedule with, as plain data.

Every figure comes from `../shared/gpu_profiles.md` (section 1 table, the per-architecture
limits table, and its warnings) and each profile's `sources` says where. Peak rates are
*dense*: NVIDIA's Hopper/Blackwell/L4 datasheets print 2:4-sparse tensor rates, halved here;
the L4 bandwidth is 300 GB/s (torch's `device_info.py` says 3350, which is wrong); the H200
reports a 60 MB L2, not the H100's 50 MB; GeForce FP32-accumulate tensor math runs at half
the FP16-accumulate rate, and Triton's `tl.dot` accumulates in FP32.

    >>> get_profile("h100").ridge("bf16")     # FLOP per byte above which a kernel is compute-bound
    295.3...

Units: bytes, bytes/s, FLOP/s, watts. L2 sizes are the binary megabytes devices report
(deviceQuery prints 41,943,040 bytes for the A100's "40 MB"); HBM capacities are the
datasheets' decimal GB.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

KB = 1024
MIB = 1024 * 1024
GB = 10**9
TB_S = 10**12
TFLOPS = 10**12


@dataclass(frozen=True)
class GpuProfile:
    """One GPU as the cost model sees it. `triton_target` is (backend, arch, warp size)."""

    name: str
    full_name: str
    vendor: str
    backend: str  # "cuda" | "hip"
    arch: int | str  # 80, 89, 90, 100 or "gfx942"
    warp_size: int
    sm_count: int  # SMs (NVIDIA) or CUs (AMD)
    smem_per_block: int  # opt-in maximum per block (LDS per workgroup on AMD)
    smem_per_sm: int
    regs_per_sm: int  # 32-bit registers per SM (AMD: VGPRs x lanes x SIMDs per CU)
    max_threads_per_sm: int
    max_blocks_per_sm: int
    l2_bytes: int
    hbm_bytes: int
    hbm_bw: float  # bytes/s
    fp32_flops: float  # non-tensor FP32
    tf32_flops: float | None
    bf16_flops: float  # BF16/FP16 tensor, FP32 accumulate, dense
    fp8_flops: float | None
    tdp_w: float
    sources: str
    max_regs_per_thread: int = 255
    smem_reserved_per_block: int = 1 * KB  # driver reservation per block (NVIDIA sm_80+)
    l2_domains: int = 1  # separate L2s the grid is spread over (MI300X: 8 XCDs, 4 MB each)
    confidence: str = ""

    @property
    def triton_target(self) -> tuple[str, int | str, int]:
        return (self.backend, self.arch, self.warp_size)

    @property
    def target_text(self) -> str:
        return f"{self.backend}:{self.arch}/{self.warp_size}"

    @property
    def max_warps_per_sm(self) -> int:
        return self.max_threads_per_sm // self.warp_size

    @property
    def is_amd(self) -> bool:
        return self.backend == "hip"

    @property
    def stages_in_smem_offset(self) -> int:
        """S_eff = num_stages - offset (gpu_profiles.md 2.1(c)): wgmma (sm_90) and tcgen05
        (sm_100) read every stage from shared memory; sm_80/89 and gfx942 hold the newest
        stage in registers."""
        return 0 if self.arch in (90, 100) else 1

    def peak(self, math: str) -> float:
        """Peak FLOP/s for a math class: "fp32" (non-tensor), "tf32", "bf16" (also fp16), "fp8".
        A class the GPU lacks falls back to the next slower one it has."""
        table = {
            "fp32": self.fp32_flops,
            "tf32": self.tf32_flops,
            "bf16": self.bf16_flops,
            "fp16": self.bf16_flops,
            "fp8": self.fp8_flops,
        }
        if math not in table:
            raise ValueError(f"unknown math class {math!r}; known: {', '.join(table)}")
        value = table[math]
        if value is None:
            value = self.bf16_flops if math == "fp8" else self.fp32_flops
        return value

    def ridge(self, math: str = "bf16") -> float:
        """Ridge point in FLOP/byte: peak / bandwidth."""
        return self.peak(math) / self.hbm_bw

    def summary(self) -> str:
        fp8 = f"{self.fp8_flops / TFLOPS:g}" if self.fp8_flops else "-"
        return (
            f"{self.name:8} {self.full_name:16} {self.backend}:{self.arch}/w{self.warp_size}  "
            f"{self.sm_count} SMs  smem {self.smem_per_block // KB}/{self.smem_per_sm // KB} KB  "
            f"L2 {self.l2_bytes // MIB} MB  HBM {self.hbm_bytes / GB:g} GB "
            f"@ {self.hbm_bw / TB_S:g} TB/s  fp32 {self.fp32_flops / TFLOPS:g} "
            f"bf16 {self.bf16_flops / TFLOPS:g} fp8 {fp8} TFLOP/s  {self.tdp_w:g} W"
        )


_MD = "gpu_profiles.md section 1"

# fmt: off
PROFILES: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        GpuProfile(
            "a100", "A100-SXM4-80GB", "NVIDIA", "cuda", 80, 32,
            sm_count=108, smem_per_block=166_912, smem_per_sm=164 * KB, regs_per_sm=65_536,
            max_threads_per_sm=2048, max_blocks_per_sm=32, l2_bytes=40 * MIB,
            hbm_bytes=80 * GB, hbm_bw=2.039 * TB_S, fp32_flops=19.5 * TFLOPS,
            tf32_flops=156 * TFLOPS, bf16_flops=312 * TFLOPS, fp8_flops=None, tdp_w=400,
            sources=f"{_MD}: peaks, 2.039 TB/s, 400 W from the A100 datasheet r4 [V]; 108 SMs, "
            "40 MB L2 from deviceQuery [M]; smem from cccl sm_800_traits and torch IS_A100 "
            "(166,912 B) [V]; limits sm_80 from cccl arch_traits [V]. No FP8 MMA.",
            confidence="V/M",
        ),
        GpuProfile(
            "h100", "H100-SXM5-80GB", "NVIDIA", "cuda", 90, 32,
            sm_count=132, smem_per_block=232_448, smem_per_sm=228 * KB, regs_per_sm=65_536,
            max_threads_per_sm=2048, max_blocks_per_sm=32, l2_bytes=50 * MIB,
            hbm_bytes=80 * GB, hbm_bw=3.35 * TB_S, fp32_flops=66.9 * TFLOPS,
            tf32_flops=494.7 * TFLOPS, bf16_flops=989.4 * TFLOPS, fp8_flops=1978.9 * TFLOPS,
            tdp_w=700,
            sources=f"{_MD}: H100 datasheet sparse peaks halved (torch device_info.py "
            "tops_sparsity_factor=2) [V]; 132 SMs, 50 MB L2 spec table [3P] and measured [M]; "
            "232,448 B opt-in smem from torch IS_H100 [V].",
            confidence="V/M",
        ),
        GpuProfile(
            "h200", "H200-SXM-141GB", "NVIDIA", "cuda", 90, 32,
            sm_count=132, smem_per_block=232_448, smem_per_sm=228 * KB, regs_per_sm=65_536,
            max_threads_per_sm=2048, max_blocks_per_sm=32, l2_bytes=60 * MIB,
            hbm_bytes=141 * GB, hbm_bw=4.8 * TB_S, fp32_flops=66.9 * TFLOPS,
            tf32_flops=494.7 * TFLOPS, bf16_flops=989.4 * TFLOPS, fp8_flops=1978.9 * TFLOPS,
            tdp_w=700,
            sources=f"{_MD}: 141 GB, 4.8 TB/s, H100 math rates from the H200 datasheet [V]; "
            "132 SMs and 60 MB L2 as PyTorch reports on a real H200 [M]; 700 W [3P].",
            confidence="V/M",
        ),
        GpuProfile(
            "b200", "B200 (HGX)", "NVIDIA", "cuda", 100, 32,
            sm_count=148, smem_per_block=232_448, smem_per_sm=228 * KB, regs_per_sm=65_536,
            max_threads_per_sm=2048, max_blocks_per_sm=32, l2_bytes=126 * MIB,
            hbm_bytes=180 * GB, hbm_bw=7.7 * TB_S, fp32_flops=75 * TFLOPS,
            tf32_flops=1100 * TFLOPS, bf16_flops=2250 * TFLOPS, fp8_flops=4500 * TFLOPS,
            tdp_w=1000,
            sources=f"{_MD}: HGX B200 column of NVIDIA's Blackwell table, sparse halved "
            "[3P quoting V]; 148 SMs, 126 MB L2 from a torch device dump [M]; smem as H100 "
            "(triton_kernels test mocks) [3P]; 7.7 vs 8.0 TB/s unverified. Plus 256 KB TMEM/SM.",
            confidence="3P/M",
        ),
        GpuProfile(
            "l4", "L4", "NVIDIA", "cuda", 89, 32,
            sm_count=58, smem_per_block=101_376, smem_per_sm=100 * KB, regs_per_sm=65_536,
            max_threads_per_sm=1536, max_blocks_per_sm=24, l2_bytes=48 * MIB,
            hbm_bytes=24 * GB, hbm_bw=0.300 * TB_S, fp32_flops=30.3 * TFLOPS,
            tf32_flops=60 * TFLOPS, bf16_flops=121 * TFLOPS, fp8_flops=242.5 * TFLOPS,
            tdp_w=72,
            sources=f"{_MD}: L4 datasheet sparse peaks halved [V] (torch's L4 entry is wrong: "
            "sparse peaks and 3350 GB/s); 58 SMs from run logs [M]; 48 MB L2, 300 GB/s, 72 W "
            "[3P]; sm_89 limits (100 KB smem/SM, 1,536 threads, 24 blocks) cccl [V].",
            confidence="V/3P",
        ),
        GpuProfile(
            "rtx4090", "RTX 4090", "NVIDIA", "cuda", 89, 32,
            sm_count=128, smem_per_block=101_376, smem_per_sm=100 * KB, regs_per_sm=65_536,
            max_threads_per_sm=1536, max_blocks_per_sm=24, l2_bytes=72 * MIB,
            hbm_bytes=24 * GB, hbm_bw=1.008 * TB_S, fp32_flops=82.6 * TFLOPS,
            tf32_flops=82.6 * TFLOPS, bf16_flops=165.2 * TFLOPS, fp8_flops=330.3 * TFLOPS,
            tdp_w=450,
            sources=f"{_MD}: 128 SMs, 72 MB L2 from a torch dump [M]; 82.6 TF FP32, 1,008 GB/s, "
            "450 W from an Ada whitepaper table [3P]; tensor rates FP32-accumulate (half of "
            "FP16-accumulate, as tl.dot accumulates in FP32) [3P, re-check].",
            confidence="3P/M",
        ),
        GpuProfile(
            "mi300x", "MI300X", "AMD", "hip", "gfx942", 64,
            sm_count=304, smem_per_block=64 * KB, smem_per_sm=64 * KB,
            regs_per_sm=4 * 512 * 64, max_threads_per_sm=2048, max_blocks_per_sm=32,
            l2_bytes=32 * MIB, hbm_bytes=192 * GB, hbm_bw=5.3 * TB_S,
            fp32_flops=163.4 * TFLOPS, tf32_flops=653.7 * TFLOPS, bf16_flops=1307.4 * TFLOPS,
            fp8_flops=2614.9 * TFLOPS, tdp_w=750,
            sources=f"{_MD}: peaks and 5.3 TB/s from ROCm 'MI300 series microarchitecture' [V]; "
            "304 CUs, wave64, 64 KiB LDS, 32 MiB L2 (+256 MiB Infinity Cache), 512 KiB VGPR "
            "from ROCm gpu-arch-specs [V]; 192 GB, 750 W from torch device_info.py and "
            "MLCommons [V]. FP8 is FNUZ.",
            max_regs_per_thread=256,
            smem_reserved_per_block=0,
            l2_domains=8,
            confidence="V",
        ),
    )
}
# fmt: on

GpuSpec = str | GpuProfile | list[str] | tuple[str, ...] | None

# torch.cuda.get_device_name -> profile: patterns over the lower-cased name.
_DEVICE_PATTERNS = (
    ("h200", r"\bh200\b"),
    ("h100", r"\bh100\b"),
    ("b200", r"\bb200\b"),
    ("a100", r"\ba100\b"),
    ("rtx4090", r"\brtx\s*4090\b"),
    ("l4", r"\bl4\b(?!\d)"),
    ("mi300x", r"\bmi300x?\b"),
)


# --- the roofline and occupancy of section 3, used by passes/tiling.py

ETA_MEM = 0.90  # copy measured at 0.90 of peak on H100/H200
DRAM_LATENCY_S = 700e-9  # Little's law latency (600-800 ns)
LAUNCH_S = 3e-6  # per-kernel launch cost, eager (2-5 us)


@dataclass(frozen=True)
class Estimate:
    """A roofline estimate: time, which roof bounds it, waves and the bandwidth fraction."""

    time_s: float
    bound: str
    waves: int
    wave_eff: float
    mem_frac: float


def roofline(
    p: GpuProfile, flops: float, dram_bytes: float, peak: float, eta_c: float, grid: int,
    blocks_per_sm: int, inflight_per_block: float,
) -> Estimate:  # fmt: skip
    """max(compute, memory) + launch, with wave quantization and Little's law."""
    slots = p.sm_count * max(1, blocks_per_sm)
    waves = max(1, math.ceil(grid / slots))
    wave_eff = grid / (waves * slots)
    active_blocks = min(grid, slots)
    t_c = flops / (peak * eta_c * wave_eff) if flops else 0.0
    need = p.hbm_bw * DRAM_LATENCY_S
    mem_frac = min(1.0, active_blocks * inflight_per_block / need)
    t_m = dram_bytes / (p.hbm_bw * ETA_MEM * mem_frac) if dram_bytes else 0.0
    bound = "compute" if t_c > t_m else "memory"
    return Estimate(max(t_c, t_m) + LAUNCH_S, bound, waves, wave_eff, mem_frac)


def occupancy(
    p: GpuProfile, warps: int, regs: int, smem: int, tmem_cols: int = 0
) -> tuple[int, str]:
    """(blocks per SM, limiter) from registers, shared memory, warps, blocks and TMEM
    (gpu_profiles.md 3.2; AMD: VGPR granule 8, waves per SIMD, LDS per CU)."""
    if p.is_amd:
        vgpr = math.ceil(max(regs, 1) / 8) * 8
        waves_per_simd = min(8, 512 // vgpr)
        limits = {"regs": waves_per_simd * 4 // warps}
    else:
        regs_per_warp = math.ceil(max(regs, 1) * p.warp_size / 256) * 256
        limits = {"regs": p.regs_per_sm // (regs_per_warp * warps)}
    limits["smem"] = p.smem_per_sm // (smem + p.smem_reserved_per_block) if smem else 10**6
    limits["warps"] = p.max_warps_per_sm // warps
    limits["blocks"] = p.max_blocks_per_sm
    if tmem_cols:
        limits["tmem"] = 512 // tmem_cols
    limiter = min(limits, key=lambda k: limits[k])
    return max(0, limits[limiter]), limiter


def get_profile(name: str | GpuProfile) -> GpuProfile:
    """The profile called `name` (case-insensitive); a clear error lists the known names."""
    if isinstance(name, GpuProfile):
        return name
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key in PROFILES:
        return PROFILES[key]
    raise ValueError(f"unknown GPU profile {name!r}; known: {', '.join(PROFILES)}")


def match_device_name(device_name: str) -> str | None:
    """The profile name for a device name as torch reports it, or None (e.g. an L40S)."""
    text = device_name.lower().replace("-", " ")
    for name, pattern in _DEVICE_PATTERNS:
        if re.search(pattern, text):
            return name
    return None


def default_profile() -> GpuProfile:
    """The profile of the CUDA/ROCm device present (matched by name), else `h100`."""
    try:
        import torch

        if torch.cuda.is_available():
            matched = match_device_name(torch.cuda.get_device_name(0))
            if matched is not None:
                return PROFILES[matched]
    except Exception:  # no driver, or a broken one: price for the default GPU
        pass
    return PROFILES["h100"]


def resolve_profiles(
    gpu: str | GpuProfile | list[str] | tuple[str, ...] | None,
) -> list[GpuProfile]:
    """`None` -> [default_profile()], "h100" or "h100,mi300x" or a list -> those profiles."""
    if gpu is None:
        return [default_profile()]
    if isinstance(gpu, GpuProfile):
        return [gpu]
    names = gpu.split(",") if isinstance(gpu, str) else list(gpu)
    return [get_profile(n) for n in names if str(n).strip()]


def profiles_table() -> str:
    """The profiles with their figures and ridge points, one per line (`tilefuse profiles`)."""
    head = (
        f"{'name':8} {'gpu':16} {'target':14} {'SMs':>4} {'smem KB':>9} {'L2 MB':>6} "
        f"{'HBM GB':>6} {'TB/s':>6} {'fp32':>6} {'tf32':>7} {'bf16':>7} {'fp8':>7} "
        f"{'W':>5} {'ridge bf16':>10} {'ridge fp32':>10}"
    )
    rows = [head]
    for p in PROFILES.values():

        def tf(x: float | None) -> str:
            return f"{x / TFLOPS:g}" if x else "-"

        rows.append(
            f"{p.name:8} {p.full_name:16} {p.target_text:14}"
            f" {p.sm_count:>4} {f'{p.smem_per_block // KB}/{p.smem_per_sm // KB}':>9}"
            f" {p.l2_bytes // MIB:>6} {p.hbm_bytes / GB:>6g} {p.hbm_bw / TB_S:>6g}"
            f" {tf(p.fp32_flops):>6} {tf(p.tf32_flops):>7} {tf(p.bf16_flops):>7}"
            f" {tf(p.fp8_flops):>7} {p.tdp_w:>5g} {p.ridge('bf16'):>10.0f}"
            f" {p.ridge('fp32'):>10.1f}"
        )
    rows.append("peaks are dense TFLOP/s (sparse datasheet figures halved); sources:")
    rows += [f"  {p.name}: {p.sources}" for p in PROFILES.values()]
    return "\n".join(rows)
