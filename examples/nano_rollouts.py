"""Collect the model's own Markovian RSA candidates on training problems (for on-policy
aggregation fine-tuning, `train_nano.py --own-rollouts FILE`).

    python examples/nano_rollouts.py --n 400 --first-problem 40000 --out /tmp/rollouts.jsonl

Runs `rsa.asolve` with the model's preset (temperature 1.0) but `rounds` set by --rounds on
`rsa.problems.synthetic.make("arith", ..., seed=1)` problems (the training seed, never the
evaluation seed 2026) over the embedded engine, and writes one JSON line per problem: the
problem, its gold answer and, per stage, each candidate's trace, tail (exactly as the
controller cut it) and answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import torch

import rsa
from rsa.backends import EngineBackend
from rsa.problems import grade
from rsa.problems.synthetic import make

TRAIN_SEED = 1
NANO = Path(__file__).resolve().parents[1] / "backends/zaya1/nano"


async def run(args) -> None:
    preset = json.loads((args.model / "rsa_preset.json").read_text())
    preset["rounds"] = args.rounds
    problems = make("arith", args.first_problem + args.n, TRAIN_SEED)[args.first_problem:]
    backend = EngineBackend(str(args.model), max_num_seqs=256)
    t0 = time.time()
    results = []
    try:
        for i in range(0, len(problems), args.chunk):
            part = problems[i:i + args.chunk]
            results += await asyncio.gather(*(rsa.asolve(p, backend=backend, **preset) for p in part))
            print(f"  {len(results)}/{len(problems)} problems, {time.time() - t0:.0f}s", flush=True)
    finally:
        await backend.aclose()
    with args.out.open("w") as f:
        for p, r in zip(problems, results):
            stages = [[dict(trace=c.trace, tail=c.tail, answer=c.answer,
                            correct=c.answer is not None and grade(c.answer, p.answer, extract=False))
                       for c in s.candidates] for s in r.stages]
            f.write(json.dumps(dict(problem=p.problem, gold=p.answer, stages=stages)) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=NANO)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--first-problem", type=int, default=40000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
