"""`load_problems`: read problems from a file, a saved dataset, or a synthetic spec.

Formats, chosen by suffix (or by being a directory):

- `.jsonl` / `.ndjson`: one JSON object per line; blank lines are skipped.
- `.json`: a JSON list of objects; a file whose first character is `{` is read as JSON
  lines, since `datasets.Dataset.to_json` writes exactly that under a `.json` name.
- `.csv`: a header row, then one problem per row; empty cells mean "missing".
- `.parquet` / `.pq`: needs pyarrow (`pip install 'markovian-rsa[data]'`).
- a directory written by `datasets.save_to_disk` (Dataset or DatasetDict): needs `datasets`;
  a DatasetDict with several splits needs `split=`.
- `synthetic:KIND:N[:SEED]`: generated problems, see `rsa.problems.synthetic`.

Field aliases, answer coercion and id synthesis are in `data.py`. Limits: no Hub downloads
(call `datasets.load_dataset(...).save_to_disk(dir)` first), no compressed files, and each
file is read whole into memory.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import synthetic
from .data import PROBLEM_FIELDS, Problem, ProblemLoadError, from_records

__all__ = ["load_problems"]

_DATA_HINT = "pip install 'markovian-rsa[data]'"


def _jsonl_records(lines: list[str], source: str) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            raise ProblemLoadError(source, f"invalid JSON: {e.msg} (column {e.colno})", location=f"line {lineno}") from None


def _read_text(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ProblemLoadError(source, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _load_jsonl(path: Path, source: str) -> list[Problem]:
    return from_records(_jsonl_records(_read_text(path, source).splitlines(), source), source=source)


def _load_json(path: Path, source: str) -> list[Problem]:
    text = _read_text(path, source)
    if text.lstrip().startswith("{"):
        return from_records(_jsonl_records(text.splitlines(), source), source=source)
    if not text.strip():
        raise ProblemLoadError(source, "no problems found (empty file)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProblemLoadError(source, f"invalid JSON: {e.msg} (column {e.colno})", location=f"line {e.lineno}") from None
    if not isinstance(data, list):
        raise ProblemLoadError(source, f"expected a JSON list of objects, got {type(data).__name__}")
    return from_records(((f"record {i}", r) for i, r in enumerate(data, 1)), source=source)


def _load_csv(path: Path, source: str) -> list[Problem]:
    text = _read_text(path, source)
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = reader.fieldnames or []
    if not header:
        raise ProblemLoadError(source, "no problems found (empty file)")
    if not any(name in header for name in PROBLEM_FIELDS):
        raise ProblemLoadError(
            source, f"missing from the header; expected one of {', '.join(PROBLEM_FIELDS)}", location="line 1", field="problem"
        )

    def records() -> Iterator[tuple[str, Any]]:
        start = reader.line_num + 1
        for row in reader:
            location = f"line {start}"  # first physical line of the row (quoted cells may span lines)
            start = reader.line_num + 1
            if None in row:
                raise ProblemLoadError(source, f"{len(header) + len(row[None])} values for {len(header)} columns", location=location)
            yield location, {k: (v if v != "" else None) for k, v in row.items()}

    return from_records(records(), source=source)


def _load_parquet(path: Path, source: str) -> list[Problem]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading Parquet ({source}) needs pyarrow: {_DATA_HINT}") from e
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError subclasses for corrupt files
        raise ProblemLoadError(source, f"not a readable Parquet file ({e})") from None
    return from_records(((f"record {i}", r) for i, r in enumerate(rows, 1)), source=source)


def _load_saved_dataset(path: Path, source: str, split: str | None) -> list[Problem]:
    if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        raise ProblemLoadError(source, "directory is not a dataset written by datasets.save_to_disk")
    try:
        import datasets
    except ImportError as e:
        raise ImportError(f"reading a saved dataset ({source}) needs the datasets package: {_DATA_HINT}") from e
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        names = sorted(ds.keys())
        if split is None:
            if len(names) != 1:
                raise ProblemLoadError(source, f"dataset has splits {names}; pass split=")
            split = names[0]
        if split not in ds:
            raise ProblemLoadError(source, f"no split {split!r}; dataset has {names}")
        ds = ds[split]
    elif split is not None:
        raise ProblemLoadError(source, f"split={split!r} given but the saved dataset has no splits")
    return from_records(((f"record {i}", r) for i, r in enumerate(ds, 1)), source=source)


_LOADERS = {
    ".jsonl": _load_jsonl,
    ".ndjson": _load_jsonl,
    ".json": _load_json,
    ".csv": _load_csv,
    ".parquet": _load_parquet,
    ".pq": _load_parquet,
}


def load_problems(source: str | os.PathLike[str], *, split: str | None = None) -> list[Problem]:
    """Problems from a file, a `save_to_disk` directory or `synthetic:KIND:N[:SEED]`.

    Raises ProblemLoadError (a ValueError) naming source, location and field on bad input,
    ImportError when an optional reader (pyarrow, datasets) is missing.
    """
    name = os.fspath(source)
    if isinstance(source, str) and name.startswith("synthetic:"):
        if split is not None:
            raise ProblemLoadError(name, f"split={split!r} does not apply to synthetic problems")
        try:
            spec = synthetic.parse_spec(name)
        except ValueError as e:
            raise ProblemLoadError(name, str(e)) from None
        return synthetic.make(spec.kind, spec.n, spec.seed)
    path = Path(name)
    if not path.exists():
        raise ProblemLoadError(name, "no such file or directory")
    if path.is_dir():
        return _load_saved_dataset(path, name, split)
    if split is not None:
        raise ProblemLoadError(name, f"split={split!r} only applies to a directory written by datasets.save_to_disk")
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        known = ", ".join(_LOADERS)
        raise ProblemLoadError(
            name,
            f"unknown format {path.suffix or '(no suffix)'!r}; expected {known}, a save_to_disk directory "
            "or synthetic:KIND:N[:SEED]",
        )
    return loader(path, name)
