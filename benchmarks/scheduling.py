"""Dataflow scheduling (no round barrier) against lockstep rounds, on a simulated server.

Many problems are solved concurrently on a ScriptedBackend whose rollouts take heavy-tailed
(lognormal) times and which serves at most `--capacity` rollouts at once, like a vLLM server
with a fixed number of sequence slots. New problems are admitted as others finish, at most
`--in-flight` at a time. The same latencies (a function of each request's id) are used in both
modes, so the difference is scheduling alone.

Three modes: our dataflow controller (barrier=False), the same controller with per-problem
lockstep rounds (barrier=True), and the reference RSA loop (one batch per round for all
problems, each round waiting for the whole batch). Prints wall time and utilisation =
busy slot-seconds / (capacity x wall) for each, and the ratios against no barrier.

    python benchmarks/scheduling.py
    python benchmarks/scheduling.py --problems 64 --in-flight 8 --sigma 1.5
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import random
import time

import rsa
from rsa.api import _problem_fields
from rsa.backends import GenerationRequest, ScriptedBackend


def latency_of(args: argparse.Namespace):
    def latency(req: GenerationRequest) -> float:
        h = int.from_bytes(hashlib.blake2b(req.request_id.encode(), digest_size=8).digest(), "big")
        return random.Random(h).lognormvariate(math.log(args.median), args.sigma)

    return latency


def respond(req: GenerationRequest) -> str:
    return "<think>\nsome reasoning words here\n</think>\n\n\\boxed{42}"


async def run(args: argparse.Namespace, barrier: bool) -> tuple[float, float, int]:
    backend = ScriptedBackend(respond, latency=latency_of(args), max_concurrency=args.capacity)
    gate = asyncio.Semaphore(args.in_flight)

    async def one(i: int) -> None:
        async with gate:
            await rsa.asolve(f"problem {i}", backend=backend, population=args.population,
                             aggregation_size=args.k, rounds=args.rounds, seed=i, barrier=barrier,
                             max_concurrency=args.capacity)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.problems)))
    wall = time.perf_counter() - start
    return wall, backend.busy_seconds / (args.capacity * wall), len(backend.requests)


async def run_reference(args: argparse.Namespace) -> tuple[float, float, int]:
    """The reference loop: round t of every problem is one batch; round t+1 waits for all of it."""
    backend = ScriptedBackend(respond, latency=latency_of(args), max_concurrency=args.capacity)
    ids = [_problem_fields(f"problem {i}")[1] for i in range(args.problems)]
    start = time.perf_counter()
    for t in range(args.rounds + 1):
        batch = [GenerationRequest(messages=[{"role": "user", "content": "x"}], request_id=f"{pid}-s{t}-{j}")
                 for pid in ids for j in range(args.population)]
        await asyncio.gather(*(backend.generate(r) for r in batch))
    wall = time.perf_counter() - start
    return wall, backend.busy_seconds / (args.capacity * wall), len(backend.requests)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=128)
    p.add_argument("--in-flight", type=int, default=16, help="problems solved at once")
    p.add_argument("--capacity", type=int, default=64, help="rollouts the server runs at once")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--median", type=float, default=0.05, help="median rollout seconds")
    p.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma of rollout time")
    args = p.parse_args()

    rows = {
        "no barrier": asyncio.run(run(args, barrier=False)),
        "barrier": asyncio.run(run(args, barrier=True)),
        "reference loop": asyncio.run(run_reference(args)),
    }
    print(f"{args.problems} problems, {args.in_flight} in flight, capacity {args.capacity}, "
          f"N={args.population} K={args.k} T={args.rounds}, lognormal(median={args.median}s, sigma={args.sigma})")
    print(f"{'mode':<16}{'wall s':>9}{'utilisation':>13}{'rollouts':>10}{'wall / no barrier':>19}")
    base = rows["no barrier"][0]
    for mode, (wall, util, n) in rows.items():
        print(f"{mode:<16}{wall:>9.3f}{util:>13.3f}{n:>10}{wall / base:>19.2f}")


if __name__ == "__main__":
    main()
