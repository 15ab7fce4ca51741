"""markovian-rsa: Markovian recursive self-aggregation for reasoning models.

    import rsa
    result = rsa.solve("What is 17 * 23?", backend="http://localhost:8000/v1")
    print(result.answer, result.share)

Note: the import name `rsa` is shared with the python-rsa cryptography package. Install this
project in a virtual environment; `rsa.__file__` then points into this package.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import PRESETS, RSAConfig
from .results import Candidate, RSAError, SolveResult, Stage, StageFailedError
from .events import CandidateFinished, Done, RSAEvent, StageFinished, StageStarted
from .api import asolve, solve, stream

__all__ = [
    "Candidate",
    "CandidateFinished",
    "PRESETS",
    "RSAError",
    "StageFailedError",
    "Done",
    "RSAConfig",
    "RSAEvent",
    "SolveResult",
    "Stage",
    "StageFinished",
    "StageStarted",
    "__version__",
    "asolve",
    "solve",
    "stream",
]
