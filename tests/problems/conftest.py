"""Shared graders for the problems tests: one patient, one with a short fuse for hang tests."""

from __future__ import annotations

import pytest

from rsa.problems import Grader


@pytest.fixture(scope="session")
def grader():
    # Generous timeout: legit comparisons must never time out on a loaded 2-core CI box.
    with Grader(timeout=20.0, max_workers=1) as g:
        yield g


@pytest.fixture(scope="session")
def fast_grader():
    # Short fuse so hang tests cost about a second each; strict boxed-only extraction.
    with Grader(timeout=1.0, max_workers=1, fallbacks=()) as g:
        yield g
