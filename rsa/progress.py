"""Progress of `rsa batch`: a live rich display on a terminal, plain lines otherwise.

Live: a bar of finished (problem, run) pairs with stages in flight, generated tokens per
second and the running accuracy. Without a terminal (logs, CI) each finished pair prints one
line instead; `enabled=False` (`--quiet`) prints nothing. Fed synchronously from the event
loop by `on_event` (solve events) and `on_record` (finished pairs).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .events import CandidateFinished, RSAEvent, StageFinished, StageStarted

__all__ = ["BatchProgress"]


class BatchProgress:
    def __init__(self, console: Console, *, total: int, done: list[dict[str, Any]], enabled: bool = True) -> None:
        self.console, self.total, self.done = console, total, len(done)
        graded = [r for r in done if r.get("gold") is not None]
        self.graded, self.correct = len(graded), sum(bool(r["correct"]) for r in graded)
        self.tokens = 0
        self.t0 = time.perf_counter()
        self._open: dict[tuple[str, int], set[int]] = {}  # pair -> stages started, not finished
        self.live = enabled and console.is_terminal
        self.lines = enabled and not console.is_terminal
        self._bar: Progress | None = None

    def __enter__(self) -> BatchProgress:
        if self.live:
            self._bar = Progress(BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=self.console)
            self._bar.start()
            self._task = self._bar.add_task("solving", total=self.total, completed=self.done, stats="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.stop()

    def _stats(self) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        stages = sum(len(s) for s in self._open.values())
        acc = f"{100 * self.correct / self.graded:.1f}% ({self.correct}/{self.graded})" if self.graded else "-"
        return f"{stages} stages running | {self.tokens / elapsed:,.0f} tok/s | acc {acc}"

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, stats=self._stats())

    def on_event(self, pair: tuple[str, int], event: RSAEvent) -> None:
        if isinstance(event, StageStarted):
            self._open.setdefault(pair, set()).add(event.stage)
        elif isinstance(event, StageFinished):
            self._open.get(pair, set()).discard(event.stage)
        elif isinstance(event, CandidateFinished):
            self.tokens += event.candidate.completion_tokens
        self._refresh()

    def on_record(self, rec: dict[str, Any]) -> None:
        self._open.pop((rec["id"], rec["run"]), None)
        self.done += 1
        if rec.get("gold") is not None:
            self.graded += 1
            self.correct += bool(rec["correct"])
        if self.lines:
            verdict = {True: "correct", False: "wrong", None: "ungraded"}[rec["correct"]]
            if rec.get("error"):
                verdict = "error"
            self.console.print(f"[{self.done}/{self.total}] {rec['id']} run {rec['run']}: answer {rec['answer']!r} "
                               f"gold {rec['gold']!r} {verdict} | {self._stats()}", markup=False, highlight=False)
        self._refresh()
