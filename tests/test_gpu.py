"""GPU profiles: dense figures from gpu_profiles.md, its derived ridge points, name matching."""

from __future__ import annotations

import pytest

from compiler.core.gpu import (
    GB,
    KB,
    MIB,
    PROFILES,
    TB_S,
    TFLOPS,
    default_profile,
    get_profile,
    match_device_name,
    profiles_table,
    resolve_profiles,
)

# gpu_profiles.md section 1, "Derived ceilings": BF16 tensor and FP32 non-tensor ridge points.
RIDGES = {
    "a100": (153, 9.6),
    "h100": (295, 20.0),
    "h200": (206, 13.9),
    "b200": (292, 9.7),
    "l4": (403, 101),
    "rtx4090": (164, 82),
    "mi300x": (247, 30.8),
}


def test_seven_profiles() -> None:
    assert list(PROFILES) == ["a100", "h100", "h200", "b200", "l4", "rtx4090", "mi300x"]
    for p in PROFILES.values():
        assert p.sources.startswith("gpu_profiles.md")
        assert p.triton_target[0] in ("cuda", "hip")


def test_dense_figures_not_sparse() -> None:
    h100 = get_profile("h100")
    assert h100.bf16_flops == pytest.approx(989.4 * TFLOPS)
    assert h100.fp8_flops == pytest.approx(1978.9 * TFLOPS)
    assert h100.tf32_flops == pytest.approx(494.7 * TFLOPS)
    l4 = get_profile("L4")
    assert l4.hbm_bw == pytest.approx(300e9)  # not torch's 3350 GB/s
    assert l4.bf16_flops == pytest.approx(121 * TFLOPS)  # not the sparse 242
    assert get_profile("h200").l2_bytes == 60 * MIB  # not the H100's 50
    assert get_profile("h100").l2_bytes == 50 * MIB
    assert get_profile("rtx4090").bf16_flops == pytest.approx(165.2 * TFLOPS)  # FP32 accumulate
    assert get_profile("a100").fp8_flops is None
    assert get_profile("a100").peak("fp8") == get_profile("a100").bf16_flops
    assert get_profile("b200").hbm_bw == pytest.approx(7.7 * TB_S)
    assert get_profile("h200").hbm_bytes == 141 * GB


def test_limits() -> None:
    assert get_profile("h100").smem_per_block == 232_448
    assert get_profile("a100").smem_per_block == 166_912
    assert get_profile("l4").smem_per_block // KB == 99
    assert get_profile("l4").max_threads_per_sm == 1536
    mi = get_profile("mi300x")
    assert (mi.warp_size, mi.smem_per_block, mi.sm_count) == (64, 64 * KB, 304)
    assert mi.triton_target == ("hip", "gfx942", 64)
    assert get_profile("b200").triton_target == ("cuda", 100, 32)


@pytest.mark.parametrize("name", list(RIDGES))
def test_ridge_points_match_the_table(name: str) -> None:
    bf16, fp32 = RIDGES[name]
    p = get_profile(name)
    assert p.ridge("bf16") == pytest.approx(bf16, abs=0.6)
    assert p.ridge("fp32") == pytest.approx(fp32, rel=0.01, abs=0.06)


def test_unknown_name_lists_the_profiles() -> None:
    with pytest.raises(ValueError, match="known: a100, h100, h200, b200, l4, rtx4090, mi300x"):
        get_profile("v100")


def test_device_names() -> None:
    assert match_device_name("NVIDIA H100 80GB HBM3") == "h100"
    assert match_device_name("NVIDIA H200") == "h200"
    assert match_device_name("NVIDIA A100-SXM4-80GB") == "a100"
    assert match_device_name("NVIDIA L4") == "l4"
    assert match_device_name("NVIDIA L40S") is None
    assert match_device_name("NVIDIA GeForce RTX 4090") == "rtx4090"
    assert match_device_name("AMD Instinct MI300X") == "mi300x"
    assert match_device_name("NVIDIA B200") == "b200"


def test_default_profile_without_a_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        assert default_profile().name == "h100"
    assert [p.name for p in resolve_profiles("h100,mi300x")] == ["h100", "mi300x"]
    assert [p.name for p in resolve_profiles(["l4"])] == ["l4"]


def test_profiles_table_prints_every_profile() -> None:
    text = profiles_table()
    for name in PROFILES:
        assert f"\n{name} " in text
    assert "989.4" in text and "403" in text
