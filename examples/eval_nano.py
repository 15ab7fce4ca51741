"""Evaluate ZAYA1-nano with Markovian RSA: per-stage accuracy on held-out arithmetic.

    python examples/eval_nano.py                       # 200 problems, the shipped preset
    python examples/eval_nano.py --n 20 --card         # and write the table into the model card

Problems: `rsa.problems.synthetic.make("arith", N, seed=2026)` (training used seed 1). Each is
solved by `rsa.asolve` with the model's preset (`rsa_preset.json`: population, K, rounds,
tail_tokens, max_tokens, temperature 1.0) over one backend, `TransformersBackend` (batched
`generate`, the default, which produced the model card's figures) or the embedded engine
(`--backend engine`, continuous batching); all problems run concurrently so rollouts of many
problems share each step.

Reported per stage: mean accuracy (the expected accuracy of one random member; failed
rollouts count as wrong), majority-vote accuracy and pass@N of the population; then the
accuracy of the solve's final answer (majority of the last stage). The RSA config has no seed
(a seed would make the transformers backend run every request alone); the transformers
backend's torch RNG is seeded, so its reruns agree up to how requests happened to share
batches; the engine's rollouts are not seeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

import rsa
from rsa.backends import EngineBackend, TransformersBackend
from rsa.problems import grade
from rsa.problems.synthetic import make

EVAL_SEED = 2026
NANO = Path(__file__).resolve().parents[1] / "backends/zaya1/nano"
CARD_BEGIN, CARD_END = "<!-- eval:begin -->", "<!-- eval:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=NANO)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=EVAL_SEED, help="problem set seed (not a training seed)")
    ap.add_argument("--backend", choices=["transformers", "engine"], default="transformers",
                    help="transformers (batched generate; the model card's figures) or the embedded engine")
    ap.add_argument("--max-batch-size", type=int, default=64, help="transformers batch size / engine max_num_seqs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override preset fields")
    ap.add_argument("--out", type=Path, default=None, help="write per-problem results (JSON)")
    ap.add_argument("--card", action="store_true", help="write the table into the model card README.md")
    return ap.parse_args(argv)


def correct(answer: str | None, gold: str) -> bool:
    return answer is not None and grade(answer, gold, extract=False)


async def run(args: argparse.Namespace) -> dict:
    preset = json.loads((args.model / "rsa_preset.json").read_text())
    for item in args.set:
        field, value = item.split("=", 1)
        preset[field] = json.loads(value)
    problems = make("arith", args.n, args.seed)
    if args.backend == "engine":
        backend = EngineBackend(str(args.model), max_num_seqs=args.max_batch_size)
    else:
        backend = TransformersBackend(args.model, max_batch_size=args.max_batch_size, seed=0)
    t0 = time.time()
    done = 0

    async def one(p):
        nonlocal done
        result = await rsa.asolve(p, backend=backend, **preset)
        done += 1
        if done % 20 == 0 or done == len(problems):
            print(f"  {done}/{len(problems)} problems, {time.time() - t0:.0f}s", flush=True)
        return result

    try:
        results = await asyncio.gather(*(one(p) for p in problems))
    finally:
        await backend.aclose()
    wall = time.time() - t0

    rows = []
    for p, r in zip(problems, results):
        rows.append(dict(
            id=p.id, form=p.metadata["form"], gold=p.answer, answer=r.answer, final=correct(r.answer, p.answer),
            stages=[dict(answers=[c.answer for c in s.candidates],
                         correct=[correct(c.answer, p.answer) for c in s.candidates],
                         majority=s.majority, majority_correct=correct(s.majority, p.answer),
                         finish=[c.finish_reason for c in s.candidates],
                         tokens=s.completion_tokens) for s in r.stages]))
    return dict(preset=preset, n=len(problems), seed=args.seed, backend=args.backend, wall_s=round(wall, 1), rows=rows,
                summary=summarise(rows))


def summarise(rows: list[dict]) -> dict:
    n_stages = max(len(r["stages"]) for r in rows)
    stages = []
    for t in range(n_stages):
        st = [r["stages"][t] for r in rows if len(r["stages"]) > t]
        by_form = defaultdict(list)
        for r in rows:
            if len(r["stages"]) > t:
                c = r["stages"][t]["correct"]
                by_form[r["form"]].append(sum(c) / len(c))
        stages.append(dict(
            stage=t,
            mean=sum(sum(s["correct"]) / len(s["correct"]) for s in st) / len(st),
            majority=sum(s["majority_correct"] for s in st) / len(st),
            pass_at_n=sum(any(s["correct"]) for s in st) / len(st),
            finished=sum(f == "stop" for s in st for f in s["finish"]) / sum(len(s["finish"]) for s in st),
            tokens_per_rollout=sum(s["tokens"] for s in st) / sum(len(s["finish"]) for s in st),
            by_form={k: sum(v) / len(v) for k, v in sorted(by_form.items())},
        ))
    return dict(stages=stages, final=sum(r["final"] for r in rows) / len(rows))


def table(report: dict) -> str:
    s = report["summary"]
    forms = list(s["stages"][0]["by_form"])
    lines = [
        "| stage | mean acc | majority acc | pass@N | finished | tokens/rollout | " + " | ".join(forms) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(forms),
    ]
    for st in s["stages"]:
        name = "0 (solve)" if st["stage"] == 0 else f"{st['stage']} (aggregate)"
        lines.append(
            f"| {name} | {100 * st['mean']:.1f} | {100 * st['majority']:.1f} | {100 * st['pass_at_n']:.1f} "
            f"| {100 * st['finished']:.0f}% | {st['tokens_per_rollout']:.0f} | "
            + " | ".join(f"{100 * st['by_form'][f]:.1f}" for f in forms) + " |")
    lines.append(f"\nFinal answer (majority of the last stage): **{100 * s['final']:.1f}%** "
                 f"on {report['n']} problems (seed {report['seed']}); preset {json.dumps(report['preset'])}; "
                 f"{report['wall_s']:.0f} s wall on CPU ({report.get('backend', 'transformers')} backend).")
    return "\n".join(lines)


def write_card(model: Path, text: str, command: str) -> None:
    card = model / "README.md"
    body = card.read_text() if card.exists() else ""
    block = f"{CARD_BEGIN}\nCommand: `{command}`\n\n{text}\n{CARD_END}"
    if CARD_BEGIN in body:
        body = re.sub(re.escape(CARD_BEGIN) + ".*?" + re.escape(CARD_END), lambda _: block, body, flags=re.S)
    else:
        body += "\n" + block + "\n"
    card.write_text(body)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report = asyncio.run(run(args))
    text = table(report)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.card:
        write_card(args.model, text, "python examples/eval_nano.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
