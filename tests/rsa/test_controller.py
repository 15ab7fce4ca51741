"""The Markovian RSA controller on a ScriptedBackend: counts, tails, subsets, failures, events."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

import rsa
from rsa import RSAConfig
from rsa.backends import BackendUnavailable, Generation, GenerationRequest, ScriptedBackend
from rsa.events import CandidateFinished, Done, StageFinished, StageStarted
from rsa.prompts import TRUNCATION_MARKER
from rsa.results import StageFailedError

BLOCK = re.compile(r"--- Candidate (\d+) ---\n(.*?)\n--- End of candidate \1 ---", re.S)


def stage_of(req: GenerationRequest) -> tuple[int, int]:
    _, stage, slot = req.request_id.rsplit("-", 2)
    return int(stage[1:]), int(slot)


def traced(words: int = 12, answer=lambda req: "42"):
    """A responder whose trace names its own request, so tails can be traced back."""

    def respond(req: GenerationRequest) -> str:
        tag = req.request_id
        body = " ".join(f"{tag}:w{i}" for i in range(words))
        return f"<think>\n{body}\n</think>\n\nso \\boxed{{{answer(req)}}}"

    return respond


def jitter(seed: int):
    rng = random.Random(seed)
    return lambda req: rng.uniform(0, 0.01)


async def run(backend, **cfg):
    return await rsa.asolve("What is 6 * 7?", backend=backend, **cfg)


async def test_counts_per_stage():
    backend = ScriptedBackend(traced())
    result = await run(backend, population=5, aggregation_size=3, rounds=3, seed=0)
    assert len(backend.requests) == 5 * 4
    assert [s.index for s in result.stages] == [0, 1, 2, 3]
    assert all(len(s.candidates) == 5 for s in result.stages)
    per_stage = [sum(1 for r in backend.requests if stage_of(r)[0] == t) for t in range(4)]
    assert per_stage == [5, 5, 5, 5]
    assert result.answer == "42" and result.share == 1.0 and result.votes == {"42": 5}
    assert result.completion_tokens == sum(c.completion_tokens for s in result.stages for c in s.candidates)
    assert result.completion_tokens > 0 and not result.stopped_early


async def test_aggregation_prompts_hold_distinct_bounded_tails():
    tail_tokens = 6
    backend = ScriptedBackend(traced(words=20), latency=jitter(1))
    result = await run(backend, population=6, aggregation_size=4, rounds=2, tail_tokens=tail_tokens, seed=3)
    traces = {(c.stage, c.slot): c.trace for s in result.stages for c in s.candidates}
    for req in backend.requests:
        t, slot = stage_of(req)
        if t == 0:
            assert "Candidate" not in req.messages[0].content
            continue
        blocks = BLOCK.findall(req.messages[0].content)
        parents = result.stages[t].candidates[slot].parents
        assert len(blocks) == 4 == len(parents) == len(set(parents))
        for (_, text), parent in zip(blocks, parents):
            assert text.startswith(TRUNCATION_MARKER + "\n")  # 20-word traces are always cut
            kept = text[len(TRUNCATION_MARKER) + 1:].split()
            assert 0 < len(kept) <= tail_tokens
            assert traces[(t - 1, parent)].split()[-len(kept):] == kept  # it is that parent's tail


async def test_short_traces_are_not_marked():
    backend = ScriptedBackend(lambda r: "\\boxed{7}")
    result = await run(backend, population=3, aggregation_size=2, rounds=1, tail_tokens=50, seed=0)
    for req in backend.requests[3:]:
        assert TRUNCATION_MARKER not in req.messages[0].content
    assert all(not c.tail_truncated for c in result.stages[0].candidates)


@pytest.mark.parametrize("barrier", [False, True])
async def test_same_seed_same_subsets_and_prompts(barrier):
    async def once(latency_seed):
        backend = ScriptedBackend(traced(), latency=jitter(latency_seed))
        result = await run(backend, population=6, aggregation_size=3, rounds=2, seed=11, barrier=barrier)
        prompts = sorted((r.request_id, r.messages[0].content, r.seed) for r in backend.requests)
        return [[c.parents for c in s.candidates] for s in result.stages], prompts

    a, b = await once(1), await once(2)  # different timings, same seed
    assert a == b
    other = ScriptedBackend(traced())
    result = await run(other, population=6, aggregation_size=3, rounds=2, seed=12, barrier=barrier)
    assert [[c.parents for c in s.candidates] for s in result.stages] != a[0]


async def test_barrier_and_no_barrier_draw_identical_subsets():
    def parents(result):
        return [[c.parents for c in s.candidates] for s in result.stages]

    r1 = await run(ScriptedBackend(traced(), latency=jitter(5)), population=8, aggregation_size=4, rounds=2, seed=4)
    r2 = await run(ScriptedBackend(traced(), latency=jitter(6)), population=8, aggregation_size=4, rounds=2,
                   seed=4, barrier=True)
    assert parents(r1) == parents(r2)


async def test_seeds_derive_per_request_only_when_seeded():
    seeded = ScriptedBackend(traced())
    await run(seeded, population=3, aggregation_size=2, rounds=1, seed=5)
    seeds = [r.seed for r in seeded.requests]
    assert all(isinstance(s, int) for s in seeds) and len(set(seeds)) == len(seeds)
    unseeded = ScriptedBackend(traced())
    result = await run(unseeded, population=3, aggregation_size=2, rounds=1)
    assert all(r.seed is None for r in unseeded.requests)
    assert isinstance(result.seed, int)  # the subset seed is still recorded


async def test_no_barrier_starts_a_slot_as_soon_as_its_parents_finish():
    # slot 0 of stage 0 is very slow; with K=1 most stage-1 slots do not need it
    def latency(req):
        return 0.5 if stage_of(req) == (0, 0) else 0.01

    free = ScriptedBackend(traced(), latency=latency)
    r = await run(free, population=4, aggregation_size=1, rounds=1, seed=2)
    slow_end = r.stages[0].candidates[0].finished_s
    independent = [c for c in r.stages[1].candidates if c.parents != [0]]
    assert independent and all(c.started_s < slow_end for c in independent)

    locked = ScriptedBackend(traced(), latency=latency)
    r = await run(locked, population=4, aggregation_size=1, rounds=1, seed=2, barrier=True)
    slow_end = r.stages[0].candidates[0].finished_s
    assert all(c.started_s >= slow_end for c in r.stages[1].candidates)


async def test_failed_rollouts_are_excluded_and_recorded():
    def respond(req):
        t, slot = stage_of(req)
        if t == 0 and slot in (1, 3):
            raise BackendUnavailable("replica down")
        if t == 0 and slot == 4:
            return Generation(content="", finish_reason="error", error="server aborted")
        return traced()(req)

    backend = ScriptedBackend(respond)
    result = await run(backend, population=6, aggregation_size=4, rounds=1, seed=1)
    stage0 = result.stages[0].candidates
    assert [c.slot for c in stage0 if not c.live] == [1, 3, 4]
    assert "replica down" in stage0[1].error and stage0[1].finish_reason == "error"
    assert stage0[4].error == "server aborted"
    for cand in result.stages[1].candidates:
        assert len(cand.parents) == 3 and not {1, 3, 4} & set(cand.parents)  # only 3 live
    assert result.stages[0].share == 1.0 and result.stages[0].votes == {"42": 3}


async def test_all_failed_stage_raises_with_partial_result():
    def respond(req):
        if stage_of(req)[0] == 1:
            raise BackendUnavailable("engine stopped")
        return traced()(req)

    with pytest.raises(StageFailedError, match="every rollout of stage 1 failed.*engine stopped") as info:
        await run(ScriptedBackend(respond), population=3, aggregation_size=2, rounds=2, seed=0)
    partial = info.value.partial
    assert partial is not None and [s.index for s in partial.stages] == [0, 1]
    assert all(c.live for c in partial.stages[0].candidates)
    assert partial.stop_reason == "error" and partial.answer == "42"


async def test_cancellation_cancels_every_rollout():
    started = asyncio.Event()
    cancelled = []

    async def respond(req):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(req.request_id)
            raise
        return "never"

    task = asyncio.ensure_future(run(ScriptedBackend(respond), population=4, aggregation_size=2, rounds=1))
    await started.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(cancelled) == 4


async def test_event_order():
    events = []
    async for ev in rsa.stream("What is 6 * 7?", backend=ScriptedBackend(traced(), latency=jitter(3)),
                               population=4, aggregation_size=2, rounds=2, seed=9):
        events.append(ev)
    assert isinstance(events[-1], Done) and sum(isinstance(e, Done) for e in events) == 1
    for t in range(3):
        idx = [i for i, e in enumerate(events) if getattr(e, "stage", None) == t]
        kinds = [type(events[i]) for i in idx]
        assert kinds[0] is StageStarted and kinds[-1] is StageFinished
        assert kinds[1:-1] == [CandidateFinished] * 4
    done = events[-1].result
    assert [e.completion_tokens_so_far for e in events if isinstance(e, CandidateFinished)][-1] == done.completion_tokens


async def test_stream_break_cancels_the_solve():
    backend = ScriptedBackend(traced(), latency=0.05)
    agen = rsa.stream("x", backend=backend, population=4, aggregation_size=2, rounds=3)
    async for ev in agen:
        if isinstance(ev, CandidateFinished):
            break
    await agen.aclose()
    await asyncio.sleep(0.1)
    assert backend.in_flight == 0 and len(backend.requests) < 16


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"aggregation_size \(K=5\) must not exceed population \(N=4\)"):
        RSAConfig(population=4, aggregation_size=5)
    with pytest.raises(ValueError, match="population"):
        RSAConfig(population=0)
    with pytest.raises(ValueError, match="tail_source"):
        RSAConfig(tail_source="middle")
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        RSAConfig(populaton=3)
    with pytest.raises(ValueError, match=r"aggregate_template must contain \['\{candidates\}'\]"):
        RSAConfig(aggregate_template="{problem} only")
    with pytest.raises(ValueError, match=r"unknown fields \['answer'\]"):
        RSAConfig(solve_template="{problem} {answer}")
    assert RSAConfig(rounds=0).total_rollouts == 16


async def test_result_json_round_trip():
    result = await run(ScriptedBackend(traced()), population=3, aggregation_size=2, rounds=1, seed=0)
    again = rsa.SolveResult.model_validate_json(result.model_dump_json())
    assert again == result


@pytest.mark.parametrize("selection", ["random", "aggregate"])
async def test_selection_modes(selection):
    # the extra aggregation call (request id stage 2) answers 9; rollouts answer 7
    backend = ScriptedBackend(traced(answer=lambda r: "7" if stage_of(r)[0] < 2 else "9"))
    result = await run(backend, population=4, aggregation_size=2, rounds=1, seed=0, selection=selection)
    assert result.votes == {"7": 4} and result.selected is not None
    assert result.answer == ("9" if selection == "aggregate" else "7")
    if selection == "aggregate":
        assert len(backend.requests) == 4 * 2 + 1
        last = backend.requests[-1]
        assert last.temperature == 0.3 and len(BLOCK.findall(last.messages[0].content)) == 2


async def test_majority_tie_goes_to_first_seen():
    answers = {0: "5", 1: "8", 2: "8", 3: "5"}
    backend = ScriptedBackend(traced(answer=lambda r: answers[stage_of(r)[1]]))
    result = await run(backend, population=4, aggregation_size=1, rounds=0, seed=0)
    assert result.votes == {"5": 2, "8": 2} and result.answer == "5" and result.share == 0.5


async def test_early_stop_records_savings():
    backend = ScriptedBackend(traced())
    result = await run(backend, population=4, aggregation_size=2, rounds=3, seed=0, early_stop_share=0.75)
    assert result.stopped_early and result.stop_reason == "early_stop"
    assert len(result.stages) == 1 and len(backend.requests) == 4
    assert result.tokens_saved == 3 * result.completion_tokens


async def test_deadline_returns_best_answer_so_far():
    def latency(req):
        return 0.01 if stage_of(req)[0] == 0 else 30

    result = await run(ScriptedBackend(traced(), latency=latency), population=3, aggregation_size=2, rounds=1,
                       seed=0, deadline_s=0.5)
    assert result.stop_reason == "deadline" and result.stopped_early
    assert result.answer == "42" and [s.index for s in result.stages] == [0, 1]
    assert all(c.finish_reason == "cancelled" for c in result.stages[1].candidates)


async def test_token_budget_stops_the_solve():
    backend = ScriptedBackend(traced(words=10), latency=jitter(0), max_concurrency=1)
    result = await run(backend, population=4, aggregation_size=2, rounds=2, seed=0, token_budget=30)
    assert result.stop_reason == "token_budget" and result.answer == "42"
    assert 30 <= result.completion_tokens < 12 * 16


async def test_tail_source_answer_carries_the_post_think_answer():
    backend = ScriptedBackend(traced(words=30))
    result = await run(backend, population=3, aggregation_size=2, rounds=1, seed=0, tail_source="answer",
                       tail_tokens=8)
    tails = [c.tail for c in result.stages[0].candidates]
    assert all(t == "so \\boxed{42}" for t in tails)


async def test_solves_share_one_concurrency_limit():
    backend = ScriptedBackend(traced(), latency=0.01)
    await asyncio.gather(*[run(backend, population=4, aggregation_size=2, rounds=1, max_concurrency=3)
                           for _ in range(5)])
    assert backend.peak_in_flight == 3 and len(backend.requests) == 40


def test_sync_solve_and_backend_errors():
    result = rsa.solve("What is 6 * 7?", backend=ScriptedBackend(traced()), population=2, aggregation_size=1,
                       rounds=1)
    assert result.answer == "42"
    with pytest.raises(ValueError, match="http"):
        rsa.solve("x", backend="localhost:8000")
    with pytest.raises(TypeError, match="lacks"):
        rsa.solve("x", backend=object())
    with pytest.raises(ValueError, match="empty"):
        rsa.solve("  ", backend=ScriptedBackend(traced()))
