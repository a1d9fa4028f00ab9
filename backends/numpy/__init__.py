"""The `numpy` backend: one readable NumPy function per kernel (`kernels.render_schedule`),
checked kernel by kernel against the graph-level reference (`compiler.core.reference`)."""
