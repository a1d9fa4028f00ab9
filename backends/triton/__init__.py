"""The `triton` backend: every kernel as Triton source (`render.render_schedule`), run on a
CUDA/ROCm device or under the Triton interpreter, and compiled offline for GPU targets
(`targets`, docs/triton_targets.md)."""
