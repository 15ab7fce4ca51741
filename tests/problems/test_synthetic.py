"""Synthetic sets: determinism, exact format, and answers recomputed independently."""

from __future__ import annotations

import re
import subprocess
import sys
from fractions import Fraction

import pytest

from rsa.problems import synthetic
from rsa.problems.synthetic import KINDS, SyntheticSpec, make, parse_spec

ARITH_FORMS = {
    "add": re.compile(r"What is (\d+) \+ (\d+)\?"),
    "sub": re.compile(r"What is (\d+) - (\d+)\?"),
    "mul": re.compile(r"What is (\d+) \* (\d+)\?"),
    "add3": re.compile(r"What is (\d+) \+ (\d+) \+ (\d+)\?"),
}


def arith_answer(text: str) -> tuple[str, list[str], int]:
    for form, pattern in ARITH_FORMS.items():
        m = pattern.fullmatch(text)
        if m:
            nums = [int(g) for g in m.groups()]
            value = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
                     "add3": lambda a, b, c: a + b + c}[form](*nums)
            return form, list(m.groups()), value
    raise AssertionError(f"not an arith problem: {text!r}")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deterministic_prefix_stable_and_distinct_ids(kind):
    a = make(kind, 40, seed=7)
    assert a == make(kind, 40, seed=7)
    assert make(kind, 10, seed=7) == a[:10]
    assert [p.id for p in a] == [f"{kind}-7-{i}" for i in range(40)]
    assert a != make(kind, 40, seed=8)
    assert all(p.answer for p in a)


def test_same_set_in_a_fresh_interpreter():
    code = "from rsa.problems.synthetic import make; print([p.problem for p in make('arith', 5, 11)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert out.strip() == str([p.problem for p in make("arith", 5, 11)])


def test_arith_is_exact_format_with_correct_answers_and_digit_limits():
    problems = make("arith", 400, seed=0)
    forms = []
    for p in problems:
        form, nums, value = arith_answer(p.problem)
        assert p.answer == str(value), p
        assert p.metadata["form"] == form
        limits = [3, 2] if form == "mul" else [4] * len(nums)
        assert all(len(n) <= lim and (n == "0" or not n.startswith("0")) for n, lim in zip(nums, limits)), p
        forms.append(form)
    counts = {f: forms.count(f) for f in ARITH_FORMS}
    assert all(60 <= c <= 140 for c in counts.values()), counts  # uniform mix: ~100 each of 400
    assert any(len(n) == 4 for p in problems for n in arith_answer(p.problem)[1])


@pytest.mark.parametrize("kind", ["add", "sub", "mul", "add3"])
def test_sub_kinds_only_produce_their_form(kind):
    for p in make(kind, 50, seed=1):
        assert arith_answer(p.problem)[0] == kind
        assert p.answer == str(arith_answer(p.problem)[2])


def test_mod_answers():
    for p in make("mod", 100, seed=2):
        m = re.fullmatch(r"What is the remainder when (?:(\d+)|\$(\d+)\^\{(\d+)\}\$) is divided by (\d+)\?", p.problem)
        assert m, p.problem
        modulus = int(m.group(4))
        value = int(m.group(1)) % modulus if m.group(1) else pow(int(m.group(2)), int(m.group(3)), modulus)
        assert p.answer == str(value)


def side_value(side: str, x: int) -> int:
    """Value of one side written as 'x', '-x', '3x - 5', '-12x + 4' or '7' at the given x."""
    m = re.fullmatch(r"(-?\d*)x(?: ([+-]) (\d+))?", side)
    if m is None:
        return int(side)
    coef = {"": 1, "-": -1}.get(m.group(1), None)
    coef = int(m.group(1)) if coef is None else coef
    const = 0 if m.group(2) is None else int(m.group(3)) * (1 if m.group(2) == "+" else -1)
    return coef * x + const


def test_linear_answers_solve_the_equation():
    for p in make("linear", 100, seed=3):
        m = re.fullmatch(r"Solve for \$x\$: \$(.+) = (.+)\$\.", p.problem)
        assert m, p.problem
        x = int(p.answer)
        assert side_value(m.group(1), x) == side_value(m.group(2), x), p.problem
        assert side_value(m.group(1), x + 1) != side_value(m.group(2), x + 1), p.problem  # unique root


def test_frac_answers():
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "\\times": lambda a, b: a * b, "\\div": lambda a, b: a / b}
    for p in make("frac", 100, seed=4):
        m = re.match(r"What is \$\\frac\{(\d+)\}\{(\d+)\} (\+|-|\\times|\\div) \\frac\{(\d+)\}\{(\d+)\}\$\?", p.problem)
        assert m, p.problem
        value = ops[m.group(3)](Fraction(int(m.group(1)), int(m.group(2))), Fraction(int(m.group(4)), int(m.group(5))))
        got = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}|(-?\d+)", p.answer)
        assert got, p.answer
        parsed = Fraction(int(got.group(4))) if got.group(4) else Fraction(int(got.group(2)), int(got.group(3))) * (-1 if got.group(1) else 1)
        assert parsed == value
        assert got.group(4) or Fraction(int(got.group(2)), int(got.group(3))).denominator == int(got.group(3))  # lowest terms


def test_make_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown synthetic kind 'nope'; known kinds: arith, add, sub"):
        make("nope", 3, 0)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        make("add", -1, 0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        make("add", 1, "0")
    assert make("add", 0, 0) == []


def test_parse_spec():
    assert parse_spec("synthetic:arith:200") == SyntheticSpec("arith", 200, 0)
    assert parse_spec("synthetic:mod:5:42") == SyntheticSpec("mod", 5, 42)
    for bad, why in [("arith:200", "expected synthetic:KIND:N"), ("synthetic:arith", "expected"),
                     ("synthetic:foo:3", "unknown kind 'foo'"), ("synthetic:add:x", "must be integers"),
                     ("synthetic:add:0", "N must be >= 1"), ("synthetic:add:1:2:3", "expected")]:
        with pytest.raises(ValueError, match=why):
            parse_spec(bad)


def test_module_is_reachable_from_package():
    assert synthetic.make is make
