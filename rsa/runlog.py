"""The files of a batch directory that make it resumable: `results.jsonl` and `run.json`.

`results.jsonl` is append-only, one JSON object per (problem, run). Each line goes to the
file in a single `os.write` on an O_APPEND descriptor followed by `fsync`, so a process
killed at any moment leaves whole lines plus at most one torn final line; `ResultsLog.open`
cuts that torn tail off before appending again. Readers keep the last line of each
(id, run) pair, so a pair rerun on purpose (`--retry-errors`) supersedes its old line. An
exclusive `flock` on the file keeps a second writer out of the same directory.

`run.json` records what the directory was started with (config, input fingerprint, backend,
runs) and one entry per session; it is replaced atomically (write, fsync, rename).
"""

from __future__ import annotations

import json
import os

try:
    import fcntl
except ImportError:  # Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]
from pathlib import Path
from typing import Any

__all__ = ["ResultsLog", "RunLogError", "read_meta", "read_results", "write_meta"]

RESULTS, META = "results.jsonl", "run.json"


class RunLogError(ValueError):
    """A batch directory whose files cannot be used as they are."""


def read_results(out: Path) -> list[dict[str, Any]]:
    """The records of `out/results.jsonl`, last line per (id, run) kept, in first-seen order.

    A torn final line (no newline: the writer was killed) is ignored; any other line that is
    not a JSON object is an error naming its line number.
    """
    path = out / RESULTS
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    if not data.endswith(b"\n"):
        lines = lines[:-1]  # torn tail
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = (str(rec["id"]), int(rec["run"]))
        except (ValueError, KeyError, TypeError):
            raise RunLogError(f"{path}:{lineno}: not a result line (JSON with id and run); fix or delete it") from None
        records.pop(key, None)  # a rerun pair moves to where its latest line is
        records[key] = rec
    return list(records.values())


class ResultsLog:
    """Appends records to `out/results.jsonl`, each durable once `append` returns."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / RESULTS
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self._lock()
            self.repaired_bytes = self._repair()
        except BaseException:
            os.close(self._fd)
            raise

    def _lock(self) -> None:
        """One writer per directory; the lock dies with its process, even on SIGKILL."""
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLogError(f"another process is writing {self.path}; wait for it or stop it first") from None

    def _repair(self) -> int:
        """Cut a torn final line (left by a killed writer); returns the bytes removed."""
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep == len(data):
            return 0
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)
        return len(data) - keep

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, line)
        if written != len(line):  # only on a full disk or similar; the next open repairs it
            raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_meta(out: Path) -> dict[str, Any] | None:
    path = out / META
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise RunLogError(f"{path} is not valid JSON ({exc}); fix or delete it") from None


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    path, tmp = out / META, out / (META + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
