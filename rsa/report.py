"""Summary, tables and plot of a batch directory, all rebuilt from `results.jsonl` alone.

`summarize` turns result records (plus run.json's metadata) into `summary.json`'s dict:
accuracy as mean +- standard error over runs (evalchemy style: each run's accuracy over the
problems graded in it, error lines counting as wrong), the same data as per-problem pass@k
over runs, per-stage curves (population mean accuracy, majority-vote accuracy, pass@N) and
token and time totals. The metrics themselves come from `rsa.problems.metrics`. Problems
without a gold answer are run but not graded.

`write_report` writes `summary.json`, `report.md` and `stages.png` (when matplotlib is
installed: `pip install 'markovian-rsa[plot]'`); `rich_tables` renders the same tables for
the terminal. Limits: wall time counts only sessions that ended (a killed one is not timed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsa.problems import mean_accuracy, stage_curves
from rsa.problems import summary as sample_summary

__all__ = ["rich_tables", "summarize", "to_markdown", "write_report"]

Table = tuple[str, list[str], list[list[str]]]  # (title, headers, rows)


def _per_run(graded: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float | None, float | None]:
    runs = sorted({r["run"] for r in graded})
    rows = [[bool(r["correct"]) for r in graded if r["run"] == run] for run in runs]
    per_run = [{"run": run, "accuracy": sum(row) / len(row), "correct": sum(row), "total": len(row)}
               for run, row in zip(runs, rows)]
    if not rows:
        return per_run, None, None
    mean, stderr = mean_accuracy(rows)  # one "problem" per run: mean and stderr over runs
    return per_run, mean, stderr


def _over_runs(graded: list[dict[str, Any]]) -> dict[str, Any] | None:
    by_problem: dict[str, list[bool]] = {}
    for r in graded:
        by_problem.setdefault(r["id"], []).append(bool(r["correct"]))
    return sample_summary(list(by_problem.values())) if by_problem else None


def _stages(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    curves = stage_curves(
        [{"gold": r["gold"], "stages": [s["answers"] for s in r["stages"]]} for r in records],
        correct=[[s["correct"] for s in r["stages"]] for r in records],
        clusters=[[s["clusters"] for s in r["stages"]] for r in records])
    for curve in curves:
        ran = [r["stages"][curve["stage"]] for r in records if len(r["stages"]) > curve["stage"]]
        curve["completion_tokens"] = sum(s["completion_tokens"] for s in ran)
        curve["completion_tokens_per_solve"] = curve["completion_tokens"] / len(ran) if ran else 0
    return curves


def summarize(records: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary.json dict of a batch; `meta` is run.json (optional)."""
    meta = meta or {}
    records = list(records)
    graded = [r for r in records if r.get("gold") is not None]
    per_run, accuracy, stderr = _per_run(graded)
    finish = Counter(f for r in records for s in r["stages"] for f in s["finish_reasons"])
    sessions = meta.get("sessions", [])
    return {
        "input": meta.get("input"), "input_fingerprint": meta.get("input_fingerprint"),
        "backend": meta.get("backend"),
        "backend_name": next((r["backend"] for r in records if r.get("backend")), None),
        "config": meta.get("config"),
        "problems": len({r["id"] for r in records}), "runs": len({r["run"] for r in records}),
        "solves": len(records), "graded": len(graded), "errors": sum(1 for r in records if r.get("error")),
        "accuracy": accuracy, "accuracy_stderr": stderr, "per_run": per_run,
        "over_runs": _over_runs(graded),
        "stages": _stages(records) if records else [],
        "tokens": {
            "prompt": sum(r["prompt_tokens"] for r in records),
            "completion": sum(r["completion_tokens"] for r in records),
            "completion_per_solve": sum(r["completion_tokens"] for r in records) / len(records) if records else 0,
        },
        "finish_reasons": dict(finish),
        "wall_time_s": round(sum(s.get("wall_time_s") or 0 for s in sessions), 3),
        "solve_time_s": round(sum(r.get("wall_time_s", 0) for r in records), 3),
        "failures": [{"id": r["id"], "run": r["run"], "error": r["error"]} for r in records if r.get("error")],
    }


# -- tables -----------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _config_line(cfg: dict[str, Any] | None) -> str:
    if not cfg:
        return "-"
    names = {"population": "N", "aggregation_size": "K", "rounds": "T", "tail_tokens": "tau", "max_tokens": "beta"}
    parts = [f"{short}={cfg.get(key)}" for key, short in names.items()]
    parts += [f"{k}={cfg[k]}" for k in ("temperature", "top_p", "top_k", "seed", "tail_source", "selection",
                                        "early_stop_share", "deadline_s", "token_budget") if cfg.get(k) is not None]
    return " ".join(parts)


def tables(s: dict[str, Any]) -> list[Table]:
    acc = _pct(s["accuracy"])
    if s["accuracy_stderr"] is not None:
        acc += f" ± {100 * s['accuracy_stderr']:.1f} (stderr over {len(s['per_run'])} runs)"
    tok = s["tokens"]
    overview = [
        ["input", str(s["input"] or "-")], ["backend", " ".join(s["backend"] or []) or str(s["backend_name"] or "-")],
        ["config", _config_line(s["config"])],
        ["solves", f"{s['solves']} ({s['problems']} problems x {s['runs']} runs), {s['graded']} graded"],
        ["accuracy", acc], ["errors", str(s["errors"])],
        ["tokens", f"{tok['prompt']:,} prompt, {tok['completion']:,} generated "
                   f"({tok['completion_per_solve']:,.0f} per solve)"],
        ["wall time", f"{s['wall_time_s']:.1f} s"],
    ]
    out: list[Table] = [("Summary", ["", ""], overview)]
    out.append(("Accuracy by stage", ["stage", "problems", "mean acc", "majority acc", "pass@N", "tokens/solve"], [
        [str(c["stage"]), str(c["problems"]), _pct(c["mean_accuracy"]), _pct(c["majority_accuracy"]),
         _pct(c["pass_at_n"]), f"{c['completion_tokens_per_solve']:,.0f}"] for c in s["stages"]]))
    out.append(("Runs", ["run", "accuracy", "correct", "graded"], [
        [str(r["run"]), _pct(r["accuracy"]), str(r["correct"]), str(r["total"])] for r in s["per_run"]]))
    if s["failures"]:
        out.append((f"Failures ({len(s['failures'])}, first 10)", ["id", "run", "error"], [
            [f["id"], str(f["run"]), f["error"][:200]] for f in s["failures"][:10]]))
    return out


def to_markdown(s: dict[str, Any]) -> str:
    def cell(x: str) -> str:
        return x.replace("|", "\\|").replace("\n", " ")

    parts = ["# RSA batch report\n"]
    for title, headers, rows in tables(s):
        parts.append(f"## {title}\n")
        parts.append("| " + " | ".join(headers) + " |")
        parts.append("|" + "---|" * len(headers))
        parts += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
        parts.append("")
    return "\n".join(parts)


def rich_tables(s: dict[str, Any]) -> list[Any]:
    from rich.table import Table as RichTable

    out = []
    for title, headers, rows in tables(s):
        table = RichTable(title=title, show_header=any(headers), title_justify="left")
        for i, h in enumerate(headers):
            table.add_column(h, justify="right" if i and title != "Summary" and h != "error" else "left")
        for row in rows:
            table.add_row(*row)
        out.append(table)
    return out


# -- files ------------------------------------------------------------------------------------
def plot_stages(s: dict[str, Any], path: Path) -> bool:
    """Accuracy by stage as a PNG; False (nothing written) when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas
    except ImportError:
        return False
    curves = [c for c in s["stages"] if c["problems"]]
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for key, label in (("mean_accuracy", "population mean"), ("majority_accuracy", "majority vote"),
                       ("pass_at_n", "pass@N")):
        ax.plot([c["stage"] for c in curves], [100 * c[key] for c in curves], marker="o", label=label)
    ax.set_xlabel("stage (0 = independent rollouts, t >= 1 = aggregation round t)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks([c["stage"] for c in curves])
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"{s['input'] or 'batch'}: {s['graded']} graded solves")
    fig.tight_layout()
    fig.savefig(path)
    return True


def write_report(out: Path, records: Sequence[dict[str, Any]], meta: dict[str, Any] | None
                 ) -> tuple[dict[str, Any], bool]:
    """Write summary.json, report.md and stages.png into `out`: (summary, whether plotted)."""
    s = summarize(records, meta)
    (out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(s))
    return s, plot_stages(s, out / "stages.png")
