"""The Markovian RSA controller: dataflow scheduling of one solve over any backend.

Stage 0 runs N rollouts of the solve prompt. Each slot of stage t >= 1 shows the model K
tails of live stage t-1 members and asks for an improved solution. Every slot is its own task:
without a barrier it starts the moment its own parents have finished, so one slow trace only
delays the slots that read it. With `barrier=True` (or an early-stop rule, which needs whole
stages) each stage waits for the whole previous stage, which is the lockstep algorithm.

Subsets do not depend on timing: before anything runs, a generator seeded with the solve's
seed draws, for every slot of every stage t >= 1, a random order of the stage t-1 slots. The
slot's parents are the first K *live* members in that order, so with no failures they are a
uniform K-subset and with failures a uniform K-subset of the live ones.

Not covered here: answer extraction and equivalence (`rsa.answers`), prompt wording
(`rsa.prompts`), backend choice (`rsa.api`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable

from rsa.backends.base import Backend, BackendError, GenerationRequest

from .answers import extract
from .config import RSAConfig
from .events import CandidateFinished, Done, RSAEvent, StageFinished, StageStarted
from .limits import DEFAULT_MAX_CONCURRENCY, limiter_for
from .prompts import render_aggregate, render_solve
from .results import Candidate, SolveResult, Stage, StageFailedError
from .selection import tally
from .tails import make_tail, tail_text_source

__all__ = ["run_markovian_rsa", "derive_seed"]

Emit = Callable[[RSAEvent], None]


def derive_seed(seed: int, problem_id: str, stage: int, slot: int) -> int:
    """A per-request seed from the solve seed and the rollout's place (stable across runs)."""
    digest = hashlib.blake2b(f"{seed}:{problem_id}:{stage}:{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


class _StageDead(Exception):
    def __init__(self, stage: int) -> None:
        self.stage = stage


class _Solve:
    def __init__(self, problem: str, problem_id: str, backend: Backend, cfg: RSAConfig,
                 seed: int, emit: Emit) -> None:
        self.problem, self.problem_id, self.backend, self.cfg = problem, problem_id, backend, cfg
        self.seed, self.emit = seed, emit
        n, t_max = cfg.population, cfg.rounds
        rng = random.Random(seed)
        # orders[t][i]: the order in which slot i of stage t considers stage t-1 members
        self.orders = [[]] + [[rng.sample(range(n), n) for _ in range(n)] for _ in range(t_max)]
        self.final_order = rng.sample(range(n), n)  # for random / aggregate selection
        self.stages = [Stage(index=t, candidates=[Candidate(stage=t, slot=i) for i in range(n)])
                       for t in range(t_max + 1)]
        self.finished = [[asyncio.Event() for _ in range(n)] for _ in range(t_max + 1)]
        self.stage_done = [asyncio.Event() for _ in range(t_max + 1)]
        self.started = [False] * (t_max + 1)
        self.go_on = [True] * (t_max + 1)  # go_on[t]: stage t+1 may run (early stop clears it)
        self.lockstep = cfg.barrier or cfg.early_stop_share is not None
        self.stop = asyncio.Event()
        self.stop_reason: str | None = None
        self.completion_tokens = 0
        need = cfg.max_concurrency or max(cfg.population, getattr(backend, "max_concurrency", None) or 0,
                                          DEFAULT_MAX_CONCURRENCY)
        self.limiter = limiter_for(backend, need)
        self.t0 = time.perf_counter()

    # -- one rollout ----------------------------------------------------------------------
    async def _parents(self, t: int, slot: int) -> list[int]:
        prev = self.stages[t - 1].candidates
        parents: list[int] = []
        for p in self.orders[t][slot]:
            await self.finished[t - 1][p].wait()
            if prev[p].live:
                parents.append(p)
                if len(parents) == self.cfg.aggregation_size:
                    break
        if not parents:
            raise _StageDead(t - 1)
        return parents

    def _request(self, t: int, slot: int, prompt: str, temperature: float) -> GenerationRequest:
        cfg = self.cfg
        return GenerationRequest(
            messages=({"role": "user", "content": prompt},),
            max_tokens=cfg.max_tokens, temperature=temperature, top_p=cfg.top_p, top_k=cfg.top_k,
            seed=derive_seed(self.seed, self.problem_id, t, slot) if cfg.seed is not None else None,
            request_id=f"{self.problem_id}-s{t}-{slot}", affinity=self.problem_id,
        )

    async def _rollout(self, cand: Candidate, prompt: str, temperature: float, need_tail: bool) -> None:
        """Run one generation into `cand`; backend failures are recorded, not raised."""
        req = self._request(cand.stage, cand.slot, prompt, temperature)
        async with self.limiter.slot((self.t0, cand.stage, cand.slot)):
            cand.started_s = time.perf_counter() - self.t0
            cand.finish_reason = "cancelled"  # stays so if this task is cancelled mid-call
            try:
                gen = await self.backend.generate(req)
            except BackendError as exc:
                cand.finish_reason, cand.error = "error", f"{type(exc).__name__}: {exc}"
                gen = None
            finally:
                cand.finished_s = time.perf_counter() - self.t0
        if gen is not None:
            cand.content, cand.reasoning = gen.content, gen.reasoning
            cand.finish_reason, cand.error = gen.finish_reason, gen.error
            cand.prompt_tokens, cand.completion_tokens = gen.prompt_tokens, gen.completion_tokens
            cand.latency_s = gen.latency_s
        if not cand.live:
            return
        cand.answer = extract(cand.trace)
        if need_tail:
            source = tail_text_source(self.cfg.tail_source, trace=cand.trace, content=cand.content,
                                      finished=cand.finish_reason == "stop",
                                      thought=cand.reasoning is not None)
            try:
                tail = await make_tail(self.backend, source, self.cfg.tail_tokens)
            except BackendError as exc:
                cand.finish_reason, cand.error = "error", f"tail: {type(exc).__name__}: {exc}"
                return
            cand.tail, cand.tail_tokens, cand.tail_truncated = tail.text, tail.tokens, tail.truncated

    async def _slot(self, t: int, slot: int) -> None:
        cand = self.stages[t].candidates[slot]
        try:
            if t == 0:
                prompt = render_solve(self.cfg.solve_template, self.problem)
            else:
                if self.lockstep:
                    await self.stage_done[t - 1].wait()
                    if not self.go_on[t - 1]:  # an early stop ended the solve
                        return
                parents = await self._parents(t, slot)
                cand.parents = parents
                prev = self.stages[t - 1].candidates
                prompt = render_aggregate(self.cfg.aggregate_template, self.cfg.refine_template,
                                          self.problem, [prev[p].tail or "" for p in parents])
            if not self.started[t]:
                self.started[t] = True
                self.emit(StageStarted(stage=t, size=self.cfg.population))
            need_tail = t < self.cfg.rounds or self.cfg.selection == "aggregate"
            await self._rollout(cand, prompt, self.cfg.temperature, need_tail)
            self.completion_tokens += cand.completion_tokens
            self.emit(CandidateFinished(stage=t, slot=slot, candidate=cand.model_copy(),
                                        completion_tokens_so_far=self.completion_tokens))
            if self.cfg.token_budget is not None and self.completion_tokens >= self.cfg.token_budget:
                self._halt("token_budget")
        finally:
            self.finished[t][slot].set()

    def _halt(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()

    async def _close_stage(self, t: int) -> None:
        for ev in self.finished[t]:
            await ev.wait()
        stage = self.stages[t]
        if not self.started[t]:  # skipped by an early stop
            self.stage_done[t].set()
            return
        await self._summarise(stage)
        self.emit(StageFinished(stage=t, votes=stage.votes, majority=stage.majority, share=stage.share,
                                live=len(stage.live), prompt_tokens=stage.prompt_tokens,
                                completion_tokens=stage.completion_tokens))
        if not stage.live and t < self.cfg.rounds:
            raise _StageDead(t)
        share = self.cfg.early_stop_share
        if share is not None and t < self.cfg.rounds and stage.share >= share:
            self.stop_reason = "early_stop"
            for later in range(t, self.cfg.rounds + 1):
                self.go_on[later] = False
        self.stage_done[t].set()

    async def _summarise(self, stage: Stage) -> None:
        result = await tally(stage.candidates)  # votes come from live candidates only
        stage.votes, stage.majority, stage.share = result.votes, result.majority, result.share
        stage.prompt_tokens = sum(c.prompt_tokens for c in stage.candidates)
        stage.completion_tokens = sum(c.completion_tokens for c in stage.candidates)

    # -- the whole solve ------------------------------------------------------------------
    async def run(self) -> SolveResult:
        n = self.cfg.population
        tasks = [asyncio.ensure_future(self._slot(t, i)) for t in range(self.cfg.rounds + 1) for i in range(n)]
        tasks += [asyncio.ensure_future(self._close_stage(t)) for t in range(self.cfg.rounds + 1)]
        work = asyncio.gather(*tasks)
        work.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" log when cancelled
        halt = asyncio.ensure_future(self.stop.wait())
        dead: _StageDead | None = None
        try:
            done, _ = await asyncio.wait({work, halt}, timeout=self.cfg.deadline_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                work.result()
            else:
                self._halt("deadline")
        except _StageDead as exc:
            dead, self.stop_reason = exc, "error"
        finally:
            halt.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            work.cancel()
        if dead is not None:
            raise StageFailedError(
                f"every rollout of stage {dead.stage} failed; first error: "
                f"{self._first_error(dead.stage)}", await self._result(partial=True))
        result = await self._result(partial=self.stop_reason in ("deadline", "token_budget"))
        self.emit(Done(result=result))
        return result

    def _first_error(self, t: int) -> str:
        errors = [c.error for c in self.stages[t].candidates if c.error]
        return errors[0] if errors else "no live rollout"

    async def _result(self, partial: bool) -> SolveResult:
        ran = [s for s in self.stages if self.started[s.index]]
        for stage in ran:
            for c in stage.candidates:
                if c.finish_reason in ("pending", "cancelled"):
                    c.finish_reason, c.error = "cancelled", "cancelled: the solve stopped"
            if partial:  # stages cut short by a stop were never summarised
                await self._summarise(stage)
        # the best answer so far comes from the last stage that has a finished live member
        final = next((s for s in reversed(ran) if s.live), ran[-1] if ran else None)
        answer, selected = (final.majority, None) if final else (None, None)
        if final is not None and final.live and self.stop_reason not in ("deadline", "token_budget", "error"):
            answer, selected = await self._select(final, answer)
        run_rollouts = sum(1 for s in ran for c in s.candidates if c.started_s is not None)
        spent = sum(c.completion_tokens for s in ran for c in s.candidates)
        saved = 0
        if self.stop_reason == "early_stop" and run_rollouts:
            saved = (self.cfg.total_rollouts - run_rollouts) * spent // run_rollouts
        return SolveResult(
            problem=self.problem, problem_id=self.problem_id, answer=answer,
            votes=final.votes if final else {}, share=final.share if final else 0.0,
            selection=self.cfg.selection, selected=selected, stages=ran,
            prompt_tokens=sum(s.prompt_tokens for s in ran) + (selected.prompt_tokens if selected else 0),
            completion_tokens=spent + (selected.completion_tokens if selected else 0),
            wall_time_s=time.perf_counter() - self.t0, config=self.cfg, seed=self.seed,
            backend=getattr(self.backend, "name", type(self.backend).__name__),
            stopped_early=self.stop_reason is not None, stop_reason=self.stop_reason, tokens_saved=saved,
        )

    async def _select(self, final: Stage, majority: str | None) -> tuple[str | None, Candidate | None]:
        live = [final.candidates[i] for i in self.final_order if final.candidates[i].live]
        if self.cfg.selection == "random":
            return live[0].answer, live[0]
        if self.cfg.selection == "aggregate":
            parents = [c.slot for c in live[: self.cfg.aggregation_size]]
            cand = Candidate(stage=final.index + 1, slot=0, parents=parents)
            prompt = render_aggregate(self.cfg.aggregate_template, self.cfg.refine_template, self.problem,
                                      [final.candidates[p].tail or "" for p in parents])
            await self._rollout(cand, prompt, self.cfg.selection_temperature, need_tail=False)
            if cand.answer is not None:
                return cand.answer, cand
            return majority, cand  # the extra call gave no answer: fall back to the vote
        return majority, None


async def run_markovian_rsa(problem: str, problem_id: str, backend: Backend, cfg: RSAConfig,
                            *, seed: int, emit: Emit | None = None) -> SolveResult:
    """Solve one problem with Markovian RSA. Cancelling the call cancels every rollout."""
    solve = _Solve(problem, problem_id, backend, cfg, seed, emit or (lambda event: None))
    return await solve.run()
