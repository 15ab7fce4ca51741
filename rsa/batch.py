"""The resumable batch runner behind `rsa batch`: many problems x runs, one in-flight limit.

Each (problem, run) pair is solved with `rsa.asolve`, graded with `rsa.problems` (final
answer, every stage's population, majority per stage) and appended to `results.jsonl` as one
line the moment it finishes (`rsa.runlog`). A rerun skips the pairs already there. The run's
RSA seed is `seed + run` when the config has a seed, else a random one, recorded per line.

A solve that fails (`RSAError` such as `StageFailedError`, or a `BackendError`) is recorded
with its error and whatever partial stages it had, and counts as incorrect. Any other
exception is a bug: it stops the batch (finished lines stay). Setting the `stop` event (the
CLI does on Ctrl-C) cancels the solves in flight; their pairs are simply not written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rsa.backends.base import Backend, BackendError
from rsa.problems import Grader, Problem, ProblemLoadError, agrade_records, load_problems, majority_correct
from rsa.problems.data import from_records

from .api import asolve
from .config import RSAConfig
from .events import RSAEvent
from .results import RSAError, SolveResult
from .runlog import RESULTS, RunLogError, read_meta, write_meta

__all__ = ["Job", "finish_session", "fingerprint", "load_input", "make_record", "pending_jobs", "prepare_dir",
           "run_jobs", "solve_job"]

Job = tuple[Problem, int]  # (problem, run index)
# Fields that change throughput, never answers: a resume may change them freely.
_RESUME_FREE = {"max_concurrency"}


# -- input ------------------------------------------------------------------------------------
def _line_records(text: str, source: str, bad: list[ProblemLoadError]) -> list[tuple[str, Any]]:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((f"line {lineno}", json.loads(line)))
        except json.JSONDecodeError as e:
            bad.append(ProblemLoadError(source, f"invalid JSON: {e.msg} (column {e.colno})", location=f"line {lineno}"))
    return records


def _good_problems(records: list[tuple[str, Any]], source: str, bad: list[ProblemLoadError]) -> list[Problem]:
    """`from_records` over the records, dropping each one it rejects (bad fields, duplicate ids)."""
    while True:
        try:
            return from_records(records, source=source)
        except ProblemLoadError as e:
            if e.location is None or not any(loc == e.location for loc, _ in records):
                raise
            bad.append(e)
            records = [(loc, rec) for loc, rec in records if loc != e.location]


def load_input(source: str, on_error: str = "abort") -> tuple[list[Problem], list[ProblemLoadError]]:
    """(problems, skipped errors) of an INPUT. With `on_error="skip"`, bad lines of a JSONL file
    (or bad records of a JSON file) are dropped and returned; other errors still raise."""
    try:
        return load_problems(source), []
    except ProblemLoadError as first:
        path = Path(source)
        if on_error != "skip" or first.location is None or path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
            raise
        text = path.read_text(encoding="utf-8-sig")
        bad: list[ProblemLoadError] = []
        if path.suffix.lower() == ".json" and not text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except ValueError:
                raise first from None  # the whole file is unreadable: nothing to skip to
            records = [(f"record {i}", r) for i, r in enumerate(data, 1)] if isinstance(data, list) else []
            if not records:
                raise first
        else:
            records = _line_records(text, source, bad)
        problems = _good_problems(records, source, bad)
        bad.sort(key=lambda e: int((e.location or "0").split()[-1]))
        return problems, bad


def fingerprint(problems: Sequence[Problem]) -> str:
    """SHA-256 of the problems' ids, texts and gold answers, in order."""
    data = json.dumps([[p.id, p.problem, p.answer] for p in problems], ensure_ascii=False)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


# -- the directory ----------------------------------------------------------------------------
def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    keys = [k for k in {**old, **new} if k not in _RESUME_FREE and old.get(k) != new.get(k)]
    return [f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in keys]


def prepare_dir(out: Path, *, config: RSAConfig, source: str, problems: Sequence[Problem], runs: int,
                backend: Sequence[str], force: bool, command: list[str],
                skipped: Sequence[str] = ()) -> dict[str, Any]:
    """Create or reopen `out`: refuse (RunLogError) a config or input that differs from the one
    recorded in run.json unless `force`; record this session; return the metadata."""
    out.mkdir(parents=True, exist_ok=True)
    old = read_meta(out)
    cfg = config.model_dump(mode="json")
    fp = fingerprint(problems)
    diffs: list[str] = []
    if old is not None:
        diffs = _config_diff(old.get("config", {}), cfg)
        if old.get("input_fingerprint") != fp:
            diffs.append(f"input {old.get('input')!r} ({old.get('input_fingerprint')}) -> {source!r} ({fp})")
    elif (out / RESULTS).exists() and (out / RESULTS).stat().st_size:
        diffs.append("results.jsonl exists but run.json does not")
    if diffs and not force:
        listing = "".join(f"\n  {d}" for d in diffs)
        raise RunLogError(
            f"{out} holds a run with different settings:{listing}\n"
            "Rerun with the recorded settings to resume, use a new --out, or add --force to continue "
            "in this directory anyway (finished pairs are kept and not redone).")
    meta: dict[str, Any] = {
        "version": 1, "input": source, "input_fingerprint": fp, "problems": len(problems),
        "runs": max(runs, (old or {}).get("runs", 0)), "backend": list(backend), "config": cfg,
        "skipped_input": list(skipped),
        "sessions": (old or {}).get("sessions", []) + [
            {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command, "status": "running",
             "wall_time_s": None}],
    }
    if old is not None and diffs:  # forced: keep what was replaced
        meta["previous"] = (old.get("previous") or []) + [{k: v for k, v in old.items() if k != "previous"}]
    write_meta(out, meta)
    return meta


def finish_session(out: Path, meta: dict[str, Any], status: str, wall_time_s: float) -> None:
    meta["sessions"][-1].update(status=status, wall_time_s=round(wall_time_s, 3))
    write_meta(out, meta)


def pending_jobs(problems: Sequence[Problem], runs: int, done: Sequence[dict[str, Any]],
                 retry_errors: bool = False) -> list[Job]:
    """The (problem, run) pairs still to solve, run-major (run 0 of every problem first)."""
    finished = {(r["id"], r["run"]) for r in done if not (retry_errors and r.get("error"))}
    return [(p, run) for run in range(runs) for p in problems if (p.id, run) not in finished]


# -- one pair ---------------------------------------------------------------------------------
async def make_record(problem: Problem, run: int, seed: int, result: SolveResult | None, error: str | None,
                      grader: Grader, wall_time_s: float) -> dict[str, Any]:
    """The results.jsonl line of one pair (`result` may be a partial result or None)."""
    gold = problem.answer
    stages = result.stages if result else []
    answers = [[c.answer for c in s.candidates] for s in stages]
    [correct], [clusters] = await agrade_records([{"gold": gold, "stages": answers}], grader=grader)
    final = None
    if gold is not None:
        final = error is None and result is not None and (
            await grader.agrade(result.answer, gold, extract=False)).correct
    return {
        "id": problem.id, "run": run, "seed": seed, "gold": gold,
        "answer": result.answer if result else None, "correct": final,
        "share": result.share if result else 0.0, "votes": result.votes if result else {},
        "stop_reason": result.stop_reason if result else "error", "error": error,
        "prompt_tokens": result.prompt_tokens if result else 0,
        "completion_tokens": result.completion_tokens if result else 0,
        "wall_time_s": round(wall_time_s, 3), "finished_at": round(time.time(), 3),
        "backend": result.backend if result else None,
        "stages": [{
            "stage": s.index, "answers": answers[i], "correct": correct[i], "clusters": clusters[i],
            "majority": s.majority, "majority_correct": gold is not None and majority_correct(clusters[i], correct[i]),
            "share": s.share, "votes": s.votes, "live": len(s.live),
            "finish_reasons": [c.finish_reason for c in s.candidates],
            "errors": sum(c.error is not None for c in s.candidates),
            "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "finished_s": round(max((c.finished_s or 0.0 for c in s.candidates), default=0.0), 3),
        } for i, s in enumerate(stages)],
    }


async def solve_job(job: Job, *, backend: Backend, config: RSAConfig, grader: Grader,
                    on_event: Callable[[RSAEvent], None] | None = None) -> dict[str, Any]:
    problem, run = job
    seed = config.seed + run if config.seed is not None else random.SystemRandom().randrange(2**31)
    t0 = time.perf_counter()
    result: SolveResult | None
    error = None
    try:
        result = await asolve(problem, backend=backend, config=config, seed=seed, on_event=on_event)
    except RSAError as exc:
        result, error = exc.partial, f"{type(exc).__name__}: {exc}"
    except BackendError as exc:
        result, error = None, f"{type(exc).__name__}: {exc}"
    return await make_record(problem, run, seed, result, error, grader, time.perf_counter() - t0)


# -- many pairs -------------------------------------------------------------------------------
async def run_jobs(jobs: Sequence[Job], solve: Callable[[Job], Any], on_record: Callable[[dict[str, Any]], None],
                   *, in_flight: int, stop: asyncio.Event) -> bool:
    """Solve `jobs` with at most `in_flight` at once, calling `on_record` (synchronously, so a
    write is never cut by a cancel) with each record. Returns True when `stop` ended it early."""
    queue = iter(jobs)  # shared by the workers; safe, they all run on this one loop

    async def worker() -> None:
        for job in queue:
            on_record(await solve(job))

    workers = {asyncio.ensure_future(worker()) for _ in range(max(1, min(in_flight, len(jobs))))}
    stopper = asyncio.ensure_future(stop.wait())
    pending = workers | {stopper}
    failed: BaseException | None = None
    try:
        while failed is None and not stopper.done() and pending & workers:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = next((t.exception() for t in done if t in workers and t.exception()), None)
    finally:
        for task in (*workers, stopper):
            task.cancel()
        await asyncio.gather(*workers, stopper, return_exceptions=True)
    if failed is not None:
        raise failed
    return stop.is_set()
