"""Training data for ZAYA1-nano: scratchpad traces, realistic wrong traces, solve and
aggregation examples, and the tokenizer they are written in.

Task family (fixed): "What is A + B?", "What is A - B?", "What is A * B?" and
"What is A + B + C?" from `rsa.problems.synthetic` (kind `arith`). A trace thinks column by
column on zero-padded operands and ends with `\\boxed{RESULT}`:

    <think>
    4567+0891
    7+1+0=8 c0
    6+9+0=5 c1
    5+8+1=4 c1
    4+0+1=5 c0
    =05458
    </think>

    \\boxed{5458}

Each column line is `x op y [op z] op carry = digit cNEXT`; subtraction with A < B first
writes `swap` and subtracts the other way; products write one partial product per digit of B,
then add them column by column. Wrong traces come from the same algorithm with one injected
fault (a dropped or spurious carry, a wrong digit, a misread operand digit, a slip when
copying the result), and every later step follows the faulty state, as a real slip would.

Aggregation examples are built exactly the way the controller builds them: the repository's
`render_aggregate` over candidate tails cut with the model's own tokenizer (last
`tail_tokens` ids, decoded, with `TRUNCATION_MARKER` when cut). Their target first lists the
candidates' answers (`answers 5458 5358 5458 5458`), then solves the problem again.
`pick_output` / `pick_example` build the targets of the experimental checking aggregator
(`train_nano.py --aggregator pick`): check each candidate's visible lines, keep the plurality of
the candidates that pass, solve again only when none does. `vote_output` / `vote_example` build
those of the voting aggregator (`--aggregator vote`): list the answers, keep the most frequent.
`column_output` / `column_example` build those of the column aggregator (`--aggregator column`):
copy the K candidates' result lines and take the majority of each digit column, the way the
scratchpad adds.

Not covered: anything beyond this task family; the model is a demonstration, not a
calculator.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from rsa.prompts import (
    AGGREGATE_TEMPLATE,
    REFINE_TEMPLATE,
    SOLVE_TEMPLATE,
    TRUNCATION_MARKER,
    render_aggregate,
    render_solve,
)

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "Example",
    "aggregate_target",
    "answer_of_result_line",
    "build_tokenizer",
    "column_example",
    "column_output",
    "column_votes",
    "cut_tail",
    "majority",
    "make_example",
    "own_example",
    "parse_problem",
    "pick_example",
    "pick_output",
    "result_line_width",
    "visible_slip",
    "vote_example",
    "vote_output",
    "solve_trace",
    "tokenizer_corpus",
    "wrong_trace",
]

USER, ASSISTANT, SYSTEM, END, PAD = "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|pad|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = [PAD, END, USER, ASSISTANT, SYSTEM, THINK_OPEN, THINK_CLOSE]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_PROBLEM = re.compile(r"What is (\d+) ([+\-*]) (\d+)(?: \+ (\d+))?\?")


def parse_problem(text: str) -> tuple[str, list[int]]:
    """('add'|'sub'|'mul'|'add3', operands) of a problem of the task family."""
    m = _PROBLEM.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a problem of the nano task family: {text!r}")
    a, op, b, c = m.groups()
    if c is not None:
        if op != "+":
            raise ValueError(f"not a problem of the nano task family: {text!r}")
        return "add3", [int(a), int(b), int(c)]
    return {"+": "add", "-": "sub", "*": "mul"}[op], [int(a), int(b)]


# ---------------------------------------------------------------------------------------------
# Scratchpad algorithms, with an optional injected fault
# ---------------------------------------------------------------------------------------------
@dataclass
class Fault:
    """One slip: at step `at` (a column line) do `kind`; `value` picks the wrong digit."""

    kind: str  # digit | carry | operand | copy
    at: int
    value: int


def _digits(n: int, width: int) -> list[int]:
    return [int(ch) for ch in str(n).zfill(width)]


def _wrong(rng_value: int, right: int, base: int = 10) -> int:
    """A digit other than `right`, chosen by `rng_value`."""
    return (right + 1 + rng_value % (base - 1)) % base


class _Pad:
    """Collects lines and counts column steps so a fault can fire at step `fault.at`."""

    def __init__(self, fault: Fault | None) -> None:
        self.lines: list[str] = []
        self.fault = fault
        self.step = 0

    def fires(self, kind: str) -> bool:
        return self.fault is not None and self.fault.kind == kind and self.fault.at == self.step

    def column_line(self, lhs: str, digit: int, nxt: int, out: list[int]) -> int:
        """Write `lhs=digit cNEXT` (a digit or carry fault fires here when due), append the digit
        to `out`, count the step; returns the carry the next column uses."""
        if self.fires("digit"):
            digit = _wrong(self.fault.value, digit)
        if self.fires("carry"):
            nxt = nxt - 1 if nxt > 0 else nxt + 1
        self.lines.append(f"{lhs}={digit} c{nxt}")
        out.append(digit)
        self.step += 1
        return nxt


def _columns(pad: _Pad, rows: list[list[int]], op: str) -> list[int]:
    """Column-wise add (op '+') or subtract (op '-') digit rows of equal width; returns the
    result digits, most significant first, including a final carry digit for '+'."""
    width = len(rows[0])
    carry, out = 0, []
    for i in range(width - 1, -1, -1):
        col = [r[i] for r in rows]
        if pad.fires("operand"):
            col[-1] = _wrong(pad.fault.value, col[-1])
        if op == "+":
            total = sum(col) + carry
            digit, nxt = total % 10, total // 10
        else:
            total = col[0] - col[1] - carry
            digit, nxt = total % 10, int(total < 0)
        carry = pad.column_line(f"{op.join(str(d) for d in col)}{op}{carry}", digit, nxt, out)
    out.reverse()
    return [carry] + out if op == "+" else out


def _mul_row(pad: _Pad, a: list[int], b: int) -> list[int]:
    carry, out = 0, []
    for i in range(len(a) - 1, -1, -1):
        x = a[i]
        if pad.fires("operand"):
            x = _wrong(pad.fault.value, x)
        total = x * b + carry
        digit, nxt = total % 10, total // 10
        carry = pad.column_line(f"{x}*{b}+{carry}", digit, nxt, out)
    out.reverse()
    return [carry] + out


def _number(digits: list[int], negative: bool = False) -> int:
    value = int("".join(map(str, digits)))
    return -value if negative else value


def _steps(kind: str) -> int:
    """Column lines a trace of this kind has (faults pick one of them)."""
    return {"add": 4, "sub": 4, "add3": 4, "mul": 3 + 3 + 5}[kind]


def _think(kind: str, ops: list[int], fault: Fault | None) -> tuple[list[str], int]:
    """(scratchpad lines, the result they reach)."""
    pad = _Pad(fault)
    if kind in ("add", "add3"):
        rows = [_digits(x, 4) for x in ops]
        pad.lines.append("+".join(str(x).zfill(4) for x in ops))
        result = _columns(pad, rows, "+")
        negative = False
    elif kind == "sub":
        a, b = ops
        pad.lines.append(f"{a:04d}-{b:04d}")
        negative = a < b
        if negative:
            a, b = b, a
            pad.lines.append(f"swap {a:04d}-{b:04d}")
        result = _columns(pad, [_digits(a, 4), _digits(b, 4)], "-")
    else:
        a, b = ops
        ad, bd = _digits(a, 3), _digits(b, 2)
        pad.lines.append(f"{a:03d}*{b:02d}")
        low = _mul_row(pad, ad, bd[1])
        pad.lines.append("=" + "".join(map(str, low)))
        high = _mul_row(pad, ad, bd[0])
        pad.lines.append("=" + "".join(map(str, high)) + "0")
        rows = [[0] + low, high + [0]]
        pad.lines.append("+".join("".join(map(str, r)) for r in rows))
        result = _columns(pad, rows, "+")
        negative = False
    value = _number(result, negative)
    pad.lines.append("=" + ("-" if negative else "") + "".join(map(str, result)))
    return pad.lines, value


def _render(lines: list[str], answer: int) -> str:
    return f"{THINK_OPEN}\n" + "\n".join(lines) + f"\n{THINK_CLOSE}\n\n\\boxed{{{answer}}}"


def solve_trace(problem: str) -> str:
    """The correct trace of a problem."""
    kind, ops = parse_problem(problem)
    lines, value = _think(kind, ops, None)
    return _render(lines, value)


def wrong_trace(problem: str, rng: random.Random) -> str:
    """A trace with one realistic slip whose final answer is wrong (falls back to a slip when
    copying the result if a fault happens to cancel out)."""
    kind, ops = parse_problem(problem)
    right = _think(kind, ops, None)[1]
    for _ in range(8):
        fault = Fault(rng.choice(["digit", "digit", "carry", "carry", "operand"]),
                      rng.randrange(_steps(kind)), rng.randrange(9))
        lines, value = _think(kind, ops, fault)
        if value != right:
            return _render(lines, value)
    lines, _ = _think(kind, ops, None)
    digits = list(str(abs(right)))
    i = rng.randrange(len(digits))
    digits[i] = str(_wrong(rng.randrange(9), int(digits[i])))
    value = int("".join(digits)) * (-1 if right < 0 else 1)
    return _render(lines, value)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------
def build_tokenizer(corpus: list[str], vocab_size: int, out_dir: Path | None = None):
    """A byte-level BPE whose digits are always single tokens and whose chat tokens and think
    tags are single special tokens; merges may cross spaces, so the fixed English of the
    templates collapses into a few tokens. Returns a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), max_token_length=64,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=END, pad_token=PAD, bos_token=None, unk_token=None,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM, THINK_OPEN, THINK_CLOSE],
        model_max_length=1024, padding_side="left", clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def cut_tail(tokenizer, text: str, tail_tokens: int) -> str:
    """`rsa.tails.make_tail` with this tokenizer: the last `tail_tokens` ids, decoded, behind
    the truncation marker when cut."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= tail_tokens:
        return text
    kept = tokenizer.decode(ids[-tail_tokens:], skip_special_tokens=False).lstrip("\ufffd")
    return f"{TRUNCATION_MARKER}\n{kept}"


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _answers(tails: list[str]) -> list[str]:
    """Each tail's last boxed answer, `?` for a tail without one."""
    out = []
    for tail in tails:
        found = _BOXED.findall(tail)
        out.append(found[-1] if found else "?")
    return out


def aggregate_target(problem: str, tails: list[str]) -> str:
    """The aggregation answer: the candidates' boxed answers in order (`?` for none), then a
    fresh correct solution."""
    answers = _answers(tails)
    trace = solve_trace(problem)
    return trace.replace(f"{THINK_OPEN}\n", f"{THINK_OPEN}\nanswers {' '.join(answers)}\n", 1)


@dataclass
class Example:
    prompt: str  # the user message
    target: str  # the assistant message (trace)
    kind: str  # solve | aggregate


def make_example(problem: str, rng: random.Random, tokenizer, tail_tokens: int,
                 p_aggregate: float = 0.5) -> Example:
    """A solve example, or (probability `p_aggregate`) an aggregation example whose K tails
    (K=4 mostly, sometimes 1-3) come from a random mix of correct and wrong traces."""
    if rng.random() >= p_aggregate:
        return Example(render_solve(SOLVE_TEMPLATE, problem), solve_trace(problem), "solve")
    k = 4 if rng.random() < 0.7 else rng.randint(1, 3)
    n_right = rng.randint(0, k)
    traces = [solve_trace(problem)] * n_right
    wrong = [wrong_trace(problem, rng) for _ in range(k - n_right)]
    if len(wrong) >= 2 and rng.random() < 0.3:  # a shared slip: two wrong candidates agree
        wrong[1] = wrong[0]
    traces += wrong
    rng.shuffle(traces)
    tails = [cut_tail(tokenizer, t, tail_tokens) for t in traces]
    prompt = render_aggregate(AGGREGATE_TEMPLATE, REFINE_TEMPLATE, problem, tails)
    return Example(prompt, aggregate_target(problem, tails), "aggregate")


def own_example(record: dict, rng: random.Random, tokenizer, tail_tokens: int, k: int = 4,
                answer_pick: bool = False) -> Example:
    """An aggregation example over the model's OWN candidates: `record` is one line of
    `examples/nano_rollouts.py` (a problem and its stages of candidates with the tails the
    controller cut; the last stage has none, so they are cut here with `cut_tail`). K candidates of one stage are drawn at random; the target lists their
    answers, then `pick X` when the gold answer X is among them (the aggregator learns to pick
    the right candidate on its own error distribution), then the correct trace."""
    problem, gold = record["problem"], str(record["gold"])
    stage = rng.choice([s for s in record["stages"] if len(s) >= k])
    cands = rng.sample(stage, k)
    tails = [c["tail"] if c.get("tail") is not None else cut_tail(tokenizer, c["trace"], tail_tokens)
             for c in cands]
    prompt = render_aggregate(AGGREGATE_TEMPLATE, REFINE_TEMPLATE, problem, tails)
    target = aggregate_target(problem, tails)
    if any(c["correct"] for c in cands):
        head, rest = target.split("\n", 2)[:2], target.split("\n", 2)[2]
        if answer_pick:  # answer with the picked candidate at once, no re-solve
            rest = f"{THINK_CLOSE}\n\n\\boxed{{{gold}}}"
        target = "\n".join(head) + f"\npick {gold}\n" + rest
    return Example(prompt, target, "aggregate")


# ---------------------------------------------------------------------------------------------
# The checking aggregator: verify each candidate's visible lines, keep the plurality of the rest
# ---------------------------------------------------------------------------------------------
_SUM_LINE = re.compile(r"(\d(?:\+\d){2,3})=(\d) c(\d+)")
_SUB_LINE = re.compile(r"(\d)-(\d)-(\d)=(\d) c(\d+)")
_MUL_LINE = re.compile(r"(\d)\*(\d)\+(\d)=(\d) c(\d+)")


def _line_ok(line: str) -> bool | None:
    """Whether one column line of a scratchpad is right (None: not a column line)."""
    if m := _SUM_LINE.fullmatch(line):
        total = sum(int(d) for d in m.group(1).split("+"))
        return int(m.group(2)) == total % 10 and int(m.group(3)) == total // 10
    if m := _SUB_LINE.fullmatch(line):
        a, b, c, d, nxt = map(int, m.groups())
        total = a - b - c
        return d == total % 10 and nxt == int(total < 0)
    if m := _MUL_LINE.fullmatch(line):
        x, b, c, d, nxt = map(int, m.groups())
        total = x * b + c
        return d == total % 10 and nxt == total // 10
    return None


def _visible_lines(tail: str) -> list[str]:
    """The complete lines of a tail's scratchpad: no truncation marker, no first line when the
    tail was cut (it may start mid-line), nothing before an aggregator's `pick` line (the
    lines after it are the copied scratchpad), nothing from `</think>` on."""
    lines = tail.split("\n")
    if lines and lines[0] == TRUNCATION_MARKER:
        lines = lines[2:]
    picks = [i for i, ln in enumerate(lines) if ln.startswith("pick ")]
    if picks:
        lines = lines[picks[-1] + 1:]
    if THINK_CLOSE in lines:
        lines = lines[:lines.index(THINK_CLOSE)]
    return [ln for ln in lines if ln and ln != THINK_OPEN]


def visible_slip(tail: str) -> bool:
    """True when a complete column line visible in the tail is wrong (the slip a checker sees)."""
    return _checked_lines(tail)[1]


def _checked_lines(tail: str) -> tuple[str, bool]:
    """The visible column lines of a tail, each followed by ` ok` or ` no` (whether it is
    right), and whether any is wrong."""
    verdicts = [(ln, _line_ok(ln)) for ln in _visible_lines(tail)]
    checked = [(ln, ok) for ln, ok in verdicts if ok is not None]
    return "".join(f"{ln} {'ok' if ok else 'no'}\n" for ln, ok in checked), any(not ok for _, ok in checked)


def pick_output(problem: str, tails: list[str], resolve_trace: str) -> str:
    """The checking aggregator's answer over candidate tails, a deterministic function of the
    tails. For each candidate in turn: its visible column lines copied, each marked ` ok` or
    ` no` (recomputed from its operands), then `ANSWER ok` or `ANSWER no` (`no` when a line is
    wrong or there is no boxed answer). Then `pick X` for the plurality answer X of the `ok`
    candidates (first seen wins a tie) and `\\boxed{X}` at once (copying X's scratchpad lines
    first was tried: sampled at temperature 1.0 the copies drift and the answer with them); or, when no candidate passes, `solve` and a fresh trace (`resolve_trace`, the
    correct trace in training)."""
    head, passing, first_pass = [], [], {}
    for i, tail in enumerate(tails):
        found = _BOXED.findall(tail)
        answer = found[-1] if found else None
        lines, slipped = _checked_lines(tail)
        ok = answer is not None and not slipped
        head.append(f"{lines}{answer or '?'} {'ok' if ok else 'no'}\n")
        if ok:
            passing.append(answer)
            first_pass.setdefault(answer, i)
    if not passing:
        body = resolve_trace.split(f"{THINK_OPEN}\n", 1)[-1]
        return f"{THINK_OPEN}\n{''.join(head)}solve\n{body}"
    best = max(passing.count(a) for a in passing)
    choice = next(a for a in passing if passing.count(a) == best)
    return f"{THINK_OPEN}\n{''.join(head)}pick {choice}\n{THINK_CLOSE}\n\n\\boxed{{{choice}}}"


def pick_example(problem: str, pool: list[str], rng: random.Random, tokenizer, tail_tokens: int,
                 p_second_round: float = 0.5) -> Example:
    """An aggregation example for the checking aggregator. `pool` holds first-round traces of
    the problem (the model's own rollouts or synthetic right and slipped traces). With
    probability `p_second_round` the candidates are second-round outputs instead: the
    aggregator's own answers over random subsets of the pool (re-solves drawn from the pool),
    so the second aggregation round sees the candidates it will really see."""
    k = 4 if rng.random() < 0.9 else rng.randint(1, 3)
    output = lambda tails, resolve: pick_output(problem, tails, resolve)  # noqa: E731
    return _aggregation_example(problem, pool, rng, tokenizer, tail_tokens, k, p_second_round, output)


def _aggregation_example(problem: str, pool: list[str], rng: random.Random, tokenizer, tail_tokens: int, k: int,
                         p_second_round: float, output, subset: int = 4) -> Example:
    """K candidates drawn from `pool` (first-round traces) or, with probability `p_second_round`,
    from 8 outputs of the aggregator itself over random subsets of `subset`; the target is
    `output(tails, resolve_trace)` with the correct trace to resolve with."""
    if rng.random() < p_second_round:
        pool = [output([cut_tail(tokenizer, t, tail_tokens) for t in rng.sample(pool, min(subset, len(pool)))],
                       rng.choice(pool)) for _ in range(8)]
    cands = [rng.choice(pool) for _ in range(k)] if len(pool) < k else rng.sample(pool, k)
    tails = [cut_tail(tokenizer, t, tail_tokens) for t in cands]
    prompt = render_aggregate(AGGREGATE_TEMPLATE, REFINE_TEMPLATE, problem, tails)
    return Example(prompt, output(tails, solve_trace(problem)), "aggregate")


# ---------------------------------------------------------------------------------------------
# The voting aggregator: list the candidates' answers, keep the most frequent one
# ---------------------------------------------------------------------------------------------
def _resolve(answers: list[str], resolve_trace: str) -> str:
    """What the voting aggregators write when no candidate has an answer: the answer list (all
    `?`), `solve` and a fresh trace (`resolve_trace`, the correct trace in training)."""
    return f"{THINK_OPEN}\nanswers {' '.join(answers)}\nsolve\n" + resolve_trace.split(f"{THINK_OPEN}\n", 1)[-1]


def vote_output(tails: list[str], resolve_trace: str) -> str:
    """The voting aggregator's answer over candidate tails, a deterministic function of them:
    `answers a1 a2 ...` (each candidate's last boxed answer, `?` for none), `pick X` for the
    most frequent answer X (the earliest wins a tie) and `\\boxed{X}` at once; when no candidate
    has an answer, `solve` and a fresh trace (`resolve_trace`, the correct trace in training).
    The output is short on purpose: sampled at temperature 1.0, every extra token is a chance
    to drift (longer checking outputs lost more accuracy than their checks won)."""
    answers = _answers(tails)
    given = [a for a in answers if a != "?"]
    if not given:
        return _resolve(answers, resolve_trace)
    best = max(given.count(a) for a in given)
    choice = next(a for a in given if given.count(a) == best)
    return f"{THINK_OPEN}\nanswers {' '.join(answers)}\npick {choice}\n{THINK_CLOSE}\n\n\\boxed{{{choice}}}"


def vote_example(problem: str, pool: list[str], rng: random.Random, tokenizer, tail_tokens: int,
                 p_second_round: float = 0.4) -> Example:
    """An aggregation example for the voting aggregator. `pool` holds first-round traces of the
    problem (the model's own rollouts or a synthetic pool). K is 4 most often, otherwise 1 to 8.
    With probability `p_second_round` the candidates are the aggregator's own outputs over
    random subsets of the pool, as the second round sees them."""
    k = 4 if rng.random() < 0.6 else rng.randint(1, 8)
    return _aggregation_example(problem, pool, rng, tokenizer, tail_tokens, k, p_second_round, vote_output)


# ---------------------------------------------------------------------------------------------
# The pair aggregator: plurality of three candidates with one comparison
# ---------------------------------------------------------------------------------------------
_RESULT_LINE = re.compile(r"^=(-?\d+)$", re.M)  # the scratchpad's zero-padded result, e.g. `=01239`


def result_line_width(problem: str) -> int:
    """Digits in the scratchpad's zero-padded result line for `problem` (a sign not counted)."""
    return len(_result_line(solve_trace(problem)).lstrip("-"))


def _result_line(tail: str) -> str:
    """A tail's last scratchpad result line without its `=` (fixed width for a problem's form), `?` for none."""
    found = _RESULT_LINE.findall(tail)
    return found[-1] if found else "?"


def pair_output(tails: list[str], resolve_trace: str) -> str:
    """The K=3 aggregator's answer. Plurality voting needs counting; over three candidates it is
    one equality test: if candidates 2 and 3 agree their answer is the plurality, otherwise
    candidate 1's is (it equals one of them, or all three differ and the earliest wins). The test
    is written out so that each step is local for a tiny model at temperature 1.0:
    `cmp X Y` copies the result lines of candidates 2 and 3 (one width per problem form),
    `match` puts one mark per character (`=` equal, `x` not; mark j sits a fixed distance after
    both characters it compares), then `same` (no `x`) or `differ`, then `\\boxed{...}` of the
    chosen candidate. A candidate without an answer never wins over one with; when none has one,
    `solve` and a fresh trace."""
    answers = _answers(tails)
    given = [a for a in answers if a != "?"]
    if not given:
        return _resolve(answers, resolve_trace)
    if len(tails) < 3:
        return f"{THINK_OPEN}\nanswers {' '.join(answers)}\n{THINK_CLOSE}\n\n\\boxed{{{given[0]}}}"
    x, y = _result_line(tails[1]), _result_line(tails[2])
    marks = "".join("=" if j < min(len(x), len(y)) and x[j] == y[j] and x != "?" else "x"
                    for j in range(max(len(x), len(y))))
    same = x == y != "?" and answers[1] != "?"
    choice = answers[1] if same else answers[0] if answers[0] != "?" else given[0]
    return (f"{THINK_OPEN}\ncmp {x} {y}\nmatch {marks}\n{'same' if same else 'differ'}\n"
            f"{THINK_CLOSE}\n\n\\boxed{{{choice}}}")


def pair_example(problem: str, pool: list[str], rng: random.Random, tokenizer, tail_tokens: int,
                 p_second_round: float = 0.5) -> Example:
    """An aggregation example for the pair aggregator: always three candidates, drawn from
    `pool` (first-round traces) or, with probability `p_second_round`, from the aggregator's own
    outputs over random subsets of three."""
    return _aggregation_example(problem, pool, rng, tokenizer, tail_tokens, 3, p_second_round, pair_output,
                                subset=3)


def synthetic_pool(problem: str, rng: random.Random, n: int = 8) -> list[str]:
    """First-round traces of a problem: each right with one shared probability drawn per problem,
    otherwise one realistic slip."""
    p_right = rng.uniform(0.1, 0.9)
    pool = [solve_trace(problem) if rng.random() < p_right else wrong_trace(problem, rng) for _ in range(n)]
    if rng.random() < 0.4:  # a shared slip: two or three wrong candidates agree
        slip = wrong_trace(problem, rng)
        for i in rng.sample(range(n), rng.randint(2, 3)):
            pool[i] = slip
    return pool


def tokenizer_corpus(problems: list[str], rng: random.Random, n: int) -> list[str]:
    """Texts to train the BPE on: solve prompts, aggregation prompts with whole traces as
    candidates (so no tokenizer is needed yet), and traces, all in chat format."""
    out = []
    for i in range(n):
        p = problems[i % len(problems)]
        traces = [solve_trace(p) if rng.random() < 0.5 else wrong_trace(p, rng) for _ in range(4)]
        cut = [f"{TRUNCATION_MARKER}\n" + t[len(t) // 2:] for t in traces]
        k = rng.choice([1, 4, 4])
        prompt = render_aggregate(AGGREGATE_TEMPLATE, REFINE_TEMPLATE, p, cut[:k])
        out.append(f"{USER}\n{render_solve(SOLVE_TEMPLATE, p)}{END}\n{ASSISTANT}\n{traces[0]}{END}\n")
        out.append(f"{USER}\n{prompt}{END}\n{ASSISTANT}\n{aggregate_target(p, cut[:k])}{END}\n")
    return out


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# The column aggregator: a majority vote per digit of the candidates' result lines
# ---------------------------------------------------------------------------------------------
def _column_chars(entries: list[str], j: int) -> list[str]:
    """Column j (1 = last character) of the candidates' result lines, right-aligned: the
    character, `_` where a line is shorter, `?` for a candidate without a result line."""
    return ["?" if e == "?" else e[-j] if j <= len(e) else "_" for e in entries]


def majority(items: list[str]) -> str:
    """The most frequent item other than `?` (the earliest wins a tie); `?` when all are."""
    given = [c for c in items if c != "?"]
    if not given:
        return "?"
    best = max(given.count(c) for c in given)
    return next(c for c in given if given.count(c) == best)


def column_votes(entries: list[str]) -> list[tuple[list[str], str]]:
    """The per-digit vote over result lines (`?` for a candidate without one): for each column
    from the right, its characters (`_` where a line is shorter) and their majority."""
    width = max((len(e) for e in entries if e != "?"), default=0)
    return [(chars, majority(chars)) for chars in (_column_chars(entries, j) for j in range(1, width + 1))]


def answer_of_result_line(result: str) -> str:
    """The answer a scratchpad result line (without `=`) stands for: sign, no leading zeros."""
    digits = "".join(c for c in result if c.isdigit()).lstrip("0") or "0"
    return f"-{digits}" if result.startswith("-") and digits != "0" else digits


def column_output(tails: list[str], resolve_trace: str) -> str:
    """The column aggregator's answer, a deterministic function of the tails. It votes digit by
    digit, the way the scratchpad adds: `vote X1 X2 X3` copies each candidate's result line
    (`=05458` -> `05458`; `?` when a tail has none), then one line per column from the right,
    `a b c=m`, the column's characters and their majority (the earliest wins a tie; `_` where a
    line is shorter, so a sign is a column too), then the result line `=...` of the majorities and
    `\\boxed{...}` of it. Each step is local: a column line reads one character of each number in
    the line above, like the solver's column lines, and the majority of a few tokens is a sum of
    their embeddings, no comparison needed. Where candidates slipped on different digits, the
    vote recovers the right answer even if every candidate is wrong. When no tail has a result
    line, `solve` and a fresh trace (`resolve_trace`, the correct trace in training)."""
    entries = [_result_line(t) for t in tails]
    if all(e == "?" for e in entries):
        return _resolve(_answers(tails), resolve_trace)
    votes = column_votes(entries)
    lines = [f"{' '.join(chars)}={m}" for chars, m in votes]
    line = "".join(m for _, m in reversed(votes) if m != "_")
    return (f"{THINK_OPEN}\nvote {' '.join(entries)}\n" + "\n".join(lines) + f"\n={line}\n{THINK_CLOSE}\n\n"
            f"\\boxed{{{answer_of_result_line(line)}}}")


def column_example(problem: str, pool: list[str], rng: random.Random, tokenizer, tail_tokens: int, k: int = 3,
                   p_second_round: float = 0.5) -> Example:
    """An aggregation example for the column aggregator: K candidates drawn from `pool`
    (first-round traces) or, with probability `p_second_round`, from the aggregator's own
    outputs over random subsets of K."""
    return _aggregation_example(problem, pool, rng, tokenizer, tail_tokens, k, p_second_round, column_output,
                                subset=k)
