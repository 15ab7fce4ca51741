"""Train ZAYA1-nano from scratch on CPU: a tiny ZAYA1-architecture model (CCA attention, an
MLP router over several experts plus the skip slot, learned residual scaling) that solves
small arithmetic with a scratchpad and aggregates candidate tails the way Markovian RSA asks.

    python examples/train_nano.py --tiny --out /tmp/n  # smoke run, well under a minute

The shipped checkpoint came from two phases (about 43 minutes on a busy 2-core CPU):

    python examples/train_nano.py --out /tmp/p1 --time-limit 40     # 1000 steps, lr 2e-3
    python examples/train_nano.py --init-from /tmp/p1 --steps 600 --lr 1e-3 --warmup 20 \
        --first-problem 20000 --time-limit 14                        # 558 steps ran in the limit

Data (see `examples/nano_data.py`): each step draws fresh problems from
`rsa.problems.synthetic.make("arith", ..., seed=TRAIN_SEED)` and turns half of them into solve
examples (solve prompt -> correct trace) and half into aggregation examples (the repository's
aggregate prompt over K candidate tails, some right and some with realistic slips ->
`answers ...` line + correct trace). Loss is on the assistant tokens only. Everything is
seeded; on the same machine and thread count a run is reproducible.

Experimental: `--aggregator pick` (with `--own-rollouts` and `--decision-weight`) trains a
checking aggregator instead (see `nano_data.pick_output`): each candidate's visible column lines
copied and marked ` ok`/` no`, a verdict per candidate, the plurality of the passing answers.
Fine-tuned from the shipped checkpoint it learned the verdicts but not yet reliable line marks,
and its ~220-token outputs drift when sampled at temperature 1.0: in 200-problem evaluations
aggregation still lowered accuracy (stage means 54.8 / 48.9 / 48.4; 55.2 / 30.6 / 17.8 while
the target also copied the picked candidate's lines), so it is not shipped.

    python examples/train_nano.py --init-from backends/zaya1/nano --aggregator pick \
        --own-rollouts R1 R2 R3 --tail-tokens 56 --max-tokens 384 --p-aggregate 0.6 \
        --decision-weight 10 --lr 5e-4 --out DIR

Experimental: `--aggregator vote` (see `nano_data.vote_output`): list the candidates' answers, pick
the most frequent, box it (about 25 tokens). Fine-tuned from the checking model above (500-650
steps), it copied the answer lists well but picked erratically at temperature 1.0, and the
fine-tune also sharpened the solver, which shrank what voting can gain: stage means 61.1 / 60.8 /
61.4 and 59.1 / 60.8 / 60.1 in 200-problem evaluations, so it is not shipped either.

Experimental: `--aggregator pair` (see `nano_data.pair_output`): K = 3, where plurality voting is
one equality test (candidates 2 and 3 agree, or candidate 1 wins), written out as `cmp X Y` (the
two result lines), `match` marks and `same` / `differ`. `--self-distill` makes the solve
examples the model's own first-round traces, so that the solver's distribution (and what voting
can gain from it) stays where it was. Fine-tuned from the checking model with its own rollouts,
the model copies the result lines but has not learned the marks: after 500 steps, greedy on
300 training problems' own candidates, the `cmp` line was right in 260, the marks in 122 and the
verdict in 141; 400 steps more (p_aggregate 0.7, decision weight 5) gave 273, 112 and 147. The
first form of it, a bare `same` / `differ` after the answer list, lowered accuracy round by round
(stage means 51.4 / 50.6 / 49.0 / 47.6 at N 8, K 3, 3 rounds).

    python examples/train_nano.py --init-from CKPT --aggregator pair --own-rollouts R --self-distill \
        --p-aggregate 0.6 --lr 2e-4 --decision-weight 3 --tail-tokens 56 --out DIR

Experimental: `--aggregator column --k K` (see `nano_data.column_output`): copy the K result lines
into a `vote` line, then one line per digit column, `a b c=m`, and the result line of the column
majorities, which can be right when every candidate slipped somewhere. Fine-tuned 30 minutes from
the shipped checkpoint on its own rollouts (R: `nano_rollouts.py --n 1000 --rounds 0
--first-problem 40000`), it lowered accuracy round by round in 200-problem evaluations at N 8,
3 rounds (engine backend): K 3 (986 steps) 55.2 / 52.2 / 49.1 / 45.2, K 5 (730 steps) 44.4 /
36.3 / 33.3 / 30.4. Sampled at temperature 1.0 on 120 of its own training candidates (K 3), 37
outputs were exact; 52 went wrong first in a column line's characters (column j of each number
in the `vote` line, a read whose distance grows with j), 14 in the `vote` line, 14 in a majority.

    python examples/train_nano.py --init-from backends/zaya1/nano --aggregator column --k 3 \
        --own-rollouts R --p-aggregate 0.5 --lr 5e-4 --warmup 20 --decision-weight 3 \
        --first-problem 60000 --time-limit 30 --out DIR

None of these aggregators can lift the shipped solver much even when it works perfectly: the
model's wrong answers are mostly systematic (most samples of a problem share them), and a vote
cannot fix those. `examples/vote_ceiling.py` replays RSA over an evaluation's stage-0
populations with a perfect voter in place of the model. Over stage 0, after 4 rounds at N 8 and
K 3 to 5, it gives +4.7 to +7.9 points for the shipped model, +6.0 to +7.9 for the K 3 column
fine-tune and +8.1 to +9.9 for the K 5 one.

Writes to --out: config.json, model.safetensors, generation_config.json, tokenizer files,
rsa_preset.json and train_log.json (the loss curve), refreshed at every --save-every steps.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nano_data import (  # noqa: E402
    END, PAD, Example, build_tokenizer, column_example, make_example, own_example, pair_example, pick_example,
    solve_trace, synthetic_pool, tokenizer_corpus, vote_example,
)

from rsa.problems import extract_answer  # noqa: E402
from rsa.prompts import SOLVE_TEMPLATE, render_solve  # noqa: E402
from rsa.problems.synthetic import make  # noqa: E402

TRAIN_SEED = 1  # problems for training; the evaluation uses seed 2026
PROBE_SEED = 7  # the few problems greedily decoded during training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "backends/zaya1/nano")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tail-tokens", type=int, default=40, help="tau of the preset; tails in training are cut to it")
    ap.add_argument("--p-aggregate", type=float, default=0.5)
    ap.add_argument("--max-tokens", type=int, default=256,
                    help="max_tokens of the written preset (--aggregator pick writes about 270 tokens: use 384)")
    ap.add_argument("--vocab-size", type=int, default=640)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--qk-temp", type=float, default=1.5, help="initial key scale of the QK norm")
    ap.add_argument("--threads", type=int, default=1, help="one is faster than two on a busy 2-core box")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--time-limit", type=float, default=None, help="stop (and save) after this many minutes")
    ap.add_argument("--init-from", type=Path, default=None, help="continue training this checkpoint (phase two)")
    ap.add_argument("--first-problem", type=int, default=0, help="index of the first training problem (phase two)")
    ap.add_argument("--own-rollouts", type=Path, nargs="*", default=[], metavar="FILE",
                    help="JSONL of the model's own candidates (examples/nano_rollouts.py): aggregation "
                         "examples are then drawn from them (on-policy tails, `pick` targets), not synthesised")
    ap.add_argument("--own-answer-pick", action="store_true",
                    help="with --own-rollouts: after `pick X` answer X at once instead of solving again")
    ap.add_argument("--aggregator", choices=["resolve", "pick", "vote", "pair", "column"], default="resolve",
                    help="aggregation targets: `resolve` (list the answers, solve again) or `pick` (check each "
                         "candidate's visible lines, keep the plurality of those that pass and copy its lines; "
                         "solve again only when none passes) or `vote` (list the answers, pick the most "
                         "frequent, box it) or `pair` (three candidates: compare the last two's result "
                         "lines mark by mark, `same` or `differ`, box the plurality) or `column` (copy the "
                         "K candidates' result lines, vote digit by digit); all but `resolve` draw candidates "
                         "from --own-rollouts (half the time, when given) and from synthetic pools")
    ap.add_argument("--k", type=int, default=3, help="candidates per aggregation of --aggregator column (and its preset)")
    ap.add_argument("--self-distill", action="store_true",
                    help="with --own-rollouts: solve examples are the model's own first-round traces (right or "
                         "wrong), so training the aggregator leaves the solver's distribution where it was")
    ap.add_argument("--decision-weight", type=float, default=1.0,
                    help="loss weight of the tokens of each aggregator decision (` ok` / ` no` marks, the "
                         "`pick X` line, the `match` marks and `same` / `differ`)")
    ap.add_argument("--tiny", action="store_true", help="smoke mode: a few steps of a smaller model")
    args = ap.parse_args(argv)
    if args.tiny:
        args.steps, args.batch_size, args.hidden, args.layers = 6, 4, 32, 2
        args.vocab_size, args.log_every, args.save_every, args.warmup = 400, 2, 6, 2
    return args


def model_config(args: argparse.Namespace, tok):
    from transformers import ZayaConfig

    rope = {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5}
    return ZayaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=args.hidden // 4,
        moe_intermediate_size=2 * args.hidden, num_experts=args.experts,
        router_hidden_size=max(16, args.hidden // 4), max_position_embeddings=1024,
        rope_parameters={"hybrid": rope, "hybrid_sliding": dict(rope)},
        bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids(END),
        pad_token_id=tok.convert_tokens_to_ids(PAD), tie_word_embeddings=True,
    )


_DECISION = re.compile(r" (?:ok|no)(?=\n)|pick [^\n]*|match [^\n]*|(?<=\n)(?:same|differ)(?=\n)"
                       r"|(?<=[0-9_?-])=[0-9_-](?=\n)")


def encode(tok, example, decision_weight: float = 1.0) -> tuple[list[int], list[int], list[float]]:
    """(input ids, labels, loss weights) of one example: chat prompt (masked) + trace +
    end-of-turn. The tokens of an aggregator's decisions (each ` ok` / ` no` of a checking
    aggregation, the `pick X` line, the `match` marks and `same` / `differ`) weigh
    `decision_weight`: a few decisive tokens among many copied ones."""
    prompt = tok.apply_chat_template([{"role": "user", "content": example.prompt}],
                                     add_generation_prompt=True, tokenize=True, return_dict=False)
    enc = tok(example.target, add_special_tokens=False, return_offsets_mapping=True)
    spans = [m.span() for m in _DECISION.finditer(example.target)]
    weights = [decision_weight if any(a <= start < b for a, b in spans) else 1.0
               for start, _ in enc["offset_mapping"]] + [1.0]
    target = enc["input_ids"] + [tok.eos_token_id]
    return prompt + target, [-100] * len(prompt) + target, [0.0] * len(prompt) + weights


def batches(args, tok, rng: random.Random):
    """Batches of similar length: draw 8 batches' worth of examples, sort by length, chunk,
    shuffle the chunks."""
    pool_size = 8 * args.batch_size
    index = args.first_problem
    own = [json.loads(line) for path in args.own_rollouts for line in path.read_text().splitlines() if line.strip()]
    while True:
        problems = make("arith", index + pool_size, TRAIN_SEED)[index:]
        index += pool_size
        if args.aggregator != "resolve":
            pool = [solve_or_pick(p.problem, own, rng, tok, args) for p in problems]
        elif own:  # aggregation on the model's own candidates, solve examples on fresh problems
            pool = [own_example(rng.choice(own), rng, tok, args.tail_tokens,
                                   answer_pick=args.own_answer_pick) if rng.random() < args.p_aggregate
                    else make_example(p.problem, rng, tok, args.tail_tokens, 0.0) for p in problems]
        else:
            pool = [make_example(p.problem, rng, tok, args.tail_tokens, args.p_aggregate) for p in problems]
        pool.sort(key=lambda e: len(e.prompt) + len(e.target))
        chunks = [pool[i:i + args.batch_size] for i in range(0, pool_size, args.batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield collate([encode(tok, e, args.decision_weight) for e in chunk], tok.pad_token_id), chunk


def solve_or_pick(problem: str, own: list[dict], rng: random.Random, tok, args):
    """A solve example (with --self-distill and own rollouts, one of the model's own first-round
    traces), or (probability --p-aggregate) an example of the --aggregator over the model's own
    first-round traces of a training problem (half the time, when there are any) or over a
    synthetic pool of right and slipped traces of `problem`."""
    if rng.random() >= args.p_aggregate:
        if args.self_distill and own:  # on-policy: the expected gradient on the solver is zero
            record = rng.choice(own)
            return Example(render_solve(SOLVE_TEMPLATE, record["problem"]), rng.choice(record["stages"][0])["trace"],
                           "solve")
        return make_example(problem, rng, tok, args.tail_tokens, 0.0)
    example = {"vote": vote_example, "pair": pair_example, "pick": pick_example,
               "column": partial(column_example, k=args.k)}[args.aggregator]
    if own and rng.random() < 0.5:
        record = rng.choice(own)
        traces = [c["trace"] for stage in record["stages"] for c in stage]
        return example(record["problem"], traces, rng, tok, args.tail_tokens)
    return example(problem, synthetic_pool(problem, rng), rng, tok, args.tail_tokens)


def collate(rows: list[tuple[list[int], list[int], list[float]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    # right padding, no attention mask: the model is causal (attention and CCA convolutions),
    # so pads after a sequence cannot change its logits
    width = max(len(ids) for ids, _, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    weights = torch.zeros(len(rows), width)
    for i, (x, y, w) in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        weights[i, :len(w)] = torch.tensor(w)
    return ids, labels, weights


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy, each target token weighted, averaged over the target tokens."""
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                           ignore_index=-100, reduction="none")
    return (ce * weights[:, 1:].flatten()).sum() / (labels[:, 1:] != -100).sum().clamp_min(1)


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def probe(model, tok, n: int = 16) -> float:
    """Greedy solve accuracy on a few fixed problems (a progress signal, not the evaluation)."""
    model.eval()
    problems = make("arith", n, PROBE_SEED)
    prompts = [tok.apply_chat_template([{"role": "user", "content": render_solve(SOLVE_TEMPLATE, p.problem)}],
                                       add_generation_prompt=True, tokenize=True, return_dict=False)
               for p in problems]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=200, do_sample=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    right = 0
    for p, row in zip(problems, out[:, width:].tolist()):
        text = tok.decode([t for t in row if t not in (tok.pad_token_id, tok.eos_token_id)])
        right += extract_answer(text) == p.answer
    model.train()
    return right / n


def save(model, tok, args, log: dict) -> None:
    from transformers import GenerationConfig

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    # keep the chat template inside tokenizer_config.json (older loaders read it only there)
    config_path = args.out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = tok.chat_template
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (args.out / "chat_template.jinja").unlink(missing_ok=True)
    GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=True,
        temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_tokens,
    ).save_pretrained(args.out)
    k = args.k if args.aggregator == "column" else 4
    preset = dict(population=8, aggregation_size=k, rounds=2, tail_tokens=args.tail_tokens,
                  max_tokens=args.max_tokens, temperature=1.0, top_p=1.0)
    (args.out / "rsa_preset.json").write_text(json.dumps(preset, indent=2) + "\n")
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    write_card(args.out, log, preset)


def write_card(out: Path, log: dict, preset: dict) -> None:
    """The model card, README.md; keeps an evaluation block that `eval_nano.py --card` wrote."""
    cfg = json.loads((out / "config.json").read_text())
    a = log["args"]
    curve = log["curve"]
    picks = [r for r in curve if r["step"] % 100 == 0 or r is curve[-1]]
    def num(x: float) -> str:
        return "-" if x != x else f"{x:.3f}"  # NaN: no batch of that kind yet

    rows = "\n".join(f"| {r['step']} | {num(r['ema'])} | {num(r['solve'])} | {num(r['aggregate'])} | {r['min']:.1f} |"
                     for r in picks)
    probes = ", ".join(f"{p['step']}: {100 * p['greedy_solve_accuracy']:.0f}%" for p in log["probe"])
    old = (out / "README.md").read_text() if (out / "README.md").exists() else ""
    begin, end = old.find("<!-- eval:begin -->"), old.find("<!-- eval:end -->")
    keep = old[begin:end + len("<!-- eval:end -->")] if -1 < begin < end else (
        "<!-- eval:begin -->\n(not evaluated yet: run `python examples/eval_nano.py --card`)\n<!-- eval:end -->\n")
    if "phase1" in log:
        p1 = log["phase1"]
        training = (
            f"Two seeded phases on a shared 2-core CPU (one thread), {log['steps_done']} steps of batch "
            f"{a['batch_size']} in all, {log['minutes']} minutes:\n"
            f"1. `python examples/train_nano.py --out DIR --time-limit 40`: {p1['steps_done']} steps, AdamW, "
            f"peak lr {p1['args']['lr']}, warmup and cosine decay ({p1['minutes']} min);\n"
            f"2. `python examples/train_nano.py --init-from DIR --steps {a['steps']} --lr {a['lr']} --warmup "
            f"{a['warmup']} --first-problem {a['first_problem']} --time-limit {a['time_limit']}`: "
            f"{log['steps_done'] - p1['steps_done']} more steps on new problems, fresh optimizer, cosine decay.")
    else:
        training = (f"`python examples/train_nano.py` (seeded): {log.get('steps_done', '?')} steps of batch "
                    f"{a['batch_size']}, AdamW, peak lr {a['lr']}, warmup and cosine decay, "
                    f"{log.get('minutes', '?')} minutes on a shared 2-core CPU (one thread).")
    card = CARD.format(training=training, 
        params=f"{log['params'] / 1e6:.2f}M", hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"],
        heads=cfg["num_attention_heads"], kv=cfg["num_key_value_heads"], head_dim=cfg["head_dim"],
        experts=cfg["num_experts"], inter=cfg["moe_intermediate_size"], router=cfg["router_hidden_size"],
        vocab=cfg["vocab_size"], ctx=cfg["max_position_embeddings"], tail=a["tail_tokens"],
        p_agg=a["p_aggregate"], rows=rows, probes=probes, preset=json.dumps(preset),
        examples=log.get("steps_done", 0) * int(a["batch_size"]), eval=keep.rstrip() + "\n")
    (out / "README.md").write_text(card)


CARD = """---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
tags: [zaya, markovian-rsa, tiny, arithmetic]
---

# ZAYA1-nano

A {params}-parameter model of the ZAYA1 architecture (`ZayaForCausalLM`, native format),
trained from scratch on CPU to do one thing: small integer arithmetic with a scratchpad, and
aggregation of candidate tails as Markovian RSA asks. It is the embedded default model of
`markovian-rsa`, so `rsa solve "What is 123 + 45?"` does real work offline. It is a
demonstration of the method, not a calculator and not a general model.

## Architecture
{layers} layers of CCA attention ({heads} query / {kv} key-value heads, head_dim {head_dim},
convolutions over time) and a top-1 MoE of {experts} SwiGLU experts (intermediate {inter}) plus
the skip slot, chosen by the MLP router (width {router}) with router state carried across
depth; learned residual scaling; hidden {hidden}; tied embedding; vocabulary {vocab};
context {ctx}. Loads with `transformers.ZayaForCausalLM.from_pretrained(dir)`.

## Format
Chat template: `<|user|>\\n{{prompt}}<|end|>\\n<|assistant|>\\n`; the model opens
`<think>`, works column by column on zero-padded operands and answers `\\boxed{{RESULT}}`;
end of turn (EOS) is `<|end|>`. Tokenizer: byte-level BPE trained on the corpus (templates
and traces) whose digits are always single tokens; the chat and think tags are single
special tokens.

## Training data
Problems from `rsa.problems.synthetic.make("arith", ..., seed=1)`: "What is A + B?",
"A - B", "A * B" (A up to 3 digits, B up to 2) and "A + B + C", operands of 1 to 4 digits.
{examples} examples, fresh each step: solve prompts (the repository's solve template ->
correct trace) and, with probability {p_agg}, aggregation prompts (the repository's aggregate/refine template over
K candidate tails, K=4 mostly, else 1-3; each tail is the last {tail} tokens of a trace cut
with this tokenizer behind the truncation marker; 0 to K of the candidates are correct, the
others have one realistic slip (a dropped or spurious carry, a wrong digit, a misread
operand digit, a copy slip) propagated to their answer) -> `answers a1 a2 ...` line plus the
correct trace. Loss on the assistant tokens only.

## Training
{training}

| step | loss (EMA) | solve loss | aggregate loss | minutes |
|---|---|---|---|---|
{rows}

Greedy solve accuracy on 16 probe problems during training: {probes}.

## Markovian RSA preset
`rsa_preset.json`: {preset}

## Evaluation
{eval}
## Limitations
Only the task family above; other text gets arbitrary output. At temperature 1.0 single
rollouts slip often, most on products and three-term sums.
"""


def main(argv: list[str] | None = None) -> None:
    from transformers import ZayaForCausalLM

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)

    t0 = time.time()
    if args.init_from is not None:  # a second phase: continue from a saved checkpoint
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.init_from)
        model = ZayaForCausalLM.from_pretrained(args.init_from)
        rng = random.Random(args.seed + 1)  # fresh examples, not a replay of phase one
    else:
        corpus_problems = [p.problem for p in make("arith", 2000, TRAIN_SEED + 1000)]
        corpus = tokenizer_corpus(corpus_problems, random.Random(args.seed), 100 if args.tiny else 1000)
        tok = build_tokenizer(corpus, args.vocab_size)
        model = ZayaForCausalLM(model_config(args, tok))
        with torch.no_grad():
            # transformers initialises the per-head key scale of the QK norm at 0, i.e. uniform
            # attention whose sharpness can only grow at the learning rate; start it at a usual
            # logit scale instead, so copying digits can be learned in a short run
            for layer in model.model.layers:
                layer.self_attn.qk_norm.temp.fill_(args.qk_temp)
    n_params = sum(p.numel() for p in model.parameters())
    lengths = [len(tok.encode(solve_trace(p.problem))) for p in make("arith", 200, TRAIN_SEED + 2000)]
    print(f"tokenizer: {len(tok)} tokens; model: {n_params / 1e6:.2f}M parameters; "
          f"trace tokens min/mean/max {min(lengths)}/{sum(lengths) / len(lengths):.0f}/{max(lengths)}; "
          f"tail_tokens {args.tail_tokens}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    log: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "params": n_params, "curve": [], "probe": []}
    model.train()
    ema: dict[str, float] = {}
    tokens = 0
    data = batches(args, tok, rng)
    for step in range(args.steps):
        (ids, labels, weights), chunk = next(data)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        loss = weighted_loss(model(input_ids=ids).logits, labels, weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += ids.numel()
        kind = "aggregate" if sum(e.kind == "aggregate" for e in chunk) * 2 > len(chunk) else "solve"
        for key in ("all", kind):
            ema[key] = loss.item() if key not in ema else 0.95 * ema[key] + 0.05 * loss.item()
        elapsed = time.time() - t0
        if step % args.log_every == 0 or step == args.steps - 1:
            row = dict(step=step, loss=round(loss.item(), 4), ema=round(ema["all"], 4),
                       solve=round(ema.get("solve", float("nan")), 4),
                       aggregate=round(ema.get("aggregate", float("nan")), 4),
                       lr=round(lr_at(step, args), 6), tok_s=round(tokens / elapsed), min=round(elapsed / 60, 2))
            log["curve"].append(row)
            print(json.dumps(row), flush=True)
        last = step == args.steps - 1 or (args.time_limit is not None and elapsed > 60 * args.time_limit)
        if (step + 1) % args.save_every == 0 or last:
            acc = probe(model, tok, 4 if args.tiny else 16)
            log["probe"].append(dict(step=step + 1, greedy_solve_accuracy=acc))
            log["steps_done"], log["minutes"] = step + 1, round((time.time() - t0) / 60, 2)
            print(f"step {step + 1}: greedy probe accuracy {acc:.2f}; saved to {args.out}", flush=True)
            save(model, tok, args, log)
        if last:
            break
    print(f"done in {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
