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


def test_column_output_votes_each_digit_of_the_result_lines(tokenizer):
    problem = "What is 1024 - 89?"
    right = nano_data.solve_trace(problem)
    tail = {"r": nano_data.cut_tail(tokenizer, right, 40), "?": "no answer here"}

    def slipped(result: str) -> str:  # the same tail with another result line and box
        answer = str(int(result))
        return tail["r"].replace("=0935", f"={result}").replace("{935}", "{" + answer + "}")

    tail["h"], tail["t"], tail["n"] = slipped("0135"), slipped("0915"), slipped("-0935")

    def out(names: str) -> str:
        return nano_data.column_output([tail[n] for n in names], resolve_trace=right)

    assert out("hrt") == ("<think>\nvote 0135 0935 0915\n5 5 5=5\n3 3 1=3\n1 9 9=9\n0 0 0=0\n=0935\n"
                          "</think>\n\n\\boxed{935}")
    assert extract_answer(out("ht")) == "135"  # a tie: the earliest
    assert extract_answer(out("hth")) == "135"  # two agreeing slips win, as in any vote
    # every candidate wrong, on different digits: the vote per digit still finds the answer
    assert extract_answer(out("htr")) == extract_answer(out("hrt")) == "935"
    # a sign is a column of its own; a shorter line has `_` there
    assert out("nrn").split("\n")[6:9] == ["- _ -=-", "=-0935", "</think>"] and extract_answer(out("nrn")) == "-935"
    assert "- _ _=_" in out("nrr") and extract_answer(out("nrr")) == "935"
    # a candidate without a result line is `?` in every column and never outvotes one with
    assert out("?h").split("\n")[1:3] == ["vote ? 0135", "? 5=5"] and extract_answer(out("??h")) == "135"
    resolved = out("???")
    assert resolved.startswith("<think>\nanswers ? ? ?\nsolve\n") and extract_answer(resolved) == "935"


def test_column_examples_agree_with_a_strict_majority_of_the_candidates_shown(tokenizer):
    """column_example on first- and second-round candidates (K 3 and 5): the prompt shows K
    candidates, and when more than half of them share an answer the target boxes it (the digit vote
    only decides differently where no answer has a majority)."""
    rng = random.Random(2)
    checked = 0
    for problem in ("What is 345 * 78?", "What is 120 - 4567?", "What is 9 + 99 + 999?"):
        pool = nano_data.synthetic_pool(problem, rng)
        for k in (3, 5):
            for second_round in (0.0, 1.0):
                example = nano_data.column_example(problem, pool, rng, tokenizer, 40, k=k, p_second_round=second_round)
                tails = re.findall(r"--- Candidate \d+ ---\n(.*?)\n--- End of candidate", example.prompt, re.S)
                answers = [extract_answer(t) for t in tails]
                assert example.kind == "aggregate" and len(tails) == k
                top = max(answers, key=answers.count)
                if answers.count(top) * 2 > k:
                    assert extract_answer(example.target) == top
                    checked += 1
    assert checked >= 6


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


@pytest.mark.parametrize("aggregator,own", [("resolve", False), ("pick", False), ("vote", False), ("pair", True),
                                            ("column", True)])
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


def test_vote_ceiling_digit_vote_recovers_an_answer_no_candidate_has():
    import vote_ceiling

    assert vote_ceiling.padded("935", 4) == "0935" and vote_ceiling.padded("-266", 4) == "-0266"
    assert vote_ceiling.padded(None, 4) == "?" and nano_data.answer_of_result_line("-0000") == "0"
    # each candidate slipped on a different digit: the columns still vote 0935
    lines = ["0945", "0835", "0936"]
    assert vote_ceiling.digit_vote(lines) == "0935" and vote_ceiling.VOTERS["plurality"](lines) == "0945"
    assert vote_ceiling.digit_vote(["-0266", "0256", "-0266"]) == "-0266"
    assert vote_ceiling.digit_vote(["?", "?"]) == "?" and vote_ceiling.VOTERS["plurality"](["?", "?"]) == "?"
    assert nano_data.result_line_width("What is 12 + 7?") == 5
    assert nano_data.result_line_width("What is 12 - 345?") == 4


def test_vote_ceiling_replays_rounds_on_an_eval_report(tmp_path, capsys):
    import json

    from rsa.problems.synthetic import make

    import vote_ceiling

    problems = make("arith", 3, 11)
    # problem 0: 5 of 8 right, voting can only help; problem 1: none right; problem 2: all right
    rows = [dict(id=p.id, gold=p.answer, stages=[dict(answers=answers)]) for p, answers in zip(problems, [
        [problems[0].answer] * 5 + ["1", "2", None], ["7"] * 8, [problems[2].answer] * 8])]
    report = dict(n=3, seed=11, rows=rows)
    means = vote_ceiling.replay(report, vote_ceiling.VOTERS["plurality"], 3, 3, random.Random(0))
    assert means[0] == pytest.approx((5 / 8 + 0 + 1) / 3)
    assert means[-1] > means[0]
    assert means[-1] <= 2 / 3 + 1e-9  # problem 1 stays wrong whatever the voter
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    vote_ceiling.main([str(path), "--k", "3", "--rounds", "2"])
    out = capsys.readouterr().out
    assert "| plurality | 3 |" in out and "| digit | 3 |" in out
