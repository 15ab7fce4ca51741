from __future__ import annotations

import importlib

import rsa.problems


def test_all_names_are_importable_and_public_api_is_listed():
    for name in rsa.problems.__all__:
        assert hasattr(rsa.problems, name), name
    expected = {
        "Problem", "ProblemLoadError", "load_problems", "extract_answer", "equivalent", "grade",
        "Grader", "GradeResult", "cluster_answers", "mean_accuracy", "pass_at_k", "mean_pass_at_k",
        "maj_at_k", "majority_correct", "summary", "stage_curves", "synthetic",
    }
    assert expected <= set(rsa.problems.__all__)
    assert len(set(rsa.problems.__all__)) == len(rsa.problems.__all__)


def test_no_public_name_is_missing_from_all():
    public = {n for n, v in vars(rsa.problems).items() if not n.startswith("_") and not isinstance(v, type(rsa))}
    public -= {"annotations"}
    assert public <= set(rsa.problems.__all__)


def test_synthetic_is_the_submodule():
    assert rsa.problems.synthetic is importlib.import_module("rsa.problems.synthetic")
