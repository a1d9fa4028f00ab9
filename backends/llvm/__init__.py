"""The `llvm` backend: native CPU code through llvmlite (docs/llvm_backend.md).

`render.lay_out` and `render.render` turn a schedule into an `LlvmProgram` (`runtime`): a
readable Python driver plus LLVM modules, compiled for this CPU (`jit`), cached on disk
and, for artifacts, linked into a shared library (`aot`).
"""
