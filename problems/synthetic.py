"""Seeded synthetic problem sets with exact answers, for smoke tests and the tiny default model.

Kinds (`make(kind, n, seed)`; `KINDS` lists them):

- `add`, `sub`: "What is A + B?", "What is A - B?" with A and B of 1 to 4 digits (digit count
  uniform, then the value uniform within it; A - B may be negative).
- `mul`: "What is A * B?" with A of 1 to 3 digits and B of 1 to 2 digits.
- `add3`: "What is A + B + C?", each of 1 to 4 digits.
- `arith`: the four forms above mixed uniformly, worded exactly as above (the tiny model's
  training format); `metadata["form"]` says which.
- `mod`: remainders, "What is the remainder when A is divided by M?" or with a power B^E.
- `linear`: "Solve for $x$: ..." with an integer solution.
- `frac`: one operation (+, -, times, divided by) on two fractions; answer in lowest terms as
  `\\frac{p}{q}` (or an integer).

Item i is drawn from its own RNG seeded with the string "KIND:SEED:i" (string seeds hash
with SHA-512, independent of PYTHONHASHSEED), so a set is identical across runs and machines,
and `make(k, 5, s)` is a prefix of `make(k, 10, s)`. Ids are `KIND-SEED-i`. Limits: no
difficulty control beyond the kind, and no dedup (tiny kinds can repeat a problem).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .data import Problem

__all__ = ["KINDS", "SyntheticSpec", "make", "parse_spec"]

_Gen = Callable[[random.Random], tuple[str, str, dict[str, Any]]]


def _number(rng: random.Random, max_digits: int) -> int:
    digits = rng.randint(1, max_digits)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def _add(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    a, b = _number(rng, 4), _number(rng, 4)
    return f"What is {a} + {b}?", str(a + b), {"operands": [a, b]}


def _sub(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    a, b = _number(rng, 4), _number(rng, 4)
    return f"What is {a} - {b}?", str(a - b), {"operands": [a, b]}


def _mul(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    a, b = _number(rng, 3), _number(rng, 2)
    return f"What is {a} * {b}?", str(a * b), {"operands": [a, b]}


def _add3(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    a, b, c = _number(rng, 4), _number(rng, 4), _number(rng, 4)
    return f"What is {a} + {b} + {c}?", str(a + b + c), {"operands": [a, b, c]}


_ARITH_FORMS: dict[str, _Gen] = {"add": _add, "sub": _sub, "mul": _mul, "add3": _add3}


def _arith(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    form = rng.choice(sorted(_ARITH_FORMS))
    text, answer, meta = _ARITH_FORMS[form](rng)
    return text, answer, {"form": form, **meta}


def _mod(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    m = rng.randint(2, 99)
    if rng.random() < 0.5:
        a = rng.randint(100, 999_999)
        return f"What is the remainder when {a} is divided by {m}?", str(a % m), {"operands": [a, m]}
    base, exp = rng.randint(2, 20), rng.randint(10, 999)
    text = f"What is the remainder when ${base}^{{{exp}}}$ is divided by {m}?"
    return text, str(pow(base, exp, m)), {"operands": [base, exp, m]}


def _linear_side(coef: int, const: int) -> str:
    """`coef`x + `const` written the usual way: 'x', '-x', '3x - 5', '7'."""
    if coef == 0:
        return str(const)
    x_term = {1: "x", -1: "-x"}.get(coef, f"{coef}x")
    if const == 0:
        return x_term
    return f"{x_term} {'+' if const > 0 else '-'} {abs(const)}"


def _linear(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    x = rng.randint(-20, 20)
    a = rng.choice([c for c in range(-12, 13) if c != 0])
    c = 0 if rng.random() < 0.5 else rng.choice([k for k in range(-9, 10) if k not in (0, a)])
    b = rng.randint(-50, 50)
    d = (a - c) * x + b  # so that a x + b = c x + d holds exactly at x
    text = f"Solve for $x$: ${_linear_side(a, b)} = {_linear_side(c, d)}$."
    return text, str(x), {"coefficients": [a, b, c, d]}


def _latex_fraction(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    sign = "-" if q < 0 else ""
    return f"{sign}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


_FRAC_OPS: dict[str, tuple[str, Callable[[Fraction, Fraction], Fraction]]] = {
    "+": ("+", lambda p, q: p + q),
    "-": ("-", lambda p, q: p - q),
    "*": ("\\times", lambda p, q: p * q),
    "/": ("\\div", lambda p, q: p / q),
}


def _frac(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    b, d = rng.randint(2, 12), rng.randint(2, 12)
    a, c = rng.randint(1, 2 * b), rng.randint(1, 2 * d)
    op = rng.choice(sorted(_FRAC_OPS))
    symbol, fn = _FRAC_OPS[op]
    value = fn(Fraction(a, b), Fraction(c, d))
    text = (
        f"What is $\\frac{{{a}}}{{{b}}} {symbol} \\frac{{{c}}}{{{d}}}$? "
        "Give your answer as a fraction in lowest terms."
    )
    return text, _latex_fraction(value), {"operands": [a, b, c, d], "op": op}


KINDS: dict[str, _Gen] = {
    "arith": _arith,
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "add3": _add3,
    "mod": _mod,
    "linear": _linear,
    "frac": _frac,
}


def make(kind: str, n: int, seed: int = 0) -> list[Problem]:
    """`n` problems of `kind` for `seed`; the same arguments always give the same list."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    problems = []
    for i in range(n):
        text, answer, meta = KINDS[kind](random.Random(f"{kind}:{seed}:{i}"))
        metadata = {"kind": kind, "seed": seed, "index": i, **meta}
        problems.append(Problem(id=f"{kind}-{seed}-{i}", problem=text, answer=answer, metadata=metadata))
    return problems


@dataclass(frozen=True)
class SyntheticSpec:
    """A parsed `synthetic:KIND:N[:SEED]` string."""

    kind: str
    n: int
    seed: int = 0


def parse_spec(spec: str) -> SyntheticSpec:
    """Parse `synthetic:KIND:N[:SEED]` (e.g. `synthetic:arith:200`, seed 0 by default)."""
    usage = f"expected synthetic:KIND:N[:SEED] with KIND one of {', '.join(KINDS)}"
    parts = spec.split(":")
    if parts[0] != "synthetic" or len(parts) not in (3, 4):
        raise ValueError(f"bad synthetic spec {spec!r}: {usage}")
    kind = parts[1]
    if kind not in KINDS:
        raise ValueError(f"bad synthetic spec {spec!r}: unknown kind {kind!r}; {usage}")
    try:
        n = int(parts[2])
        seed = int(parts[3]) if len(parts) == 4 else 0
    except ValueError:
        raise ValueError(f"bad synthetic spec {spec!r}: N and SEED must be integers; {usage}") from None
    if n < 1:
        raise ValueError(f"bad synthetic spec {spec!r}: N must be >= 1, got {n}")
    return SyntheticSpec(kind=kind, n=n, seed=seed)
