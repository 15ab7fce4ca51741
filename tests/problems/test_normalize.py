from __future__ import annotations

import pytest

from rsa.problems import normalize_answer, parse_int


@pytest.mark.parametrize(
    "text,expected",
    [
        ("42", 42), ("007", 7), ("-3", -3), ("+5", 5), ("1,000", 1000), ("1{,}000", 1000),
        ("1\\,000", 1000), ("1,000,000", 1000000), ("$42$", 42), ("\\$1,000", 1000),
        ("\\text{42}", 42), ("\\boxed{42}", 42), (" 42. ", 42), ("42.000", 42), ("-0", 0),
        ("4.5", None), ("1e3", None), ("5 cm", None), ("x = 5", None), ("1,00", None),
        ("12,3456", None), ("", None), ("\\frac{4}{2}", None), ("9" * 2000, None),
    ],
)
def test_parse_int(text, expected):
    assert parse_int(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("\\text{Monday}", "Monday"),
        ("\\text{a} + \\text{b}", "\\text{a}+\\text{b}"),
        ("2 \\pi", "2\\pi"),
        ("\\pi r", "\\pi r"),
        ("\\[ x \\]", "x"),
        ("\\boxed{\\text{(A)}}.", "(A)"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected
