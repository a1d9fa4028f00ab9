"""The IR core, the ground floor every other layer stands on: types and the op table, the
graph, the schedule (kernels and their tiles), GPU profiles, errors and configuration.

It imports nothing of tilefuse's above it (`passes`, `backends`, the rest of `compiler`):
docs/architecture.md has the layers.
"""
