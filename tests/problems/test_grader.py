"""Grader behaviour: extraction + tiers, failures recorded not raised, hangs bounded, async."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from rsa.problems import GradeResult, Grader, cluster_answers, cluster_answers_sync, equivalent, grade
from rsa.problems.pool import TaskCrashed, TaskTimeout, WorkerPool

TOWER = "9^{9^{9^{9^{9}}}}"


def test_grade_extracts_from_model_output(grader):
    result = grader.grade("We add them up, so the total is \\boxed{1{,}000}.", "1000")
    assert result == GradeResult(correct=True, extracted="1{,}000", grader="int", error=None)


def test_grade_reports_missing_pieces(grader):
    assert grader.grade(None, "1").error == "no answer"
    assert grader.grade("\\boxed{}", "1").error == "no answer"
    assert grader.grade("\\boxed{1}", None).error == "no gold"
    assert grader.grade("$$", "1", extract=False).error == "no answer"


def test_int_gold_accepts_python_ints(grader):
    assert grader.grade("\\boxed{042}", 42).correct
    assert not grader.grade("\\boxed{420}", 42).correct


def test_module_level_helpers_return_bools():
    assert grade("\\boxed{391}", "391") is True
    assert grade("\\boxed{392}", "391") is False
    assert equivalent("1,000", "1000") is True


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="timeout"):
        Grader(timeout=0)
    with pytest.raises(ValueError, match="unknown answer fallback"):
        Grader(fallbacks=("guess",))
    with pytest.raises(ValueError, match="fork is unsafe"):
        Grader(context="fork")


def test_cache_is_lru_bounded_and_symmetric_pairs_share_an_entry():
    calls = []

    def fake_run(fn, gold, pred, symmetric, rounding, timeout):
        calls.append((gold, pred, symmetric))
        return (gold == "2/4" or pred == "2/4"), None

    with Grader(cache_size=2) as g:
        g._pool.run = fake_run  # no worker process: this test is about bookkeeping only
        assert g.equivalent("1/2", "2/4") and g.equivalent("2/4", "1/2")
        assert len(calls) == 1  # the reversed pair was a cache hit
        g.grade("a+b", "c", extract=False)
        g.grade("a+c", "c", extract=False)  # third distinct pair evicts the oldest
        g.equivalent("1/2", "2/4")
        assert len(calls) == 4
        assert calls[-1][2] is True


# ---- adversarial input: bounded time, False with a reason -------------------------------


@pytest.mark.timeout(60)
def test_exponent_tower_times_out_and_pool_recovers(fast_grader):
    result = fast_grader.grade(f"\\boxed{{{TOWER}}}", "5")
    assert (result.correct, result.grader, result.error) == (False, "math_verify", "timeout")
    # The hung worker was killed and replaced: ordinary grading still works.
    assert fast_grader.grade("\\boxed{1/2}", "0.5").correct


@pytest.mark.timeout(60)
def test_repeated_hang_is_served_from_cache(fast_grader, monkeypatch):
    fast_grader.grade(f"\\boxed{{{TOWER}}}", "7")

    def no_pool(*args, **kwargs):
        raise AssertionError("cache miss: the pool was used again")

    monkeypatch.setattr(fast_grader._pool, "run", no_pool)
    assert fast_grader.grade(f"\\boxed{{{TOWER}}}", "7").error == "timeout"


@pytest.mark.timeout(30)
def test_megabyte_answer_is_too_long_without_parsing(fast_grader, monkeypatch):
    monkeypatch.setattr(fast_grader._pool, "run", lambda *a, **k: pytest.fail("parsed a huge answer"))
    for text in ("\\boxed{" + "1" * 1_000_000 + "}", "\\boxed{" + "x+" * 500_000 + "1}"):
        result = fast_grader.grade(text, "1")
        assert (result.correct, result.grader, result.error) == (False, "none", "too long")
        assert len(result.extracted) < 1100  # recorded cut down, not the whole megabyte
    result = Grader(timeout=1).grade("1" * 1_000_000, "1")  # last-number fallback finds it all
    assert result.error == "too long"


@pytest.mark.timeout(30)
def test_unbalanced_braces_give_no_answer(fast_grader):
    for text in ("\\boxed{\\frac{1}{2", "\\boxed{{{{{1", "\\boxed{" * 1000):
        result = fast_grader.grade(text, "1/2")
        assert (result.correct, result.error) == (False, "no answer"), text[:40]


@pytest.mark.timeout(60)
def test_deep_nesting_is_bounded(fast_grader):
    too_deep = "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}"
    assert fast_grader.grade(too_deep, "1").error == "too long"
    deep = "(" * 400 + "1" + ")" * 400  # under the length limit, so it reaches SymPy
    result = fast_grader.grade(deep, "2", extract=False)
    assert result.correct is False
    assert result.error in {"timeout", "unparsable", "memory limit"}, result


# ---- async API -----------------------------------------------------------------------------


async def test_agrade_matches_grade(grader):
    for pred, gold in [("\\boxed{0.5}", "\\frac12"), ("\\boxed{1000}", "10"), ("\\boxed{2\\sqrt2}", "\\sqrt{8}")]:
        assert await grader.agrade(pred, gold) == grader.grade(pred, gold)
    assert await grader.aequivalent("1/2", "0.5")
    assert not await grader.aequivalent("1/2", "0.25")


@pytest.mark.timeout(60)
async def test_agrade_never_blocks_the_event_loop():
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    with Grader(timeout=1.0) as g:
        task = asyncio.create_task(ticker())
        result = await g.agrade(f"\\boxed{{{TOWER}}}", "3")
        task.cancel()
    assert result.error == "timeout"
    assert ticks > 0  # the loop kept running while a worker was stuck for a full second


async def test_agrade_offloads_huge_text(grader):
    result = await grader.agrade("z" * 200_000 + "\\boxed{12}", "12")
    assert result.correct and result.extracted == "12"


# ---- clustering ----------------------------------------------------------------------------

ANSWERS = ["1/2", "0.5", None, "3", "\\frac{1}{2}", "3.0", "x", "1,000", "1000", "007", "7"]
CLUSTERS = [0, 0, None, 1, 0, 1, 2, 3, 3, 4, 4]


async def test_cluster_answers(grader):
    assert await cluster_answers(ANSWERS, grader=grader) == CLUSTERS
    assert cluster_answers_sync(ANSWERS, grader=grader) == CLUSTERS
    assert await cluster_answers([], grader=grader) == []
    assert await cluster_answers([None, None], grader=grader) == [None, None]


class _CountingGrader:
    """Stands in for Grader: equal iff same first letter, decided only by the counted slow path."""

    def __init__(self):
        self.calls = []

    def quick_equivalent(self, a, b):
        return None

    async def aequivalent(self, a, b):
        self.calls.append((a, b))
        return a[0] == b[0]


async def test_cluster_answers_compares_against_one_representative_per_cluster():
    stub = _CountingGrader()
    answers = ["a1", "a2", "b1", "b2", "c1", "a3"]
    assert await cluster_answers(answers, grader=stub) == [0, 0, 1, 1, 2, 0]
    assert {rep for rep, _ in stub.calls} == {"a1", "b1", "c1"}  # first members only
    assert len(stub.calls) == 1 + 1 + 2 + 2 + 3  # each answer vs the clusters existing then


# ---- the pool itself -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_pool_kills_and_replaces_hung_and_crashed_workers():
    # init=bool: a builtin no-op (picklable without importing this test module) that skips
    # the math-verify warm-up, since these workers only run builtins.
    pool = WorkerPool(1, memory_limit_mb=None, init=bool)
    try:
        pid = pool.run(os.getpid, timeout=30)
        with pytest.raises(TaskTimeout):
            pool.run(time.sleep, 30, timeout=0.5)
        pid2 = pool.run(os.getpid, timeout=30)
        assert pid2 != pid
        with pytest.raises(TaskCrashed):
            pool.run(os._exit, 3, timeout=30)
        assert pool.run(os.getpid, timeout=30) not in (pid, pid2)
        with pytest.raises(ZeroDivisionError):
            pool.run(divmod, 1, 0, timeout=30)  # a task's own error leaves the worker alive
        assert pool.run(abs, -4, timeout=30) == 4
    finally:
        pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.run(abs, 1, timeout=1)


@pytest.mark.timeout(60)
def test_pool_reports_a_worker_that_cannot_start():
    pool = WorkerPool(1, memory_limit_mb=None, init=int)  # int(None) raises in the initializer
    try:
        with pytest.raises(TaskCrashed, match="failed to start"):
            pool.run(abs, -1, timeout=30)
    finally:
        pool.close()


@pytest.mark.timeout(60)
def test_worker_memory_cap_turns_a_runaway_allocation_into_memory_error():
    pool = WorkerPool(1, memory_limit_mb=1024)
    try:
        with pytest.raises(MemoryError):
            pool.run(bytearray, 4 * 1024**3, timeout=30)
        assert pool.run(abs, -2, timeout=30) == 2  # same healthy worker
    finally:
        pool.close()
