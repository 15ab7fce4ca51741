"""`rsa solve` end to end: plain and JSON output, config layering, clean usage errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests_cli_helpers import BACKEND

from rsa import SolveResult


def test_solve_prints_answer_share_and_stages(rsa_cli):
    proc = rsa_cli("solve", "What is 3 + 4?", *BACKEND, "-n", "4", "-k", "2", "-t", "2", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "answer: 8" in out  # 7 is odd: the scripted aggregation stages answer 8
    assert "share:  100%" in out and "8 x4" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["0", "1", "2"]
    assert "4/4" in rows[0] and "75%" in rows[0]  # stage 0: slot 0 says 7, three say 8
    assert "seed 1" in out


def test_solve_json_with_config_file_and_flag_override(rsa_cli, tmp_path: Path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"population": 3, "aggregation_size": 2, "rounds": 0, "seed": 9}))
    proc = rsa_cli("solve", "-", *BACKEND, "--config", str(cfg), "-n", "2", "--json", input="What is 2 + 2?")
    assert proc.returncode == 0, proc.stderr
    result = SolveResult.model_validate_json(proc.stdout)
    assert result.config.population == 2 and result.config.rounds == 0 and result.seed == 9
    assert len(result.stages) == 1 and result.answer == "4"  # 1:1 tie goes to slot 0, which is right


@pytest.mark.parametrize("args, code, message", [
    (["-n", "2", "-k", "3", *BACKEND], 2, "aggregation_size (K=3) must not exceed population (N=2)"),
    (["--temperature", "-1", *BACKEND], 2, "--temperature: Input should be greater than or equal to 0"),
    (["--preset", "nope", *BACKEND], 2, "unknown preset 'nope'"),
    (["--backend", "import:tests_cli_helpers:not_a_backend"], 2, "lacks ['generate'"),
    (["--backend", "bogus"], 2, "unknown backend 'bogus'"),
])
def test_solve_usage_errors_are_clean(rsa_cli, args, code, message):
    proc = rsa_cli("solve", "What is 1 + 1?", *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_is_installed():
    import subprocess

    script = Path(sys.executable).parent / "rsa"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "batch" in proc.stdout and "report" in proc.stdout
