"""What a compiled Triton binary uses, read without a GPU: registers, spilled bytes and
tensor-core opcodes from a cubin (the cuobjdump bundled with Triton: resource usage and SASS),
or from an AMDGCN listing's kernel metadata (VGPRs/AGPRs, spills, private segment, MFMA ops).
Used by backends/triton/targets.py.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

NV_BIN = Path(importlib.util.find_spec("triton").origin).parent / "backends" / "nvidia" / "bin"
CUOBJ_RE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
NV_MMA = ("HMMA", "HGMMA", "UTCHMMA", "UTCQMMA", "IMMA")


def cuobjdump(cubin: bytes, *flags: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        cmd = [str(NV_BIN / "cuobjdump"), *flags, f.name]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def nvidia_resources(cubin: bytes) -> dict[str, Any]:
    m = CUOBJ_RE.search(cuobjdump(cubin, "--dump-resource-usage"))
    if m is None:
        raise RuntimeError("cuobjdump printed no resource usage")
    regs, stack, _, local = map(int, m.groups())
    sass = cuobjdump(cubin, "-sass")
    ops = {op: n for op in NV_MMA if (n := len(re.findall(rf"\b{op}\b", sass)))}
    spill_ops = len(re.findall(r"\b(STL|LDL)\b", sass))
    tf32 = len(re.findall(r"\b[A-Z]*MMA\S*\.TF32\b", sass))
    return {"regs": regs, "spill_bytes": max(stack, local), "spill_ops": spill_ops,
            "mma_ops": ops, "tf32_ops": tf32}  # fmt: skip


AMD_KEYS = (".vgpr_count", ".agpr_count", ".sgpr_count", ".vgpr_spill_count",
            ".sgpr_spill_count", ".private_segment_fixed_size")  # fmt: skip


def amd_resources(amdgcn: str) -> dict[str, Any]:
    vals = {}
    for k in AMD_KEYS:
        m = re.search(re.escape(k) + r":\s*(\d+)", amdgcn)
        vals[k] = int(m.group(1)) if m else 0
    occ = re.search(r";\s*Occupancy:\s*(\d+)", amdgcn)
    mfma = len(re.findall(r"\bv_mfma_\w+", amdgcn))
    tf32 = len(re.findall(r"\bv_mfma_\w*xf32\b", amdgcn))
    spills = 4 * (vals[".vgpr_spill_count"] + vals[".sgpr_spill_count"])
    return {
        "regs": vals[".vgpr_count"] + vals[".agpr_count"],
        "spill_bytes": max(spills, vals[".private_segment_fixed_size"]),
        "spill_ops": vals[".vgpr_spill_count"] + vals[".sgpr_spill_count"],
        "mma_ops": {"v_mfma": mfma} if mfma else {},
        "tf32_ops": tf32,
        "llvm_occupancy": int(occ.group(1)) if occ else 0,
    }
