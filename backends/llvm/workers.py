"""LLVM on every core: a cold compile's modules shared between this process and worker
processes.

    objects = compile_all(ir_texts)     # == [llvm_jit.compile_object(t) for t in ir_texts]
    jobs = Compiles(); jobs.submit(text)...; jobs.objects(texts)   # as a program renders

llvmlite serializes every call into LLVM behind one lock, so threads cannot share the work.
Workers are fresh interpreters running this module (`python -m backends.llvm.workers`), which
import llvmlite and `backends.llvm.jit` but not torch (about 0.1 s to start). Texts are handed
out one at a time from one queue, in the order they were submitted (`compile_all`: the longest
first): this process compiles the next one while a thread per worker sends it the next, waits
for its object and asks again. Workers compile with
`llvm_jit.compile_object`, so they fill the same disk cache. The llvm renderer submits each
module as it is made (`Compiles`), so workers compile while the rest of the program renders;
this process joins in when the program is loaded.

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
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from backends.llvm import jit as llvm_jit
from compiler.core import config

MIN_SHARED_IR_CHARS = 100_000
"""Below this much IR to compile (~0.1 s of LLVM) everything stays in this process."""

IDLE_SECONDS = 2.0
"""A worker waiting this long for a text stops (this process compiles what comes later)."""

_COMPILED, _CACHED, _FAILED = 0, 1, 2
log = logging.getLogger("tilefuse.llvm")


def compile_all(ir_texts: Sequence[str]) -> list[bytes]:
    """`llvm_jit.compile_object` of each text, in order; cache misses shared across processes."""
    jobs = Compiles()
    for text in sorted(ir_texts, key=len, reverse=True):
        jobs.submit(text)
    return jobs.objects(ir_texts)


class Compiles:
    """Texts compiling in worker processes while the rest of a program is still rendered.

        jobs = Compiles()
        jobs.submit(module.ir)              # as each module is made
        objects = jobs.objects(texts)        # this process joins in; objects in order

    Workers start once MIN_SHARED_IR_CHARS of cache misses wait; a Compiles dropped before
    `objects` stops its workers."""

    def __init__(self) -> None:
        self.jobs = config.load().compile_jobs or config.num_threads()
        self.texts: list[str] = []
        self.index: dict[str, int] = {}
        self.done: dict[int, bytes] = {}
        self.todo: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self.errors: list[BaseException] = []
        self.feeders: list[threading.Thread] = []
        self.waiting = 0  # IR characters submitted as misses
        weakref.finalize(self, _stop, self.todo, self.feeders)

    def submit(self, text: str) -> None:
        if text in self.index:
            return
        i = self.index[text] = len(self.texts)
        self.texts.append(text)
        obj = llvm_jit.cached_object(text)
        if obj is not None:
            self.done[i] = obj
            return
        self.todo.put(i)
        self.waiting += len(text)
        if not self.feeders and self.jobs > 1 and self.waiting >= MIN_SHARED_IR_CHARS:
            args = (self.texts, self.todo, self.done, self.errors)
            self.feeders += [
                threading.Thread(target=_feed, args=args, daemon=True) for _ in range(self.jobs - 1)
            ]
            for t in self.feeders:
                t.start()

    def objects(self, texts: Sequence[str]) -> list[bytes]:
        """The object code of each of `texts` (submitted or not), in order."""
        for text in texts:
            self.submit(text)
        try:
            self._drain()
            _stop(self.todo, self.feeders)
            for t in self.feeders:
                t.join()
            self._drain()  # what a failed worker handed back
        except BaseException as e:
            self.errors.append(e)  # the workers stop at their next text
            raise
        if self.errors:
            raise self.errors[0]
        return [self.done[self.index[t]] for t in texts]

    def _drain(self) -> None:
        """Compile what waits in this process until nothing does (or a worker failed)."""
        while not self.errors:
            try:
                i = self.todo.get_nowait()
            except queue.Empty:
                return
            if i is not None:  # None: a stop meant for a worker that has ended
                self.done[i] = llvm_jit.compile_object(self.texts[i])


def _stop(todo: queue.SimpleQueue[int | None], feeders: list[threading.Thread]) -> None:
    """One stop per worker, after every text already waiting."""
    for _ in feeders:
        todo.put(None)


def _feed(
    texts: list[str],
    todo: queue.SimpleQueue[int | None],
    done: dict[int, bytes],
    errors: list[BaseException],
) -> None:
    """One worker's thread: start it, then send it texts from `todo` until a stop."""
    try:
        proc = _start()
    except OSError as e:
        log.warning("cannot start an LLVM worker (%s): compiling in this process", e)
        return
    assert proc.stdin is not None and proc.stdout is not None
    try:
        while not errors and (i := _next(todo)) is not None:
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
            done[i] = data
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # EOF: the worker exits
        proc.wait()


def _next(todo: queue.SimpleQueue[int | None]) -> int | None:
    """The next text for a worker; None for a stop, or after IDLE_SECONDS with nothing to do
    (a program rendered but never loaded does not keep its workers)."""
    try:
        return todo.get(timeout=IDLE_SECONDS)
    except queue.Empty:
        return None


def _start() -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, TILEFUSE_CACHE_DIR=str(config.load().cache_dir))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "backends.llvm.workers"],
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
