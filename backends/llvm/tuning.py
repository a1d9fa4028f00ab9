"""Choices measured on this host, kept in one tuning file per CPU.

    choice = decide("gemm", "m=128 k=512 n=1536 x=row bias=- into=slot",
                    {"native": make_native, "onednn": make_onednn}, default="onednn")
    choice.choice, choice.why          # "native", "measured" (or "cached", "default")

Note [Measured choices]
Which GEMM is faster for a shape depends on the CPU more than on the shape: our native
register tiles beat a library's packed GEMM on small shapes, whose library call costs more
than the arithmetic, and on some large ones with AVX-512; with AVX2 the library wins most.
Attention is the same. A rule written on one host is wrong on another, so a choice with more
than one good answer is timed here, on the shape the model has, the first time a compile
meets it: each candidate is built (the native one is the very module the program would call),
warmed up and run in turns, and its fastest run is its time. The fastest run, not the median:
on a shared machine the median of the same GEMM moves far more between repeats than its
fastest run does. A candidate must beat the analytic default by KEEP_DEFAULT to replace it: a
GEMM timed alone is not the GEMM inside the program (its operands come from other kernels'
caches, other kernels' threads come and go), and with a margin of a few per cent the measured
choices made programs slower than the defaults. For the same reason the two libraries are
not both candidates: MKL's packed GEMM, close to oneDNN's when timed alone, made programs far
slower than oneDNN's in them on an AMD CPU, so the library is the vendor's (Note [Which GEMM
library] in backends.llvm.gemm), or TILEFUSE_GEMM's. The measurements are in
benchmarks/RESULTS.md.

The answer is appended to a tuning file of this CPU, `TILEFUSE_CACHE_DIR/tuning/<cpu>.jsonl`:
one JSON object a line (the CPU, the kind of choice, the shape, each candidate's time in
microseconds, the choice), readable and diff-able, which later compiles read instead of timing
(`why` "cached"), and which `tilefuse tune` fills ahead of time. The CPU is its model, its
instruction-set flags, the level compiled for (TILEFUSE_CPU) and the threads kernels run on:
a choice timed on 2 threads says nothing of 16, and code for x86-64-v3 is another candidate
than native code. TILEFUSE_TUNE=0 takes the analytic default everywhere and reads no file
(`why` "default"): the tests do, so generated code does not depend on the host's timings.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.llvm.aot import cpu_fields, host_fingerprint
from compiler.core import config
from compiler.core.version import __version__

log = logging.getLogger("tilefuse.llvm")

KEEP_DEFAULT = 0.10
"""A candidate must be this much faster (a fraction of the default's time) to replace the
analytic default."""

RUNS = 8
"""Timed runs of each candidate at most, after WARMUP runs, taken in turns."""
WARMUP = 1
BUDGET_S = 0.05
"""At most about this long timing one choice: a slow shape gets fewer runs (at least 5)."""

Runner = Callable[[], object]
"""One run of a candidate, on buffers it made once."""


@dataclass(frozen=True)
class Choice:
    """What one choice took: `kind` ("gemm" or "attention"), the `shape` it was made for, the
    `choice` (a candidate's name), `why` ("measured", "cached" from the tuning file, or
    "default"), each candidate's time in microseconds when timed (its fastest run), and the
    analytic `default`."""

    kind: str
    shape: str
    choice: str
    why: str
    default: str
    times_us: Mapping[str, float] = field(default_factory=dict)

    def timed(self) -> str:
        """The candidates' times, fastest first: `onednn 1 ms, native 1.52 ms` ("" untimed)."""
        ranked = sorted(self.times_us.items(), key=lambda kv: kv[1])
        return ", ".join(f"{name} {us / 1e3:.3g} ms" for name, us in ranked)

    def describe(self) -> str:
        """`onednn (measured: onednn 1 ms, native 1.52 ms)`."""
        timed = self.timed()
        return f"{self.choice} ({self.why}: {timed})" if timed else f"{self.choice} ({self.why})"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], why: str | None = None) -> Choice:
        """The `Choice` of `to_dict()`, or of a tuning file's line (with `why`)."""
        times = {k: float(v) for k, v in d.get("times_us", {}).items()}
        return cls(d["kind"], d["shape"], d["choice"], why or d["why"], d["default"], times)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "shape": self.shape,
            "choice": self.choice,
            "why": self.why,
            "default": self.default,
            "times_us": {k: round(v, 1) for k, v in self.times_us.items()},
        }


def cpu() -> dict[str, Any]:
    """This CPU as a tuning file is keyed: its model, the instruction-set level compiled for,
    the threads kernels run on, and a digest of its model and flags
    (`llvm_aot.host_fingerprint`)."""
    fields = cpu_fields()
    flags = set(fields.get("flags", "").split())
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return {
        "model": fields.get("model name", "unknown CPU"),
        "family": fields.get("cpu family", "?"),
        "model_id": fields.get("model", "?"),
        "isa": isa,
        "level": config.load().cpu,
        "threads": config.num_threads(),
        "fingerprint": host_fingerprint(),
    }


def cpu_label(c: Mapping[str, Any]) -> str:
    """`AMD EPYC (family 25 model 17, avx512), native, 2 threads` for the CPU `c` (`cpu()`)."""
    return (
        f"{c['model']} (family {c['family']} model {c['model_id']}, {c['isa']}), "
        f"{c['level']}, {c['threads']} threads"
    )


def tuning_file() -> Path:
    """This CPU's tuning file, under TILEFUSE_CACHE_DIR:
    `tuning/<model>-f<family>m<model>-<digest>-<level>-<threads>t.jsonl`."""
    c = cpu()
    model = re.sub(r"[^a-z0-9]+", "-", c["model"].lower()).strip("-") or "cpu"
    name = f"{model}-f{c['family']}m{c['model_id']}-{c['fingerprint'][:8]}-{c['level']}"
    return config.load().cache_dir / "tuning" / f"{name}-{c['threads']}t.jsonl"


class TuningFile:
    """The entries of one tuning file, read once, appended to as choices are timed. A line
    that does not parse is skipped with a warning (the file is a cache: timing again is the
    worst that can happen)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    key = (str(entry["kind"]), str(entry["shape"]))
                    str(entry["choice"])
                except (ValueError, KeyError, TypeError):
                    log.warning("%s:%d: not a tuning entry, skipped", path, number)
                    continue
                self.entries[key] = entry  # the last line for a shape wins

    def get(self, kind: str, shape: str) -> dict[str, Any] | None:
        return self.entries.get((kind, shape))

    def add(self, entry: dict[str, Any]) -> None:
        """Keep `entry` and append it to the file as one line."""
        with self._lock:
            self.entries[(entry["kind"], entry["shape"])] = entry
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as f:
                    f.write(json.dumps(entry, sort_keys=True) + "\n")
            except OSError as e:  # a read-only cache: the choice still holds in this process
                log.warning("cannot write the tuning file %s: %s", self.path, e)


@functools.cache
def _open(path: Path) -> TuningFile:
    return TuningFile(path)


def current() -> TuningFile:
    """This CPU's tuning file (read once per process and path)."""
    return _open(tuning_file())


_refresh = threading.local()


@contextlib.contextmanager
def retune() -> Iterator[None]:
    """Inside `with retune():` every choice is timed again, whatever the tuning file holds
    (`tilefuse tune --again`)."""
    _refresh.on = True
    try:
        yield
    finally:
        _refresh.on = False


def pending(kind: str, shape: str) -> bool:
    """Whether `decide` would time the choice for `shape` now (tuning on, and the tuning file
    has none, or `retune`)."""
    if not config.load().tune:
        return False
    return getattr(_refresh, "on", False) or current().get(kind, shape) is None


def decide(
    kind: str,
    shape: str,
    candidates: Mapping[str, Callable[[], Runner]],
    default: str,
    *,
    measure: bool = True,
) -> Choice:
    """The candidate to take for `shape`: the analytic `default` under TILEFUSE_TUNE=0 or with
    one candidate; else the tuning file's choice when it has one among `candidates`; else
    each candidate timed (`candidates[name]()` builds it and returns one run) and the fastest
    kept, unless it beats the default by less than KEEP_DEFAULT (Note [Measured choices]).
    A candidate that fails to build or run is left out (logged). Without `measure`, the
    default where the tuning file has no choice."""
    assert default in candidates, (default, candidates)
    if not config.load().tune or len(candidates) == 1:
        return Choice(kind, shape, default, "default", default)
    store = current()
    kept = store.get(kind, shape)
    if kept is not None and kept["choice"] in candidates and not getattr(_refresh, "on", False):
        return Choice.from_dict({**kept, "default": default}, why="cached")
    if not measure:
        return Choice(kind, shape, default, "default", default)
    times = _time(kind, shape, candidates)
    if default not in times:
        return Choice(kind, shape, default, "default", default, times)
    best = min(times, key=times.__getitem__)
    if times[best] > times[default] * (1 - KEEP_DEFAULT):
        best = default
    store.add(entry(cpu(), kind, shape, times, best, default))
    log.info("tuned %s %s: %s", kind, shape, best)
    return Choice(kind, shape, best, "measured", default, times)


def entry(
    c: Mapping[str, Any],
    kind: str,
    shape: str,
    times_us: Mapping[str, float],
    choice: str,
    default: str,
) -> dict[str, Any]:
    """A line of a tuning file: the choice made for `shape` on the CPU `c` (`cpu()`)."""
    return {
        "cpu": cpu_label(c),
        "kind": kind,
        "shape": shape,
        "times_us": {k: round(float(v), 1) for k, v in times_us.items()},
        "choice": choice,
        "default": default,
        "tilefuse": __version__,
        "date": datetime.date.today().isoformat(),
    }


def _time(
    kind: str, shape: str, candidates: Mapping[str, Callable[[], Runner]]
) -> dict[str, float]:
    """Each candidate's time in microseconds: the fastest of its runs, timed in turns (Note
    [Measured choices]: the fastest, not the median)."""
    runs: dict[str, Runner] = {}
    for name, build in candidates.items():
        try:
            runs[name] = build()
            for _ in range(WARMUP):
                runs[name]()
        except Exception as e:  # a candidate that cannot run here is not a choice
            why = f"{type(e).__name__}: {e}"
            log.warning("%s %s: candidate %s left out (%s)", kind, shape, name, why)
            runs.pop(name, None)
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    for i in range(RUNS):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
        if i >= 4 and time.perf_counter() - start > BUDGET_S:
            break
    return {name: round(min(ts) * 1e6, 1) for name, ts in times.items()}


@dataclass(frozen=True)
class Choices:
    """The choices one program took, per extern call: printable, and `to_dict()`."""

    rows: tuple[tuple[str, Choice], ...]
    cpu: Mapping[str, Any]
    path: Path | None = None  # the tuning file they were read from or written to

    def __str__(self) -> str:
        head = f"choices on {cpu_label(self.cpu)}"
        if self.path is not None:
            head += f"; tuning file {self.path}"
        if not self.rows:
            return head + "\n(none: no GEMM of a weight with more than one row, no attention)"
        table = [("call", "kind", "shape", "choice", "why", "default", "fastest runs")]
        for call, ch in self.rows:
            table.append(
                (call, ch.kind, ch.shape, ch.choice, ch.why, ch.default, ch.timed() or "-")
            )
        widths = [max(len(row[i]) for row in table) for i in range(6)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row[:6], widths, strict=True))
            + "  "
            + row[6]
            for row in table
        ]
        return "\n".join([head, *lines])

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": dict(self.cpu),
            "tuning_file": str(self.path) if self.path else None,
            "choices": [{"call": call, **ch.to_dict()} for call, ch in self.rows],
        }


@dataclass(frozen=True)
class Tuned:
    """What the `tune` stage decided for one program: how each GEMM of a weight and each
    attention runs, by shape (`WeightGemm.key`, `attention.key`), with the `Choice` where
    there was one to make."""

    shapes: Mapping[str, tuple[str, Choice | None]]
    bodies: Mapping[str, str] = field(default_factory=dict)  # the candidates' IR by symbol

    def __str__(self) -> str:
        lines = [f"{len(self.shapes)} shape(s)"]
        for key, (how, choice) in self.shapes.items():
            lines.append(f"  {key}: {choice.describe() if choice else how}")
        return "\n".join(lines)
