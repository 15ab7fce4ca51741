"""The equivalence table: (gold, prediction, expected) graded as bare answers."""

from __future__ import annotations

import pytest

MATCH = [
    # fractions, decimals, \frac vs /
    ("1/2", "0.5"), ("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "\\dfrac{1}{2}"), ("\\frac{1}{2}", "\\tfrac12"),
    ("\\dfrac{3}{4}", "0.75"), ("0.5", "\\frac{1}{2}"), ("-\\frac{1}{21}", "-1/21"), ("-\\frac{1}{21}", "\\frac{-1}{21}"),
    ("\\frac{4}{11}", "4/11"), ("0.1", "1/10"), ("1/3", "0.333333"),
    # radicals
    ("2\\sqrt{2}", "\\sqrt{8}"), ("4\\sqrt{13}", "\\sqrt{208}"), ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
    ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}"),
    # intervals and sets
    ("[1, 2)", "[1,2)"), ("(1, 5)", "(1,5)"), ("(-\\infty, 3]", "(-\\infty,3]"), ("\\left(1, 2\\right)", "(1,2)"),
    ("\\{1, 2\\}", "\\{2, 1\\}"), ("2, 3", "3, 2"), ("\\{1,2\\}", "1, 2"),
    # \pm, percentages, units
    ("\\pm 2", "\\pm2"), ("\\pm 2", "-2, 2"), ("50\\%", "50"), ("25\\%", "0.25"), ("\\frac{1}{2}", "50\\%"),
    ("5\\text{ cm}", "5"), ("90^\\circ", "90"),
    # thousands separators, leading zeros, delimiters, integers written oddly
    ("1,000", "1000"), ("1000", "1{,}000"), ("1000000", "1,000,000"), ("\\$1,000", "1000"), ("7", "007"),
    ("42", "$42$"), ("42", "\\text{42}"), ("42", " 42 "), ("42", "42.0"),
    # negative numbers
    ("-3", "-3"), ("-3", "-3.0"),
    # expressions, equations, complex numbers
    ("5", "x = 5"), ("x^2+2x+1", "(x+1)^2"), ("2x+1", "1+2x"), ("3+4i", "4i+3"), ("y = 2x", "2x"),
    ("\\infty", "\\infty"), ("\\pi", "\\pi"), ("2\\pi", "2 \\pi"),
    # text answers
    ("\\text{Monday}", "Monday"), ("\\text{yes}", "Yes"), ("(A)", "A"),
]

NO_MATCH = [
    ("10", "1000"), ("12345", "12346"), ("x", "x/100"), ("100", "10"), ("007", "70"),
    ("(1, 2]", "[1, 2)"), ("[2, \\infty)", "(2, \\infty)"), ("\\pm 2", "2"), ("\\{1, 2\\}", "\\{1, 3\\}"), ("2, 3", "2, 4"),
    ("1/3", "0.333"), ("\\pi", "3.14"), ("-3", "3"), ("0", "-1"), ("-\\frac{1}{21}", "\\frac{1}{21}"),
    ("12345", "12345.0001"), ("1,234", "1234.5"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("\\sqrt{2}", "2"),
    ("x^2", "x^3"), ("\\text{Monday}", "\\text{Tuesday}"), ("\\text{yes}", "\\text{no}"),
]

# math-verify false positives/negatives we inherit (see grading.py); strict xfail flags a fix.
KNOWN_WRONG = [
    ("1/2004!", "1/2006!", False),
    ("3", "3\\%", False),
    ("e^{i\\pi}", "-1", True),
]

TABLE = [(g, p, True) for g, p in MATCH] + [(g, p, False) for g, p in NO_MATCH]


def test_table_is_big_enough():
    assert len(TABLE) >= 60


@pytest.mark.parametrize("gold,pred,expected", TABLE)
def test_equivalence_table(grader, gold, pred, expected):
    result = grader.grade(pred, gold, extract=False)
    assert result.correct is expected, result
    assert result.error is None, result


@pytest.mark.parametrize("gold,pred,expected", KNOWN_WRONG)
@pytest.mark.xfail(strict=True, reason="known math-verify limitation, documented in grading.py")
def test_known_math_verify_limits(grader, gold, pred, expected):
    assert grader.grade(pred, gold, extract=False).correct is expected


@pytest.mark.parametrize(
    "gold,pred,tier",
    [("10", "1000", "int"), ("1,000", "1000", "int"), ("\\frac{1}{2}", "\\dfrac{1}{2}", "string"),
     ("1/2", "0.5", "math_verify"), ("5", "x = 5", "math_verify")],
)
def test_cheapest_deciding_tier_is_reported(grader, gold, pred, tier):
    assert grader.grade(pred, gold, extract=False).grader == tier


@pytest.mark.parametrize("a,b", [("1/2", "0.5"), ("\\{1,2\\}", "\\{2,1\\}"), ("1,000", "1000"), ("\\pm 2", "2")])
def test_equivalent_is_symmetric(grader, a, b):
    assert grader.equivalent(a, b) == grader.equivalent(b, a)


def test_equivalent_requires_both_directions(grader):
    # A gold inequality accepts the predicted interval, not vice versa; equivalence needs both.
    assert grader.grade("(1, 5)", "1 < x < 5", extract=False).correct
    assert not grader.grade("1 < x < 5", "(1, 5)", extract=False).correct
    assert not grader.equivalent("1 < x < 5", "(1, 5)")
    assert not grader.equivalent("(1, 5)", "1 < x < 5")
