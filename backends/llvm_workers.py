"""LLVM on every core: a cold compile's modules shared between this process and worker
processes.

    objects = compile_all(ir_texts)     # == [llvm_jit.compile_object(t) for t in ir_texts]

llvmlite serializes every call into LLVM behind one lock, so threads cannot share the work.
Workers are fresh interpreters running this module (`python -m backends.llvm_workers`), which
import llvmlite and `backends.llvm_jit` but not torch (about 0.1 s to start). Texts are handed
out one at a time, the longest first, from one queue: this process compiles the next one while
a thread per worker sends it the next, waits for its object and asks again. Workers compile with
`llvm_jit.compile_object`, so they fill the same disk cache.

Only misses of the disk cache are shared, and only when they add up to MIN_SHARED_IR_CHARS:
a warm start or a small kernel never starts a process. TILEFUSE_COMPILE_JOBS (default: the
CPUs this process may run on) is how many processes compile at once; 1 keeps it all in this
process. A worker that fails to start or dies hands its text back and stops (logged under
`tilefuse.llvm`); an IR text that does not verify raises ValueError as `compile_object` does.

Note [Parallel LLVM]
Why not `concurrent.futures.ProcessPoolExecutor`: with spawn, each worker imports the user's
`__main__` again (a script without an `if __name__ == "__main__":` guard runs twice, or the
pool breaks), and fork copies a process whose OpenMP and torch threads are running. A plain
subprocess running this module needs neither.
IR length is a poor guess at LLVM's time (a 12 KB group norm took as long as a 61 KB matmul),
so a static split by length left one process idle: the unet's 23 modules took 0.42 s here and
0.64 s in the worker. Handing them out one at a time from a queue keeps both busy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from backends import llvm_jit
from compiler import config

MIN_SHARED_IR_CHARS = 100_000
"""Below this much IR to compile (~0.1 s of LLVM) everything stays in this process."""

_COMPILED, _CACHED, _FAILED = 0, 1, 2
log = logging.getLogger("tilefuse.llvm")


def compile_all(ir_texts: Sequence[str]) -> list[bytes]:
    """`llvm_jit.compile_object` of each text, in order; cache misses shared across processes."""
    objects: dict[int, bytes] = {}
    misses = []
    for i, text in enumerate(ir_texts):
        obj = llvm_jit.cached_object(text)
        if obj is None:
            misses.append(i)
        else:
            objects[i] = obj
    jobs = min(config.load().compile_jobs or config.num_threads(), len(misses))
    if jobs < 2 or sum(len(ir_texts[i]) for i in misses) < MIN_SHARED_IR_CHARS:
        jobs = 1
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in sorted(misses, key=lambda i: -len(ir_texts[i])):
        todo.put(i)
    errors: list[BaseException] = []
    feeders = [
        threading.Thread(target=_feed, args=(ir_texts, todo, objects, errors), daemon=True)
        for _ in range(jobs - 1)
    ]
    for t in feeders:
        t.start()
    try:
        _drain(ir_texts, todo, objects, errors)
        for t in feeders:
            t.join()
        _drain(ir_texts, todo, objects, errors)  # what a failed worker handed back
    except BaseException as e:
        errors.append(e)  # the feeders stop at their next text
        raise
    if errors:
        raise errors[0]
    return [objects[i] for i in range(len(ir_texts))]


def _drain(
    texts: Sequence[str],
    todo: queue.SimpleQueue[int],
    objects: dict[int, bytes],
    errors: list[BaseException],
) -> None:
    """Compile texts from `todo` in this process until none are left (or a worker failed)."""
    while not errors:
        try:
            i = todo.get_nowait()
        except queue.Empty:
            return
        objects[i] = llvm_jit.compile_object(texts[i])


def _feed(
    texts: Sequence[str],
    todo: queue.SimpleQueue[int],
    objects: dict[int, bytes],
    errors: list[BaseException],
) -> None:
    """One worker's thread: start it, then send it texts from `todo` until none are left."""
    try:
        proc = _start()
    except OSError as e:
        log.warning("cannot start an LLVM worker (%s): compiling in this process", e)
        return
    assert proc.stdin is not None and proc.stdout is not None
    try:
        while not errors:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                break
            try:
                proc.stdin.write(_frame(texts[i].encode()))
                proc.stdin.flush()
                status, data = _read_frame(proc.stdout)
            except (OSError, EOFError) as e:
                todo.put(i)  # this process compiles it
                log.warning("LLVM worker failed (%s): compiling in this process", e)
                return
            if status == _FAILED:
                errors.append(ValueError(data.decode()))
                return
            llvm_jit.STATS["compiled" if status == _COMPILED else "cache_hits"] += 1
            objects[i] = data
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # EOF: the worker exits
        proc.wait()


def _start() -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, TILEFUSE_CACHE_DIR=str(config.load().cache_dir))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "backends.llvm_workers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )


def _frame(data: bytes, status: int | None = None) -> bytes:
    """data with its length (and a status byte first, for the worker's answers)."""
    head = struct.pack("<Q", len(data)) if status is None else struct.pack("<BQ", status, len(data))
    return head + data


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"stream ended after {len(data)} of {size} bytes")
    return data


def _read_frame(stream: IO[bytes]) -> tuple[int, bytes]:
    """A worker's answer: (status, object code or error message)."""
    status, size = struct.unpack("<BQ", _read_exactly(stream, 9))
    return status, _read_exactly(stream, size)


def _serve() -> None:
    """The worker: compiles each framed IR text from stdin, answers each on stdout, to EOF."""
    src, out = sys.stdin.buffer, sys.stdout.buffer
    while head := src.read(8):
        text = _read_exactly(src, struct.unpack("<Q", head)[0]).decode()
        before = llvm_jit.STATS["compiled"]
        try:
            obj = llvm_jit.compile_object(text)
        except ValueError as e:
            out.write(_frame(str(e).encode(), _FAILED))
        else:
            out.write(_frame(obj, _COMPILED if llvm_jit.STATS["compiled"] > before else _CACHED))
        out.flush()


if __name__ == "__main__":
    _serve()
