"""LLVM modules compiled in worker processes: same objects, same cache, failures handled."""

from __future__ import annotations

import queue
import subprocess
import sys

import pytest

from backends.llvm import jit as llvm_jit
from backends.llvm import workers as llvm_workers

# A few distinct modules: each scales an array by its own constant.
SCALE = """
define void @scale{n}(ptr noalias %x, i64 %n) {{
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %exit, label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %p = getelementptr float, ptr %x, i64 %i
  %a = load float, ptr %p
  %s = fmul float %a, {n}.0
  store float %s, ptr %p
  %i1 = add i64 %i, 1
  %more = icmp slt i64 %i1, %n
  br i1 %more, label %loop, label %exit
exit:
  ret void
}}
"""
TEXTS = [SCALE.format(n=n) for n in range(2, 8)]


pytestmark = pytest.mark.usefixtures("private_cache")


def _feed_all(texts: list[str]) -> tuple[dict[int, bytes], list[BaseException]]:
    """Everything through one worker (no race with this process for the texts)."""
    todo: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    for i in range(len(texts)):
        todo.put(i)
    todo.put(None)  # then stop
    objects: dict[int, bytes] = {}
    errors: list[BaseException] = []
    llvm_workers._feed(list(texts), todo, objects, errors)
    return objects, errors


@pytest.mark.usefixtures("cpu")  # a worker compiles for the CPU the environment selects
def test_a_worker_compiles_the_same_objects_into_the_same_cache(private_cache):
    before = llvm_jit.STATS["compiled"]
    objects, errors = _feed_all(TEXTS)
    assert not errors
    assert llvm_jit.STATS["compiled"] == before + len(TEXTS)  # counted here, built there
    for i, text in enumerate(TEXTS):
        assert llvm_jit.cached_object(text) == objects[i]  # the worker filled our cache
        assert llvm_jit.target_machine().emit_object(llvm_jit.optimize(text)) == objects[i]
    lib = llvm_jit.NativeLibrary([objects[3]])
    assert lib.address("scale5")


def test_compile_all_shares_misses_and_keeps_order(monkeypatch):
    monkeypatch.setattr(llvm_workers, "MIN_SHARED_IR_CHARS", 0)
    monkeypatch.setenv("TILEFUSE_COMPILE_JOBS", "2")
    started = []
    real = llvm_workers._start
    monkeypatch.setattr(llvm_workers, "_start", lambda: started.append(1) or real())
    llvm_jit.compile_object(TEXTS[0])  # one hit, the rest misses
    objects = llvm_workers.compile_all(TEXTS)
    assert started == [1]
    assert objects == [llvm_jit.cached_object(t) for t in TEXTS]


def test_small_or_single_job_compiles_stay_in_this_process(monkeypatch):
    monkeypatch.setattr(llvm_workers, "_start", lambda: pytest.fail("started a worker"))
    monkeypatch.setenv("TILEFUSE_COMPILE_JOBS", "2")
    llvm_workers.compile_all(TEXTS)  # under MIN_SHARED_IR_CHARS
    monkeypatch.setattr(llvm_workers, "MIN_SHARED_IR_CHARS", 0)
    monkeypatch.setenv("TILEFUSE_COMPILE_JOBS", "1")
    llvm_workers.compile_all([SCALE.format(n=n) for n in range(10, 14)])


def test_invalid_ir_in_a_worker_raises_like_compile_object():
    bad = "define i32 @f() {\n  ret i64 0\n}\n"
    with pytest.raises(ValueError) as in_process:
        llvm_jit.compile_object(bad)
    _, errors = _feed_all([TEXTS[0], bad])
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    assert str(errors[0]) == str(in_process.value)


def test_a_worker_that_dies_hands_its_text_back(monkeypatch, caplog):
    def dies() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-c", "import sys; sys.exit(3)"]
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    monkeypatch.setattr(llvm_workers, "_start", dies)
    todo: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    for i in range(3):
        todo.put(i)
    objects: dict[int, bytes] = {}
    llvm_workers._feed(list(TEXTS), todo, objects, [])
    assert not objects and todo.qsize() == 3  # the one it took is back in the queue
    assert "LLVM worker failed" in caplog.text

    monkeypatch.setattr(llvm_workers, "MIN_SHARED_IR_CHARS", 0)
    monkeypatch.setenv("TILEFUSE_COMPILE_JOBS", "2")
    texts = [SCALE.format(n=n) for n in range(20, 24)]
    assert llvm_workers.compile_all(texts) == [llvm_jit.cached_object(t) for t in texts]


def test_a_worker_that_cannot_start_leaves_everything_to_this_process(monkeypatch, caplog):
    def cannot_start() -> subprocess.Popen[bytes]:
        raise OSError("no processes left")

    monkeypatch.setattr(llvm_workers, "_start", cannot_start)
    monkeypatch.setattr(llvm_workers, "MIN_SHARED_IR_CHARS", 0)
    monkeypatch.setenv("TILEFUSE_COMPILE_JOBS", "2")
    texts = [SCALE.format(n=n) for n in range(30, 34)]
    assert llvm_workers.compile_all(texts) == [llvm_jit.cached_object(t) for t in texts]
    assert "cannot start an LLVM worker (no processes left)" in caplog.text


def test_compile_jobs_must_be_a_positive_integer(monkeypatch):
    from compiler.core import config

    monkeypatch.setenv("TILEFUSE_COMPILE_JOBS", "0")
    with pytest.raises(ValueError, match="TILEFUSE_COMPILE_JOBS must be an integer >= 1"):
        config.load()


def test_texts_compile_while_submitted_and_come_back_in_order(monkeypatch):
    monkeypatch.setattr(llvm_workers, "MIN_SHARED_IR_CHARS", 2 * len(TEXTS[0]))
    monkeypatch.setenv("TILEFUSE_COMPILE_JOBS", "2")
    jobs = llvm_workers.Compiles()
    jobs.submit(TEXTS[0])
    assert not jobs.feeders  # under the threshold: nothing started
    jobs.submit(TEXTS[0])  # a duplicate counts once
    assert not jobs.feeders
    jobs.submit(TEXTS[1])
    assert len(jobs.feeders) == 1  # one worker for the second CPU
    texts = list(reversed(TEXTS))
    assert jobs.objects(texts) == [llvm_jit.cached_object(t) for t in texts]
    assert not any(t.is_alive() for t in jobs.feeders)


def test_a_dropped_or_idle_compiles_stops_its_workers(monkeypatch):
    import gc

    monkeypatch.setattr(llvm_workers, "MIN_SHARED_IR_CHARS", 0)
    monkeypatch.setenv("TILEFUSE_COMPILE_JOBS", "2")
    monkeypatch.setattr(llvm_workers, "IDLE_SECONDS", 60.0)
    jobs = llvm_workers.Compiles()
    jobs.submit(SCALE.format(n=40))
    feeder = jobs.feeders[0]
    del jobs  # rendered, never loaded
    gc.collect()
    feeder.join(timeout=10)
    assert not feeder.is_alive()

    monkeypatch.setattr(llvm_workers, "IDLE_SECONDS", 0.05)
    jobs = llvm_workers.Compiles()
    jobs.submit(SCALE.format(n=41))
    jobs.feeders[0].join(timeout=10)  # idle: stopped by itself
    assert not jobs.feeders[0].is_alive()
    late = [SCALE.format(n=n) for n in range(42, 45)]
    for text in late:
        jobs.submit(text)  # this process compiles them
    texts = [SCALE.format(n=41), *late]
    assert jobs.objects(texts) == [llvm_jit.cached_object(t) for t in texts]
