"""How much can an aggregator that only votes lift ZAYA1-nano? An upper bound, from an evaluation.

    python examples/eval_nano.py --out /tmp/eval.json     # any model, any preset
    python examples/vote_ceiling.py /tmp/eval.json        # ceilings over its stage-0 populations

Takes the stage-0 populations of an `eval_nano.py --out` report (N answers per problem, the
model's own first-round samples) and replays Markovian RSA with a *perfect* aggregator in place
of the model: every round, each of the N new members is the vote of K members of the previous
round drawn without replacement, exactly what the preset's subsets are. Two voters:

- `plurality`: the most frequent answer of the K (the earliest wins a tie);
- `digit`: a majority per digit of the candidates' scratchpad result lines (the answers written
  back into the scratchpad's zero-padded, right-aligned result line, the sign as one more
  column), which can be right even when every candidate is wrong somewhere.

Failed rollouts (no answer) take part as `?` and never win a column or a vote. The printed rows
are the mean accuracy per stage, the quantity the model card reports, so the last column minus
the first is the most any voting aggregator (a model that copies and votes without mistakes)
could lift that model at that N and K: errors that the model makes on most samples of a problem
are beyond reach of any vote.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nano_data import answer_of_result_line, column_votes, majority, result_line_width  # noqa: E402

from rsa.problems.synthetic import make  # noqa: E402


def padded(answer: str | None, width: int) -> str:
    """`answer` as the scratchpad writes its result line: zero-padded digits, `-` before them
    when negative (one column more than the digits); `?` for no answer."""
    if answer is None or not answer.lstrip("-").isdigit():
        return "?"
    digits = answer.lstrip("-").zfill(width)
    return f"-{digits}" if answer.startswith("-") else digits


def digit_vote(lines: list[str]) -> str:
    """The result line of the per-digit majorities (`?` when no line is given)."""
    if all(x == "?" for x in lines):
        return "?"
    return "".join(m for _, m in reversed(column_votes(lines)) if m != "_")


VOTERS = {"plurality": majority, "digit": digit_vote}


def replay(report: dict, voter, k: int, rounds: int, rng: random.Random) -> list[float]:
    """Mean accuracy per stage (0..rounds) with `voter` as the aggregator."""
    problems = {p.id: p for p in make("arith", report["n"], report["seed"])}
    means = [0.0] * (rounds + 1)
    for row in report["rows"]:
        width = result_line_width(problems[row["id"]].problem)
        population = [padded(a, width) for a in row["stages"][0]["answers"]]
        for t in range(rounds + 1):
            means[t] += sum(x != "?" and answer_of_result_line(x) == row["gold"] for x in population) / len(population)
            population = [voter(rng.sample(population, k)) for _ in population]
    return [m / len(report["rows"]) for m in means]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", type=Path, help="JSON written by eval_nano.py --out")
    ap.add_argument("--k", type=int, nargs="+", default=[3, 4, 5], help="aggregation sizes to replay")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset draws")
    args = ap.parse_args(argv)
    report = json.loads(args.report.read_text())
    n = len(report["rows"][0]["stages"][0]["answers"])
    print(f"{report['n']} problems, N = {n}; mean accuracy per stage with a perfect voter\n")
    print("| voter | K | " + " | ".join(f"stage {t}" for t in range(args.rounds + 1)) + " | lift |")
    print("|---|---|" + "---|" * (args.rounds + 2))
    for name, voter in VOTERS.items():
        for k in args.k:
            if k > n:
                continue
            means = replay(report, voter, k, args.rounds, random.Random(args.seed))
            cells = " | ".join(f"{100 * m:.1f}" for m in means)
            print(f"| {name} | {k} | {cells} | {100 * (means[-1] - means[0]):+.1f} |")


if __name__ == "__main__":
    main()
