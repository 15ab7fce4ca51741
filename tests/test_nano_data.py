"""The ZAYA1-nano training data: scratchpad traces and the checking aggregator's targets
(`examples/nano_data.py`), which decide what the shipped model learned to do with candidates."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import nano_data  # noqa: E402

from rsa.prompts import TRUNCATION_MARKER  # noqa: E402
from rsa.problems import extract_answer  # noqa: E402

NANO = Path(__file__).resolve().parents[1] / "backends/zaya1/nano"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(NANO)


def test_solve_traces_reach_the_gold_answer():
    from rsa.problems.synthetic import make

    for p in make("arith", 200, 5):
        trace = nano_data.solve_trace(p.problem)
        assert extract_answer(trace) == p.answer, (p.problem, trace)
        assert not nano_data.visible_slip(trace)


def test_visible_slip_flags_a_wrong_column_line_only():
    right = "<think>\n0345+0078\n5+8+0=3 c1\n4+7+1=2 c1\n3+0+1=4 c0\n0+0+0=0 c0\n=00423\n</think>\n\n\\boxed{423}"
    assert not nano_data.visible_slip(right)
    assert nano_data.visible_slip(right.replace("4+7+1=2 c1", "4+7+1=3 c1"))  # wrong digit
    assert nano_data.visible_slip(right.replace("4+7+1=2 c1", "4+7+1=2 c0"))  # dropped carry
    assert nano_data.visible_slip("<think>\n1-0-1=9 c1\n</think>")  # 1-0-1 = 0, no borrow
    assert not nano_data.visible_slip("<think>\n7*8+3=9 c5\n</think>")  # 7 * 8 + 3 = 59
    assert nano_data.visible_slip("<think>\n7*8+3=8 c5\n</think>")
    # the first line of a cut tail may start mid-line: never judged
    assert not nano_data.visible_slip(f"{TRUNCATION_MARKER}\n+7+1=9 c0\n3+0+1=4 c0\n</think>")


def test_pick_output_keeps_the_plurality_of_the_candidates_that_pass(tokenizer):
    problem = "What is 1024 - 89?"
    right = nano_data.solve_trace(problem)
    slipped = right.replace("1-0-1=0 c0\n=0935", "1-0-1=9 c1\n=9935").replace("{935}", "{9935}")
    unseen = right.replace("{935}", "{1935}")  # wrong answer, no wrong line in view
    tails = [nano_data.cut_tail(tokenizer, t, 56) for t in (slipped, unseen, right, right)]
    out = nano_data.pick_output(problem, tails, resolve_trace="unused")
    verdicts = [ln for ln in out.split("\n") if ln.split(" ")[0].isdigit() and ln.endswith((" ok", " no"))]
    assert verdicts == ["9935 no", "1935 ok", "935 ok", "935 ok"]
    assert "1-0-1=9 c1 no\n9935 no\n" in out and "1-0-1=0 c0 ok\n935 ok\n" in out  # lines checked one by one
    assert out.endswith("935 ok\npick 935\n</think>\n\n\\boxed{935}")
    # every candidate fails: solve again with the given trace
    out = nano_data.pick_output(problem, [tails[0], "no answer here"], resolve_trace=right)
    assert "9935 no\n? no\nsolve\n" in out and extract_answer(out) == "935"


def test_pick_example_second_round_candidates_are_aggregator_outputs(tokenizer):
    rng = random.Random(0)
    problem = "What is 345 * 78?"
    pool = nano_data.synthetic_pool(problem, rng)
    example = nano_data.pick_example(problem, pool, rng, tokenizer, 56, p_second_round=1.0)
    assert example.kind == "aggregate" and "--- Candidate" in example.prompt
    assert example.target.startswith("<think>\n") and extract_answer(example.target) is not None
    first = nano_data.pick_example(problem, pool, rng, tokenizer, 56, p_second_round=0.0)
    assert TRUNCATION_MARKER in first.prompt  # traces are longer than the tail: every candidate is cut


def test_vote_output_lists_the_answers_and_keeps_the_most_frequent(tokenizer):
    problem = "What is 1024 - 89?"
    right = nano_data.solve_trace(problem)
    wrong = right.replace("{935}", "{1935}")
    tails = [nano_data.cut_tail(tokenizer, t, 56) for t in (wrong, right, "no answer here", right)]
    out = nano_data.vote_output(tails, resolve_trace="unused")
    assert out == "<think>\nanswers 1935 935 ? 935\npick 935\n</think>\n\n\\boxed{935}"
    # a tie goes to the earliest of the most frequent answers
    assert nano_data.vote_output([tails[0], tails[1]], "unused").endswith("pick 1935\n</think>\n\n\\boxed{1935}")
    # no candidate has an answer: solve again with the given trace
    out = nano_data.vote_output(["no answer", "none either"], resolve_trace=right)
    assert out.startswith("<think>\nanswers ? ?\nsolve\n") and extract_answer(out) == "935"


def test_pair_output_is_the_plurality_of_three_by_one_comparison(tokenizer):
    problem = "What is 1024 - 89?"
    right = nano_data.solve_trace(problem)
    tail = {"r": nano_data.cut_tail(tokenizer, right, 56), "?": "no answer here"}
    for name, digit in (("w", "1"), ("o", "2")):  # slips in the hundreds digit, in the result line and the box
        tail[name] = tail["r"].replace("=0935", f"=0{digit}35").replace("{935}", "{" + digit + "35}")

    def out(names: str) -> str:
        return nano_data.pair_output([tail[n] for n in names], resolve_trace=right)

    assert out("wrr") == "<think>\ncmp 0935 0935\nmatch ====\nsame\n</think>\n\n\\boxed{935}"
    assert out("rwr") == "<think>\ncmp 0135 0935\nmatch =x==\ndiffer\n</think>\n\n\\boxed{935}"  # a1 = a3
    assert out("rww").endswith("same\n</think>\n\n\\boxed{135}")  # two agreeing slips win, as in any vote
    assert out("owr").endswith("differ\n</think>\n\n\\boxed{235}")  # all differ: the earliest
    assert out("r??") == "<think>\ncmp ? ?\nmatch x\ndiffer\n</think>\n\n\\boxed{935}"  # two blanks are not "same"
    assert out("?rw").endswith("differ\n</think>\n\n\\boxed{935}")  # no answer never wins over one
    resolved = out("???")
    assert resolved.startswith("<think>\nanswers ? ? ?\nsolve\n") and extract_answer(resolved) == "935"
    for names in ("wrr", "rwr", "rww", "owr", "wro", "rrw", "?rw", "r?w"):  # always the plurality, earliest on ties
        answers = [extract_answer(tail[n]) for n in names if n != "?"]
        best = max(answers, key=lambda a: (answers.count(a), -answers.index(a)))
        assert extract_answer(out(names)) == best, names


@pytest.mark.parametrize("aggregator,k", [("vote", None), ("pair", 3)])
def test_aggregation_examples_box_the_plurality_of_the_candidates_shown(tokenizer, aggregator, k):
    """vote_example and pair_example, on first-round and second-round candidates: the target boxes
    the most frequent answer among the candidates in the prompt (the earliest on a tie); the
    pair aggregator always sees three."""
    rng = random.Random(1)
    problem = "What is 345 * 78?"
    pool = nano_data.synthetic_pool(problem, rng)
    make = getattr(nano_data, f"{aggregator}_example")
    for second_round in (0.0, 1.0, 1.0):
        example = make(problem, pool, rng, tokenizer, 56, p_second_round=second_round)
        tails = re.findall(r"--- Candidate \d+ ---\n(.*?)\n--- End of candidate", example.prompt, re.S)
        given = [a for a in map(extract_answer, tails) if a is not None]
        assert example.kind == "aggregate" and len(tails) >= 1 and (k is None or len(tails) == k)
        best = max(given, key=lambda a: (given.count(a), -given.index(a))) if given else "26910"
        assert extract_answer(example.target) == best


@pytest.mark.parametrize("aggregator,own", [("resolve", False), ("pick", False), ("vote", False), ("pair", True)])
def test_train_nano_tiny_run_writes_a_loadable_checkpoint(tmp_path, aggregator, own):
    """`examples/train_nano.py --tiny` (a few steps of a smaller model) for each aggregation
    target (`pair` also with own rollouts as candidates and, --self-distill, as solve targets):
    the script runs end to end and writes a checkpoint transformers loads."""
    import json
    import subprocess

    from transformers import ZayaForCausalLM

    script = Path(__file__).resolve().parents[1] / "examples" / "train_nano.py"
    extra = []
    if own:  # two problems' first-round rollouts in nano_rollouts.py's format, one of them wrong
        rng = random.Random(3)
        rows = [{"problem": p, "stages": [[{"trace": t} for t in (nano_data.solve_trace(p),
                                                                   nano_data.wrong_trace(p, rng))]]}
                for p in ("What is 12 + 30?", "What is 7 * 8?")]
        (tmp_path / "own.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        extra = ["--own-rollouts", str(tmp_path / "own.jsonl"), "--self-distill"]
    out = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, str(script), "--tiny", "--aggregator", aggregator, "--out", str(out),
                           "--decision-weight", "5", *extra], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps_done"] == 6 and all(r["loss"] == r["loss"] for r in log["curve"])  # finite, not NaN
    assert ZayaForCausalLM.from_pretrained(out).config.model_type == "zaya"
