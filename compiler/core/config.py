"""The one place tilefuse reads environment variables.

TILEFUSE_DEBUG=0..4   1: compile summary and timings; 2: IR after each pass; 3: generated source;
                      4: every rewrite that fires.
TILEFUSE_DUMP=dir     write the IR after each pass and the generated sources into dir.
TILEFUSE_LOG=a,b      enable named loggers (`tilefuse.<name>`: fold, rewrite, passes, ...).
TILEFUSE_CACHE_DIR    where compiled artifacts are cached (default ~/.cache/tilefuse).
TILEFUSE_NUM_THREADS  threads for the llvm backend's parallel kernels (default: the CPUs this
                      process may run on).
TILEFUSE_COMPILE_JOBS processes that compile LLVM modules at once on a cold compile (default:
                      the CPUs this process may run on; 1 keeps it in this process).
TILEFUSE_GEMM         the llvm backend's library for GEMMs with a weight: mkl, onednn or auto
                      (default: by CPU vendor, Note [Which GEMM library] in backends.llvm.gemm).
TILEFUSE_CPU          the CPU the llvm backend compiles for: native (default: this CPU, all it
                      has), or an x86-64 level this CPU has: x86-64-v3 (AVX2 and FMA, 256-bit
                      vectors) or x86-64-v4 (AVX-512), to run the code path of a smaller CPU
                      here (Note [Compiling for an x86-64 level] in backends.llvm.jit).
TILEFUSE_TUNE         1 (default): choices with more than one good answer (which GEMM for a
                      shape) are timed on this host the first time a compile meets them and
                      kept in a tuning file per CPU under TILEFUSE_CACHE_DIR/tuning; 0: the
                      analytic defaults, nothing timed or read (generated code is then the
                      same on every host of one instruction set). Note [Measured choices]
                      in backends.llvm.tuning.

A value it cannot use is a `ConfigError` naming the variable, what it holds and what it may
hold, raised where the setting is first read: never ignored, never a stray ValueError.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from compiler.core.errors import ConfigError

WINOGRAD_SCRATCH_BYTES = 16 << 20
"""The most bytes the llvm backend's Winograd F(2x2,3x3) convolutions keep their transformed
input V ([16, C, tiles]) and GEMM products M ([16, OC, tiles], float32) in together: over it
(or over WINOGRAD_SCRATCH_INPUTS) they run in 2 or 4 groups of transform rows, then in chunks
of tiles (Notes [Winograd in groups of rows] and [Winograd in chunks of tiles] in
`backends.llvm.winograd`). Read when a program is rendered. Groups cost a few per cent of the
convolution, chunks more."""

WINOGRAD_SCRATCH_INPUTS = 4
"""V and M together take at most this many times a Winograd convolution's input: for the
examples' 320 channels at 32x32, 2 groups of rows (5 MiB)."""


GEMM_LIBRARIES = ("auto", "mkl", "onednn")
CPUS = ("native", "x86-64-v3", "x86-64-v4")
TUNE = ("0", "1")
LOGGERS = ("artifact", "dynamo", "extern", "fold", "fusion", "llvm", "passes", "pipeline",
           "rewrite", "targets", "tiling")  # fmt: skip
"""The loggers TILEFUSE_LOG may name (`tilefuse.<name>`)."""


@dataclass(frozen=True)
class Config:
    debug: int
    dump_dir: Path | None
    log: tuple[str, ...]
    cache_dir: Path
    num_threads: int | None = None
    gemm: str = "auto"
    compile_jobs: int | None = None
    cpu: str = "native"  # TILEFUSE_CPU: the llvm backend's target, native or an x86-64 level
    tune: bool = True  # TILEFUSE_TUNE: time choices on this host (False: analytic defaults)


def load() -> Config:
    env = os.environ
    text = env.get("TILEFUSE_DEBUG", "").strip()
    if text and (not text.isdigit() or int(text) > 4):
        raise ConfigError(f"TILEFUSE_DEBUG must be an integer from 0 to 4, got {text!r}")
    debug = int(text or 0)
    dump = _directory(env, "TILEFUSE_DUMP")
    logs = tuple(x.strip() for x in env.get("TILEFUSE_LOG", "").split(",") if x.strip())
    unknown = [name for name in logs if name not in LOGGERS]
    if unknown:
        raise ConfigError(
            f"TILEFUSE_LOG names no logger {', '.join(map(repr, unknown))}; it may name "
            f"{', '.join(LOGGERS)}"
        )
    cache = _directory(env, "TILEFUSE_CACHE_DIR") or str(Path.home() / ".cache" / "tilefuse")
    threads = _count(env, "TILEFUSE_NUM_THREADS")
    jobs = _count(env, "TILEFUSE_COMPILE_JOBS")
    gemm = env.get("TILEFUSE_GEMM", "").strip().lower() or "auto"
    if gemm not in GEMM_LIBRARIES:
        raise ConfigError(f"TILEFUSE_GEMM must be one of {', '.join(GEMM_LIBRARIES)}, got {gemm!r}")
    if env.get("TILEFUSE_ISA"):
        raise ConfigError(
            "TILEFUSE_ISA is not read: set TILEFUSE_CPU (x86-64-v3 compiles for AVX2 on any "
            "CPU that has it)"
        )
    cpu = env.get("TILEFUSE_CPU", "").strip().lower() or "native"
    if cpu not in CPUS:
        raise ConfigError(f"TILEFUSE_CPU must be one of {', '.join(CPUS)}, got {cpu!r}")
    tune = env.get("TILEFUSE_TUNE", "").strip() or "1"
    if tune not in TUNE:
        raise ConfigError(f"TILEFUSE_TUNE must be 0 or 1, got {tune!r}")
    return Config(
        debug,
        Path(dump) if dump else None,
        logs,
        Path(cache),
        threads,
        gemm,
        jobs,
        cpu,
        tune == "1",
    )


def _count(env: os._Environ[str] | dict[str, str], name: str) -> int | None:
    """The integer >= 1 in env[name], None when unset or empty."""
    text = env.get(name, "").strip()
    if text and (not text.isdigit() or int(text) < 1):
        raise ConfigError(f"{name} must be an integer >= 1, got {text!r}")
    return int(text) if text else None


def _directory(env: os._Environ[str] | dict[str, str], name: str) -> str | None:
    """The directory path in env[name] (it may not exist yet), None when unset or empty."""
    text = env.get(name, "").strip()
    if text and Path(text).exists() and not Path(text).is_dir():
        raise ConfigError(f"{name} must name a directory, got {text!r}, which is a file")
    return text or None


def configure_logging(cfg: Config) -> None:
    """Turn on the loggers TILEFUSE_LOG / TILEFUSE_DEBUG ask for (idempotent)."""
    names = set(cfg.log)
    if cfg.debug >= 1:
        names.add("passes")
    if cfg.debug >= 4:
        names.update({"rewrite", "fold"})
    for name in names:
        logger = logging.getLogger(f"tilefuse.{name}")
        logger.setLevel(logging.DEBUG)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
            logger.addHandler(handler)


def num_threads() -> int:
    """Threads for the llvm backend's parallel kernels: TILEFUSE_NUM_THREADS, else the CPUs
    this process may run on."""
    return load().num_threads or len(os.sched_getaffinity(0))
