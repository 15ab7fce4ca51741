"""In-process checks of the pieces under the CLI: the results log and backend SPEC parsing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rsa.backend_spec import BackendSpecError, build_backend
from rsa.runlog import ResultsLog, RunLogError, read_results


def line(pid: str, run: int, **extra: object) -> str:
    return json.dumps({"id": pid, "run": run, **extra}) + "\n"


def test_read_results_keeps_the_last_line_per_pair_and_ignores_a_torn_tail(tmp_path: Path):
    (tmp_path / "results.jsonl").write_text(line("a", 0, v=1) + line("b", 0) + line("a", 0, v=2) + '{"id": "c", "ru')
    records = read_results(tmp_path)
    assert [(r["id"], r.get("v")) for r in records] == [("b", None), ("a", 2)]


def test_a_broken_middle_line_is_an_error_naming_it(tmp_path: Path):
    (tmp_path / "results.jsonl").write_text(line("a", 0) + "garbage\n" + line("b", 0))
    with pytest.raises(RunLogError, match=r"results.jsonl:2: not a result line"):
        read_results(tmp_path)


def test_results_log_repairs_a_torn_tail_then_appends_whole_lines(tmp_path: Path):
    path = tmp_path / "results.jsonl"
    path.write_text(line("a", 0) + '{"id": "b", "run": 0, "gold"')
    with ResultsLog(tmp_path) as log:
        assert log.repaired_bytes == len('{"id": "b", "run": 0, "gold"')
        log.append({"id": "b", "run": 0, "text": "ünïcode\nnewline"})
    assert path.read_text().count("\n") == 2
    assert [r["id"] for r in read_results(tmp_path)] == ["a", "b"]
    with ResultsLog(tmp_path) as log:
        assert log.repaired_bytes == 0
        with pytest.raises(RunLogError, match="another process is writing"):
            ResultsLog(tmp_path)  # one writer per directory


async def test_backend_specs():
    backend = build_backend(["http://127.0.0.1:9/v1", "https://127.0.0.1:10/v1"])  # replicas; no connection yet
    await backend.aclose()
    for specs, message in [
        (["http://127.0.0.1:9/v1", "engine"], "only http(s) URLs can be combined"),
        (["import:nope"], "expected import:MODULE:FACTORY"),
        (["import:no_such_module_here:make"], "cannot import 'no_such_module_here'"),
        (["import:json:no_such_factory"], "json has no callable 'no_such_factory'"),
    ]:
        with pytest.raises(BackendSpecError, match=re.escape(message)):
            build_backend(specs)


def test_unavailable_backends_are_clear_errors(monkeypatch):
    import rsa.backends

    def missing(name: str):
        raise AttributeError(f"rsa.backends.{name} is not implemented yet")

    def no_default():
        raise rsa.backends.BackendUnavailable("no embedded default model is available yet")

    monkeypatch.setattr(rsa.backends, "__getattr__", missing)
    monkeypatch.setattr(rsa.backends, "default_backend", no_default)
    for specs, message in [
        ([], "backend 'engine': no embedded default model is available yet"),  # the default
        (["engine:/ckpt"], "needs rsa.backends.EngineBackend, which is not available: rsa.backends.EngineBackend is"),
        (["hf:/ckpt"], "needs rsa.backends.TransformersBackend"),
    ]:
        with pytest.raises(BackendSpecError, match=re.escape(message)):
            build_backend(specs)
