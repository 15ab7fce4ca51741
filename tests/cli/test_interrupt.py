"""A batch killed (SIGKILL) or interrupted (SIGINT) mid-run loses nothing and resumes."""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path

from tests_cli_helpers import BACKEND, cli_cmd, cli_env, read_lines

CFG = ["-n", "4", "-k", "2", "-t", "1", "--seed", "0"]


def start(args: list[str], latency: float) -> subprocess.Popen:
    return subprocess.Popen(cli_cmd(*args), env=cli_env(CLI_TEST_LATENCY=str(latency)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_lines(proc: subprocess.Popen, path: Path, n: int) -> None:
    """Until `path` holds at least n newline-terminated lines (a 60 s guard, not an assertion on speed)."""
    guard = time.monotonic() + 60
    while time.monotonic() < guard:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, f"batch ended before {n} lines: {proc.communicate()}"
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no {n} lines in {path} within the guard")


def test_sigkill_at_any_moment_then_resume_gives_each_pair_exactly_once(tmp_path: Path):
    out = tmp_path / "run"
    results = out / "results.jsonl"
    args = ["batch", "synthetic:arith:24", "--out", str(out), *BACKEND, *CFG, "--runs", "2",
            "--max-problems-in-flight", "3"]
    proc = start(args, latency=0.05)
    try:
        wait_for_lines(proc, results, 4)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    data = results.read_bytes()
    kept = data[: data.rfind(b"\n") + 1]  # the whole lines (a kill mid-write may leave a torn tail)
    assert len(kept.splitlines()) >= 4
    with open(results, "ab") as f:  # the worst moment: a line cut in the middle of its write
        f.write(b'{"id":"arith-0-23","run":1,"seed":1,"gold":"12')

    resumed = subprocess.run(cli_cmd(*args), env=cli_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "repaired" in resumed.stderr and "resuming" in resumed.stderr
    lines = read_lines(results)  # every line parses
    pairs = [(r["id"], r["run"]) for r in lines]
    assert sorted(pairs) == sorted((f"arith-0-{i}", run) for i in range(24) for run in (0, 1))  # each once
    assert results.read_bytes().startswith(kept)  # nothing written before the kill was lost or redone


def test_sigint_stops_cleanly_exits_130_and_prints_the_resume_command(tmp_path: Path):
    out = tmp_path / "run"
    results = out / "results.jsonl"
    args = ["batch", "synthetic:arith:40", "--out", str(out), *BACKEND, *CFG, "--max-problems-in-flight", "2"]
    proc = start(args, latency=0.1)
    try:
        wait_for_lines(proc, results, 2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    hint = stderr.split("resume with:")[1].strip().splitlines()[0]
    assert shlex.split(hint) == ["rsa", *args]
    lines = read_lines(results)
    assert 2 <= len(lines) < 40 and len({(r["id"], r["run"]) for r in lines}) == len(lines)
    assert all(r["error"] is None for r in lines)  # the cancelled solves were not recorded as failures
    assert (out / "summary.json").exists()
    import json

    assert json.loads((out / "run.json").read_text())["sessions"][-1]["status"] == "interrupted"
