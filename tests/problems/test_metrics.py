"""Metrics against hand-computed values."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from rsa.problems import (
    agrade_records,
    maj_at_k,
    majority_correct,
    mean_accuracy,
    mean_pass_at_k,
    pass_at_k,
    stage_curves,
    summary,
)

T, F = True, False


def test_mean_accuracy_and_stderr():
    mean, se = mean_accuracy([[T, T, F, F], [T, T, T, T], [F, F, F, F]])
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx(0.5 / math.sqrt(3))  # sample sd of (0.5, 1, 0) is 0.5
    assert mean_accuracy([[T, F, F]]) == (pytest.approx(1 / 3), None)
    with pytest.raises(ValueError, match="empty"):
        mean_accuracy([])
    with pytest.raises(ValueError, match="problem 1 has no samples"):
        mean_accuracy([[T], []])


@pytest.mark.parametrize("n,c,k,expected", [(5, 2, 2, 0.7), (4, 1, 1, 0.25), (5, 4, 2, 1.0), (5, 0, 3, 0.0), (3, 3, 3, 1.0), (10, 1, 10, 1.0)])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_exact_binomials_for_large_n():
    n, c, k = 200, 10, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("n,c,k", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_bad_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k():
    assert mean_pass_at_k([[T, F, T, T], [F, F, F, T]], 2) == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="problem 0 has 1 samples, fewer than k=2"):
        mean_pass_at_k([[T]], 2)


def test_majority_correct_votes_ties_and_prefixes():
    clusters, correct = [0, 1, 1, None, 0, 0], [T, F, F, F, T, T]
    assert majority_correct(clusters, correct) is True  # cluster 0 has 3 votes
    assert majority_correct(clusters, correct, k=3) is False  # first three: cluster 1 wins 2-1
    assert majority_correct([2, 0, 0, 2], [T, F, F, T]) is True  # 2-2 tie: cluster seen first wins
    assert majority_correct([0, 2, 2, 0], [F, T, T, F]) is False
    assert majority_correct([None, None], [F, F]) is False
    with pytest.raises(ValueError, match="clusters has 2 entries but correct has 1"):
        majority_correct([0, 1], [T])
    with pytest.raises(ValueError, match="1 <= k <= 2"):
        majority_correct([0, 1], [T, F], k=3)


def test_maj_at_k():
    clusters = [[0, 1, 0, 0], [0, 0, 0, 1]]
    correct = [[T, F, T, T], [F, F, F, T]]
    assert maj_at_k(clusters, correct) == 0.5
    assert maj_at_k(clusters, correct, k=2) == 0.5


def test_summary_hand_values():
    correct = [[T, F, T, T], [F, F, F, T]]
    clusters = [[0, 1, 0, 0], [0, 0, 0, 1]]
    out = summary(correct, clusters=clusters)
    assert out == {
        "problems": 2,
        "samples": 8,
        "accuracy": pytest.approx(0.5),
        "accuracy_stderr": pytest.approx(0.25),
        "pass@1": pytest.approx(0.5),
        "pass@2": pytest.approx(0.75),
        "pass@4": pytest.approx(1.0),
        "maj@1": 0.5,
        "maj@2": 0.5,
        "maj@4": 0.5,
    }
    assert set(summary([[T, F, T]])) == {"problems", "samples", "accuracy", "accuracy_stderr", "pass@1", "pass@2", "pass@3"}


RECORDS = [
    {"gold": "4", "stages": [["4", "5", None], ["4", "4", "4"]]},
    {"gold": 10, "stages": [["1000", "10", "10"], ["1000", "1000", "10"]]},
    {"gold": None, "stages": [["1"]]},
]
EXPECTED = [
    {"stage": 0, "problems": 2, "mean_accuracy": 0.5, "majority_accuracy": 1.0, "pass_at_n": 1.0},
    {"stage": 1, "problems": 2, "mean_accuracy": 2 / 3, "majority_accuracy": 0.5, "pass_at_n": 1.0},
]


def approx_curves(curves):
    return [{k: pytest.approx(v) if isinstance(v, float) else v for k, v in c.items()} for c in curves]


def test_stage_curves_with_a_grader(grader):
    assert stage_curves(RECORDS, grader=grader) == approx_curves(EXPECTED)


async def test_agrade_records_feeds_stage_curves(grader):
    correct, clusters = await agrade_records(RECORDS, grader=grader)
    assert correct[0] == [[T, F, F], [T, T, T]]
    assert clusters[1] == [[0, 1, 1], [0, 0, 1]]
    assert stage_curves(RECORDS, correct=correct, clusters=clusters) == approx_curves(EXPECTED)


def test_stage_curves_from_matrices_needs_no_grader():
    class NoGrader:
        def __getattr__(self, name):
            raise AssertionError("grader used although matrices were given")

    records = [{"gold": "a", "stages": [["x", "y"], []]}]
    curves = stage_curves(records, grader=NoGrader(), correct=[[[T, F], []]], clusters=[[[0, 1], []]])
    assert curves == [
        {"stage": 0, "problems": 1, "mean_accuracy": 0.5, "majority_accuracy": 1.0, "pass_at_n": 1.0},
        {"stage": 1, "problems": 0, "mean_accuracy": None, "majority_accuracy": None, "pass_at_n": None},
    ]


def test_stage_curves_validates_input():
    with pytest.raises(ValueError, match=r"records\[1\] is not"):
        stage_curves([{"gold": "1", "stages": [["1"]]}, {"gold": "1"}], correct=[[[T]], []], clusters=[[[0]], []])
    with pytest.raises(ValueError, match=r"correct\[0\]\[0\] has 2 entries but the stage has 1"):
        stage_curves([{"gold": "1", "stages": [["1"]]}], correct=[[[T, T]]], clusters=[[[0]]])
    with pytest.raises(ValueError, match="clusters covers 0 records but there are 1"):
        stage_curves([{"gold": "1", "stages": [["1"]]}], correct=[[[T]]], clusters=[])
