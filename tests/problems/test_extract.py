from __future__ import annotations

import pytest

from rsa.problems import extract_answer
from rsa.problems.extract import last_boxed

CASES = [
    # (text, expected with default fallbacks, expected boxed-only)
    ("so the answer is \\boxed{42}.", "42", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{\\sqrt{3}}{2}} end", "\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}"),
    ("escaped \\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "\\{1, 2\\}"),
    ("space \\boxed {7}", "7", "7"),
    ("fbox \\fbox{8}", "8", "8"),
    ("texstyle $\\boxed 5$", "5", "5"),
    ("first \\boxed{3} then \\boxed{5}", "5", "5"),
    ("\\boxed{ 12 }", "12", "12"),
    ("empty \\boxed{}", None, None),
    ("empty after a real one \\boxed{4} \\boxed{ }", None, None),
    ("truncated \\boxed{\\frac{1}{2", "2", None),
    ("\\boxedx is not a box, 9", "9", None),
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}", None),
    ("Therefore, the final answer is 17. Done", "17", None),
    ("**Answer:** 42", "42", None),
    ("Answer: x = 3", "x = 3", None),
    ("42", "42", None),
    ("42.", "42", None),
    ("x = 5", "x = 5", None),
    ("(1, 2]", "(1, 2]", None),
    ("Monday", "Monday", None),
    ("\\text{red}, \\text{blue}", "\\text{red}, \\text{blue}", None),
    ("\\text{red} or \\text{blue}", None, None),
    ("It is 42", "42", None),
    ("we get 10-3 = 7 apples", "7", None),
    ("the result is -3", "-3", None),
    ("total 1,000 and then", "1,000", None),
    ("half is 3/4 of it", "3/4", None),
    ("no numbers here at all", None, None),
    ("the answer is not 5, it is 6", "not 5, it is 6", None),  # documented limit: no prose sense
    ("", None, None),
]


@pytest.mark.parametrize("text,expected,boxed_only", CASES)
def test_extract_answer(text, expected, boxed_only):
    assert extract_answer(text) == expected
    assert extract_answer(text, fallbacks=()) == boxed_only


def test_fallbacks_are_ordered_and_selectable():
    text = "The answer is 12. Later we note 15."
    assert extract_answer(text) == "12"
    assert extract_answer(text, fallbacks=("last_number",)) == "15"
    assert extract_answer(text, fallbacks=("last_number", "answer_phrase")) == "15"


def test_unknown_fallback_is_a_value_error_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown answer fallback.*last_number"):
        extract_answer("1", fallbacks=("bogus",))


def test_none_text():
    assert extract_answer(None) is None


def test_last_boxed_distinguishes_empty_from_missing():
    assert last_boxed("\\boxed{}") == ""
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{1") is None


def test_huge_text_with_box_at_the_end():
    assert extract_answer("a" * 1_000_000 + " \\boxed{7}") == "7"


def test_deeply_nested_braces_are_matched():
    inner = "{" * 5000 + "1" + "}" * 5000
    assert extract_answer("\\boxed{" + inner + "}") == inner
