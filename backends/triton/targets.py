"""Triton target verification without a GPU, and loading generated Triton modules per mode.

`verify_kernels(kernels, profiles)` (behind `Compiled.verify_targets`) compiles every kernel
of a schedule as the Triton program has it (pointwise and reduction kernels from
backends.triton.render.render_kernel, matmul/conv2d/attention from
backends.triton.render.heavy_module, each launch specialized like Triton's launcher) with
`triton.compile(ASTSource(...), target=GPUTarget(...))` at the kernel's TileConfig for the
profile's target, and reads back what the hardware would allocate:

- NVIDIA: registers and local memory (spills) from `cuobjdump --dump-resource-usage` on the
  cubin, shared memory from `metadata.shared` (Triton's is dynamic, so the cubin says 0),
  tensor-core opcodes from the SASS (`cuobjdump -sass`): HMMA (sm_80/89), HGMMA (sm_90),
  UTCHMMA (sm_100); PTX text is not evidence. TF32 MMAs are counted apart.
- AMD gfx942: VGPRs, spill counts and scratch from the `amdhsa.kernels` metadata in the
  AMDGCN text, LDS from `metadata.shared`, `v_mfma` instructions from the AMDGCN.

Occupancy comes from compiler.core.gpu.occupancy with the profile's limits. Arguments are
specialized the way Triton's launcher does (an int equal to 1 becomes a constexpr, one
divisible by 16 gets a divisibility hint; tensors count as 16-byte aligned; runtime strides
take their contiguous values), so the binary is the one a launch would build. A config that
spills or overflows shared memory goes back to `tile(..., exclude=)`. Results and binaries
are cached on disk under TILEFUSE_CACHE_DIR/triton_targets, keyed by kernel source (names
left out), the helpers it calls, signature, constexprs, options, target and Triton version.
The report types are in backends/triton/target_report.py.

Generated modules are loaded per mode by backends/triton/loader.py (Note [One definition
per mode]); `load_module` is re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from concurrent.futures import as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backends.triton.heavy import REDUCE_OPTIONS
from backends.triton.loader import load_module
from backends.triton.ops import HELPERS
from backends.triton.render import heavy_module, render_kernel
from backends.triton.resources import amd_resources, nvidia_resources
from backends.triton.target_pool import main_hidden, worker_pool
from backends.triton.target_report import Progress, TargetReport, TargetResult
from compiler.core import config
from compiler.core.gpu import GpuProfile, occupancy
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig
from passes.tiling import launch_key, tile

__all__ = ["Launch", "TargetReport", "TargetResult", "compile_launch", "load_module",
           "specialize", "verify_kernels", "verify_spec"]  # fmt: skip

# --- compiling for a target


@dataclass(frozen=True)
class Launch:
    """One kernel launch as a generated module's `arguments(...)` returns it."""

    kernel: Any  # a compiled-mode JITFunction
    args: tuple[Any, ...]
    meta: dict[str, Any]


TORCH_TO_TRITON = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float64": "fp64",
                   "int64": "i64", "int32": "i32", "bool": "i1"}  # fmt: skip


def specialize(kernel: Any, args: tuple[Any, ...], meta: dict[str, Any]) -> tuple:
    """(signature, constexprs, attrs) for ASTSource, as Triton's launcher would specialize."""
    names = list(kernel.arg_names)
    values = dict(zip(names, args, strict=False)) | meta
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, name in enumerate(names):
        v = values[name]
        if name in meta or kernel.params[i].is_constexpr:
            signature[name], constexprs[name] = "constexpr", v
        elif hasattr(v, "dtype") and hasattr(v, "stride"):
            signature[name] = "*" + TORCH_TO_TRITON[str(v.dtype).removeprefix("torch.")]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, bool):
            signature[name] = "i1"
        elif isinstance(v, int):
            if v == 1:
                signature[name], constexprs[name] = "constexpr", 1
                continue
            signature[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: cannot specialize {name}={v!r}")
    return signature, constexprs, attrs


def _target(p: GpuProfile) -> Any:
    from triton.backends.compiler import GPUTarget

    backend, arch, warp = p.triton_target
    return GPUTarget(backend, arch, warp)


def _cache_dir() -> Path:
    d = Path(config.load().cache_dir) / "triton_targets"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cache_path(launch: Launch, p: GpuProfile, options: dict[str, Any]) -> Path:
    """Where the figures of `launch` compiled for `p` with `options` are cached: keyed by the
    kernel source (names left out, so layers share) with the helpers it calls, the
    specialization, options, target and Triton version."""
    import triton

    signature, constexprs, attrs = specialize(launch.kernel, launch.args, launch.meta)
    source = _nameless(launch.kernel) + "".join(_helpers(launch.kernel))
    names = list(launch.kernel.arg_names)  # by position: parameter names carry IR names
    key_text = repr((source, [signature[n] for n in names],
                     [(i, constexprs[n]) for i, n in enumerate(names) if n in constexprs],
                     sorted(attrs.items()), sorted(options.items()), p.triton_target,
                     triton.__version__))  # fmt: skip
    return _cache_dir() / f"{hashlib.sha256(key_text.encode()).hexdigest()[:24]}.json"


def _nameless(kernel: Any) -> str:
    """`kernel`'s source with its name and parameter names (which carry IR value names)
    replaced by positional ones: the same block in every layer is one key."""
    names = {n: f"p{i}" for i, n in enumerate(kernel.arg_names)} | {kernel.__name__: "KERNEL"}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    return pattern.sub(lambda m: names[m.group(1)], kernel.src)


def is_cached(path: Path) -> bool:
    return str(path) in _COMPILED or path.exists()


def compile_launch(launch: Launch, p: GpuProfile, options: dict[str, Any]) -> dict[str, Any]:
    """Compile `launch` for `p` with Triton `options` and read its resources (cached)."""
    import triton
    from triton.compiler import ASTSource

    path = cache_path(launch, p, options)
    if str(path) in _COMPILED:
        return _COMPILED[str(path)] | {"cached": True}
    if path.exists():
        _COMPILED[str(path)] = json.loads(path.read_text())
        return _COMPILED[str(path)] | {"cached": True}
    signature, constexprs, attrs = specialize(launch.kernel, launch.args, launch.meta)
    src = ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=_target(p), options=dict(options))
    info: dict[str, Any] = {"smem_bytes": int(compiled.metadata.shared)}
    info["tmem_cols"] = int(getattr(compiled.metadata, "tmem_size", 0) or 0)
    if p.is_amd:
        info |= amd_resources(compiled.asm["amdgcn"])
        binary, suffix = compiled.asm["hsaco"], ".hsaco"
    else:
        binary, suffix = compiled.asm["cubin"], ".cubin"
        info |= nvidia_resources(binary)
    path.with_suffix(suffix).write_bytes(binary)  # the binary itself, beside its figures
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    _COMPILED[str(path)] = info
    return info | {"cached": False}


_COMPILED: dict[str, dict[str, Any]] = {}  # this process's compiles and disk reads, by path


def _helpers(kernel: Any) -> list[str]:
    """The sources of the module's @triton.jit helpers `kernel` calls (tanh_, to_bf16_, ...):
    part of what it compiles to, so part of its cache key."""
    from triton.runtime.jit import JITFunction

    found = []
    for name, value in sorted(kernel.fn.__globals__.items()):
        called = re.search(rf"\b{re.escape(name)}\(", kernel.src)
        if isinstance(value, JITFunction) and value is not kernel and called:
            found.append(value.src)
    return found


TL_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


# --- pointwise and reduction kernels as the backend renders them


def _canonical(k: Any) -> str:
    """A module holding rendered kernel `k` alone, renamed `kernel` with parameters `p0`,
    `p1`, ...: kernels that differ only in their IR names (the same block in every layer)
    are then one source, one definition and one compile."""
    body = k.source[k.source.index("@triton.jit") :]
    names = {k.name: "kernel"} | {p.name: f"p{i}" for i, p in enumerate(k.params)}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    return KERNEL_MODULE + pattern.sub(lambda m: names[m.group(1)], body)


def _kernel_module() -> str:
    return "import triton\nimport triton.language as tl\n\n\n" + HELPERS + "\n\n"


KERNEL_MODULE = _kernel_module()
FROM_SIGNATURE = {"*" + v: k for k, v in TORCH_TO_TRITON.items()}


def rendered_launch(
    spec: KernelSpec, t: TileConfig, strided: frozenset[str], float_dtype: str
) -> tuple[Launch, dict[str, Any]] | None:
    """The launch of a pointwise or reduction `spec` at tile `t` as the Triton backend renders
    it (backends.triton.render.render_kernel), with the launch options; None for an empty
    domain (never launched). Runtime strides (of `strided` inputs, the graph inputs) take
    their contiguous values, so the binary is the one a launch on contiguous tensors builds."""
    import torch

    k = render_kernel(replace(spec, tile=t), strided, float_dtype)
    if k.grid == 0:
        return None
    module = load_module(_canonical(k), interpret=False)
    args: list[Any] = []
    for p in k.params:
        if p.kind == "stride":
            shape = spec.type_of(p.value).shape
            args.append(math.prod(shape[p.dim + 1 :]))
        else:
            dtype = getattr(torch, FROM_SIGNATURE[p.signature])
            args.append(torch.empty((1,), dtype=dtype, device="meta"))
    meta = {c: (False if c == "BF16_BITS" else v) for c, v in k.constexprs}
    return Launch(module.kernel, tuple(args), meta), {
        "num_warps": k.num_warps,
        "num_stages": k.num_stages,
    }


# --- verification


tiling_log = logging.getLogger("tilefuse.tiling")
COMPILE_OPTIONS = {"enable_fp_fusion": True}  # Triton 3.9's default, pinned for reproducibility
HEAVY = ("matmul", "conv2d", "attention")
ANCHORS = {"matmul": "matmul", "conv2d": "conv2d", "attention": "sdpa"}


@dataclass(frozen=True)
class _Step:
    """One launch to compile: its report name, config label, options, and whether it dots."""

    name: str
    label: str
    launch: Launch
    options: dict[str, Any]
    dot: bool


def _steps(
    spec: KernelSpec, t: TileConfig, strided: frozenset[str], float_dtype: str
) -> tuple[list[_Step], str]:
    """The launches of `spec` at `t` as the Triton program has them (heavy kernels through
    backends.triton.render.heavy_module), and a note."""
    if spec.kind not in HEAVY:
        found = rendered_launch(spec, t, strided, float_dtype)
        if found is None:
            return [], "empty domain: never launched"
        launch, opts = found
        return [_Step(spec.name, t.short, launch, opts | COMPILE_OPTIONS, False)], ""

    source, tensors, note = heavy_module(replace(spec, tile=t), t, strided)
    module = load_module(source, interpret=False)
    steps = []
    for kernel, _, args, meta in module.arguments(*tensors):
        second = kernel.__name__.endswith("_reduce")
        opts = (REDUCE_OPTIONS if second else t.triton_options()) | COMPILE_OPTIONS
        name = spec.name + (".reduce" if second else "")
        label = f"pass 2 of {t.short}" if second else t.short  # 64x64 tiles, 4 warps
        steps.append(_Step(name, label, Launch(kernel, args, meta), opts, not second))
    return steps, note


def _dtype(spec: KernelSpec, float_dtype: str) -> str:
    """The dtype a kernel's math is judged by: its anchor's operands for a dot kernel, else
    the first output's storage."""
    if spec.kind in HEAVY:
        anchor = next(n for n in spec.body if n.op == ANCHORS[spec.kind])
        d = spec.type_of(anchor.inputs[0]).dtype
    else:
        d = spec.type_of(spec.outputs[0]).dtype
    if float_dtype == "float64" and d.is_float:
        return "fp64"
    return TL_NAMES.get(d.value, d.value)


def _result(
    spec: KernelSpec, step: _Step, p: GpuProfile, dtype: str, info: dict[str, Any]
) -> TargetResult:
    warps = step.options["num_warps"]
    blocks, limiter = occupancy(p, warps, info["regs"], info["smem_bytes"], info["tmem_cols"])
    max_w = p.max_warps_per_sm if not p.is_amd else 32  # AMD: 8 waves x 4 SIMDs per CU
    return TargetResult(
        step.name, spec.kind, p.name, p.target_text, step.label, dtype, info["regs"],
        info["spill_bytes"], info["smem_bytes"], p.smem_per_block, blocks,
        round(blocks * warps / max_w, 3), limiter,
        bool(info["mma_ops"]) if step.dot else None, dict(info["mma_ops"]),
        info.get("tf32_ops", 0),
    )  # fmt: skip


def _failed(spec: KernelSpec, p: GpuProfile, config: str, dtype: str, e: Exception) -> TargetResult:
    text = str(e).strip().splitlines()
    why = f"{type(e).__name__}: {text[0] if text else ''}"[:300]
    tiling_log.warning("%s (%s) on %s: cannot compile at %s: %s", spec.name, spec.kind, p.name,
                       config, why)  # fmt: skip
    return TargetResult(spec.name, spec.kind, p.name, p.target_text, config, dtype, 0, 0, 0,
                        p.smem_per_block, 0, 0.0, "", None, error=why)  # fmt: skip


def verify_spec(
    spec: KernelSpec,
    p: GpuProfile,
    retries: int = 6,
    *,
    strided: frozenset[str] = frozenset(),
    float_dtype: str = "float32",
    progress: Progress | None = None,
) -> list[TargetResult]:
    """Compile `spec` for `p` at its TileConfig (or what tiling picks for `p`); a config that
    spills or exceeds shared memory goes back to tiling with it excluded (at most `retries`
    times), and the reason is logged under `tilefuse.tiling`. Heavy kernels (matmul, conv2d,
    attention) compile as their template, pointwise and reduction kernels as the Triton
    backend renders them (`strided`: the inputs read through runtime strides). A kernel that
    cannot be rendered or compiled is a result with `error` set."""
    dtype = _dtype(spec, float_dtype)
    t = spec.tile if spec.tile is not None and spec.tile.gpu == p.name else tile(spec, p)
    excluded: list[TileConfig] = []
    why: list[str] = []
    bounds: dict[str, Any] = {}  # what the compiles measured (Note [Measured bounds])
    while True:
        try:
            steps, note = _steps(spec, t, strided, float_dtype)
        except Exception as e:  # a finding of the report, named by kernel and config
            return [_failed(spec, p, t.short, dtype, e)]
        try:
            results = []
            for step in steps:
                info = compile_launch(step.launch, p, step.options)
                if progress is not None:
                    progress.count(info["cached"])
                results.append(_result(spec, step, p, dtype, info))
        except Exception as e:  # Triton cannot compile this config: another one, as autotuning
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            reason = f"does not compile ({type(e).__name__}: {first})"
            nxt = None
            if len(excluded) < retries:
                tiling_log.info("%s on %s: %s %s; asking tiling again without it", spec.name,
                                p.name, t.short, reason)  # fmt: skip
                why.append(f"{t.short} {reason}")
                excluded.append(t)
                nxt = tile(spec, p, exclude=tuple(excluded), **bounds)
                if launch_key(nxt) in {launch_key(c) for c in excluded}:
                    nxt = None
            if nxt is None:
                return [_failed(spec, p, t.short, dtype, e)]
            t = nxt
            continue
        bad = [r for r in results if r.spill_bytes or r.smem_bytes > r.smem_limit]
        nxt = None
        if bad and len(excluded) < retries:
            r = bad[0]
            reason = (f"spills {r.spill_bytes} B at {r.regs} regs" if r.spill_bytes else
                      f"needs {r.smem_bytes} B smem > {r.smem_limit}")  # fmt: skip
            tiling_log.info("%s on %s: %s %s; asking tiling again without it", spec.name,
                            p.name, t.short, reason)  # fmt: skip
            why.append(f"{t.short} {reason}")
            excluded.append(t)
            if r.smem_bytes > r.smem_limit and t.smem_bytes:
                scale = max(bounds.get("smem_scale", 1.0), r.smem_bytes / t.smem_bytes)
                bounds["smem_scale"] = scale
            if r.spill_bytes and t.regs_per_thread:
                cap = min(bounds.get("max_regs", 10**6), t.regs_per_thread - 1)
                bounds["max_regs"] = cap
            nxt = tile(spec, p, exclude=tuple(excluded), **bounds)
            if launch_key(nxt) in {launch_key(c) for c in excluded}:
                nxt = None  # tiling has nothing else
        if nxt is None:
            retiled = "; ".join(why)
            return [replace(r, retiled=retiled, note=note) for r in results]
        t = nxt


def verify_in_worker(
    spec: KernelSpec, p: GpuProfile, strided: frozenset[str], float_dtype: str, cache: str
) -> tuple[list[TargetResult], int, int, list[str]]:
    """verify_spec in a worker process: (results, compiles, cache reads, retile log lines)."""
    os.environ["TILEFUSE_CACHE_DIR"] = cache  # the caller's, whatever it was at spawn time
    counter = Progress(0, "", echo=False)
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    level = tiling_log.level
    tiling_log.addHandler(handler)
    tiling_log.setLevel(logging.INFO)
    try:
        results = verify_spec(spec, p, strided=strided, float_dtype=float_dtype,
                              progress=counter)  # fmt: skip
    finally:
        tiling_log.removeHandler(handler)
        tiling_log.setLevel(level)
    return results, counter.compiled, counter.cached, messages


def verify_kernels(
    kernels: Any,
    gpus: list[GpuProfile],
    *,
    strided: frozenset[str] = frozenset(),
    float_dtype: str = "float32",
    model: str = "",
    echo: bool = False,
    workers: int | None = None,
) -> TargetReport:
    """Every kernel of `kernels` (KernelSpecs; other entries are skipped) compiled for every
    profile in `gpus` (see `verify_spec`), results in that order (per GPU, per kernel).

    Note [Verifying many kernels]
    Kernels whose launches compile to the same binaries (the same block in every layer: same
    source up to names, config and target) are verified once and the result is shared. The
    rest compile in `workers` processes (default: config.num_threads(), i.e.
    TILEFUSE_NUM_THREADS or the CPUs) when there are at least POOL_MIN of them, one kernel
    with its retiles per task; kernels already in the disk cache are read in this process.
    Progress goes to the `tilefuse.targets` logger, and to stderr with `echo`; retile
    reasons from workers are logged here."""
    specs = [k for k in kernels if isinstance(k, KernelSpec)]
    what = f"{model or 'kernels'} on {','.join(p.name for p in gpus)}"
    progress = Progress(len(specs) * len(gpus), what, echo=echo)
    tasks = [(spec, p) for p in gpus for spec in specs]
    groups: dict[tuple, list[int]] = {}
    cold: set[tuple] = set()
    for i, (spec, p) in enumerate(tasks):
        key, uncached = _first_look(spec, p, strided, float_dtype, i)
        groups.setdefault(key, []).append(i)
        if uncached:
            cold.add(key)
    done: dict[int, list[TargetResult]] = {}

    def finish(key: tuple, results: list[TargetResult]) -> None:
        first, *rest = groups[key]
        done[first] = results
        progress.step()
        for i in rest:  # the same binaries: the representative's figures under its name
            name = tasks[i][0].name
            done[i] = [replace(r, kernel=name + r.kernel[len(tasks[first][0].name) :])
                       for r in results]  # fmt: skip
            progress.cached += len(results)
            progress.step()

    n = workers if workers is not None else config.num_threads()
    pooled = [k for k in groups if k in cold] if n > 1 and len(cold) >= POOL_MIN else []
    futures = {}
    if pooled:
        pool = worker_pool(n)
        cache = str(config.load().cache_dir)
        with main_hidden():  # workers are spawned by these submits
            for key in pooled:
                spec, p = tasks[groups[key][0]]
                job = (spec, p, strided, float_dtype, cache)
                futures[pool.submit(verify_in_worker, *job)] = key
    for key in groups:
        if key not in futures.values():
            spec, p = tasks[groups[key][0]]
            counted = verify_spec(spec, p, strided=strided, float_dtype=float_dtype,
                                  progress=progress)  # fmt: skip
            finish(key, counted)
    for future in as_completed(futures):
        results, compiled, cached, messages = future.result()
        for m in messages:
            tiling_log.info("%s", m)
        progress.compiled += compiled
        progress.cached += cached
        finish(futures[future], results)
    return TargetReport(tuple(r for i in range(len(tasks)) for r in done[i]), model)


def _first_look(
    spec: KernelSpec, p: GpuProfile, strided: frozenset[str], float_dtype: str, i: int
) -> tuple[tuple, bool]:
    """(what identifies `spec`'s binaries on `p` at its first config, whether one of them
    still has to be compiled); a kernel that does not render is its own group."""
    try:
        t = spec.tile if spec.tile is not None and spec.tile.gpu == p.name else tile(spec, p)
        steps, _ = _steps(spec, t, strided, float_dtype)
        paths = tuple(cache_path(s.launch, p, s.options) for s in steps)
    except Exception:  # verify_spec reports it, named
        return ("unrendered", i), False
    return (spec.kind, *map(str, paths)) if paths else ("empty", i), any(
        not is_cached(x) for x in paths
    )


POOL_MIN = 8  # kernels to compile before workers pay off (a worker's first compile: ~4 s)
