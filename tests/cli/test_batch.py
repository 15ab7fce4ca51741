"""`rsa batch` and `rsa report` end to end on the scripted backend: files, numbers, resume,
the config guard, bad input lines and failed solves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests_cli_helpers import BACKEND, expected, read_lines

from rsa.problems import load_problems

CFG = ["-n", "4", "-k", "2", "-t", "1"]


def test_synthetic_batch_summary_report_and_plot(rsa_cli, tmp_path: Path):
    out = tmp_path / "run"
    proc = rsa_cli("batch", "synthetic:arith:20", "--out", str(out), *BACKEND, *CFG, "--seed", "5", "--runs", "2")
    assert proc.returncode == 0, proc.stderr

    problems = {p.id: p for p in load_problems("synthetic:arith:20")}
    want = {pid: expected(p.answer, p.problem, population=4, rounds=1) for pid, p in problems.items()}
    lines = read_lines(out / "results.jsonl")
    assert sorted((r["id"], r["run"]) for r in lines) == sorted((pid, run) for pid in problems for run in (0, 1))
    for r in lines:
        assert r["seed"] == 5 + r["run"] and r["gold"] == problems[r["id"]].answer and r["error"] is None
        assert r["correct"] == want[r["id"]]["correct"]
        assert [s["stage"] for s in r["stages"]] == [0, 1] and r["stages"][0]["correct"][0] is True
        assert r["completion_tokens"] == sum(s["completion_tokens"] for s in r["stages"]) > 0

    summary = json.loads((out / "summary.json").read_text())
    accuracy = sum(w["correct"] for w in want.values()) / len(want)
    assert 0 < accuracy < 1
    assert summary["accuracy"] == pytest.approx(accuracy) and summary["accuracy_stderr"] == 0.0  # identical runs
    assert [r["accuracy"] for r in summary["per_run"]] == pytest.approx([accuracy, accuracy])
    assert summary["problems"] == 20 and summary["runs"] == 2 and summary["solves"] == 40 and summary["errors"] == 0
    for s, curve in enumerate(summary["stages"]):
        mean, maj, pass_n = (sum(w["stages"][s][i] for w in want.values()) / len(want) for i in range(3))
        got = (curve["mean_accuracy"], curve["majority_accuracy"], curve["pass_at_n"])
        assert got == pytest.approx((mean, maj, pass_n))
    assert summary["stages"][0]["mean_accuracy"] == 0.25 and summary["stages"][0]["pass_at_n"] == 1.0
    assert summary["tokens"]["completion"] == sum(r["completion_tokens"] for r in lines)
    assert summary["config"]["population"] == 4 and summary["input"] == "synthetic:arith:20"
    assert summary["input_fingerprint"].startswith("sha256:") and summary["wall_time_s"] > 0
    assert "## Accuracy by stage" in (out / "report.md").read_text()
    assert (out / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for name in ("summary.json", "report.md", "stages.png"):
        (out / name).unlink()
    proc = rsa_cli("report", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Accuracy by stage" in proc.stdout and f"{100 * accuracy:.1f}%" in proc.stdout
    rebuilt = json.loads((out / "summary.json").read_text())
    assert rebuilt == summary
    assert (out / "report.md").exists() and (out / "stages.png").exists()


def test_resume_skips_finished_pairs_and_guards_the_config(rsa_cli, tmp_path: Path):
    out = tmp_path / "run"
    args = ["batch", "synthetic:arith:6", "--out", str(out), *BACKEND, *CFG, "--seed", "0", "-q"]
    assert rsa_cli(*args).returncode == 0
    first = (out / "results.jsonl").read_bytes()
    assert len(first.splitlines()) == 6

    proc = rsa_cli(*args)  # everything finished: nothing is solved again
    assert proc.returncode == 0, proc.stderr
    assert (out / "results.jsonl").read_bytes() == first

    proc = rsa_cli(*args, "--runs", "2")  # more runs: only the new pairs are solved
    assert proc.returncode == 0, proc.stderr
    data = (out / "results.jsonl").read_bytes()
    assert data.startswith(first)
    assert sorted((r["id"], r["run"]) for r in read_lines(out / "results.jsonl")) == sorted(
        (f"arith-0-{i}", run) for i in range(6) for run in (0, 1))

    proc = rsa_cli(*args, "-n", "5")  # another config: refused, nothing written
    assert proc.returncode == 2
    assert "population: 4 -> 5" in proc.stderr and "--force" in proc.stderr and "Traceback" not in proc.stderr
    proc = rsa_cli("batch", "synthetic:arith:7", "--out", str(out), *BACKEND, *CFG, "--seed", "0", "-q")
    assert proc.returncode == 2 and "input" in proc.stderr
    assert (out / "results.jsonl").read_bytes() == data

    proc = rsa_cli(*args, "-n", "5", "--force")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["population"] == 5 and meta["previous"][0]["config"]["population"] == 4
    assert [s["status"] for s in meta["sessions"]] == ["completed"] * 4


def test_jsonl_batch_records_backend_errors_and_ungraded_problems(rsa_cli, tmp_path: Path):
    src = tmp_path / "probs.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "problem": "What is 2 + 2?", "answer": "4"},  # even: right
        {"id": "b", "problem": "What is 2 + 3?", "answer": 5},  # odd: the scripted model says 6
        {"id": "c", "question": "What is 10 * 3?", "answer": "30"},
        {"id": "d", "problem": "What is 1 + 1? FAIL", "answer": "2"},  # every request fails
        {"id": "e", "problem": "What is 4 + 4?"},  # no gold: solved, not graded
    ]) + "\n")
    out = tmp_path / "run"
    proc = rsa_cli("batch", str(src), "--out", str(out), *BACKEND, *CFG, "--max-problems-in-flight", "3")
    assert proc.returncode == 0, proc.stderr
    assert "1 solves failed" in proc.stderr and "--retry-errors" in proc.stderr
    by_id = {r["id"]: r for r in read_lines(out / "results.jsonl")}
    assert [by_id[k]["correct"] for k in "abcde"] == [True, False, True, False, None]
    assert by_id["e"]["answer"] == "8" and by_id["e"]["gold"] is None
    failed = by_id["d"]
    assert "StageFailedError" in failed["error"] and "HTTP 500" in failed["error"] and failed["answer"] is None
    assert failed["stages"][0]["finish_reasons"] == ["error"] * 4 and failed["stages"][0]["errors"] == 4
    assert all(by_id[k]["error"] is None for k in "abce")
    assert all(isinstance(by_id[k]["seed"], int) for k in "abcde")  # no --seed: random, recorded

    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] == 0.5 and summary["graded"] == 4 and summary["errors"] == 1
    assert summary["accuracy_stderr"] is None  # one run
    assert summary["failures"] == [{"id": "d", "run": 0, "error": failed["error"]}]
    stage0, stage1 = summary["stages"]
    assert (stage0["problems"], stage0["mean_accuracy"], stage0["pass_at_n"]) == (4, 0.1875, 0.75)
    assert (stage1["problems"], stage1["mean_accuracy"]) == (3, pytest.approx(2 / 3))
    assert "Failures" in (out / "report.md").read_text()

    proc = rsa_cli("batch", str(src), "--out", str(out), *BACKEND, *CFG, "--retry-errors", "-q")
    assert proc.returncode == 0, proc.stderr
    raw = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in raw[5:]] == ["d"]  # only the failed pair was solved again
    assert json.loads((out / "summary.json").read_text())["solves"] == 5  # its newer line supersedes the old


BAD = """{"id": "a", "problem": "What is 2 + 2?", "answer": "4"}
{"id": "b", "problem": "What is 2 + 3?", "answer": "5"}
{"id": "c", "problem": "What is

{"id": "d", "answer": "7"}
{"id": "a", "problem": "What is 6 + 2?", "answer": "8"}
{"id": "e", "problem": "What is 6 + 6?", "answer": "12"}
"""


def test_malformed_input_abort_and_skip(rsa_cli, tmp_path: Path):
    src = tmp_path / "bad.jsonl"
    src.write_text(BAD)
    out = tmp_path / "run"
    proc = rsa_cli("batch", str(src), "--out", str(out), *BACKEND, *CFG)
    assert proc.returncode == 1
    assert f"{src}: line 3: invalid JSON" in proc.stderr and "--on-error skip" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "results.jsonl").exists()

    proc = rsa_cli("batch", str(src), "--out", str(out), *BACKEND, *CFG, "--on-error", "skip")
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped:")]
    assert [s.split(": ")[2] for s in skipped] == ["line 3", "line 5", "line 6"]
    assert "field 'problem'" in skipped[1] and "duplicate id 'a'" in skipped[2]
    assert sorted(r["id"] for r in read_lines(out / "results.jsonl")) == ["a", "b", "e"]
    assert len(json.loads((out / "run.json").read_text())["skipped_input"]) == 3
