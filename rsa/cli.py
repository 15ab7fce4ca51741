"""The `rsa` command line: `rsa solve`, `rsa batch` (resumable), `rsa report`.

    rsa solve "What is 17 * 23?" --backend http://localhost:8000/v1 -n 8 -k 4 -t 2
    rsa batch data/aime25.jsonl --out runs/aime25 --backend http://a:8000/v1 --backend http://b:8000/v1 --runs 4
    rsa report runs/aime25

Config flags mirror `RSAConfig` and override `--config FILE.json`, which overrides `--preset`.
Backends are SPEC strings (`rsa.backend_spec`). Exit codes: 0 done (a batch whose solves
failed too: they are recorded), 1 failed (bad input data, `rsa solve` failing, a crash), 2 bad
usage, config or backend (or a batch directory holding other settings), 130 interrupted by
Ctrl-C (143 by SIGTERM); an interrupted batch resumes when the same command is run again.
"""

import asyncio
import functools
import inspect
import json
import shlex
import signal
import sys
import time
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from rsa.backends.base import BackendError
from rsa.problems import ProblemLoadError, default_grader

from . import batch as batch_mod
from .api import asolve, make_config
from .backend_spec import BackendSpecError, build_backend
from .config import PRESETS, RSAConfig
from .config import preset as preset_fields
from .events import StageFinished, StageStarted
from .progress import BatchProgress
from .report import rich_tables, write_report
from .results import RSAError, SolveResult
from .runlog import ResultsLog, RunLogError, read_meta, read_results

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Markovian RSA: solve math problems by recursive self-aggregation of reasoning traces.")
out_console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

BACKEND_HELP = ("engine (default model) | engine:PATH | http(s)://URL (repeat for replicas) | hf:PATH | "
                "import:MODULE:FACTORY (FACTORY() returns a Backend object)")
BackendOpt = Annotated[Optional[list[str]], typer.Option("--backend", "-b", metavar="SPEC", help=BACKEND_HELP)]

# RSAConfig field -> (flag names, type); help texts come from the field descriptions.
CONFIG_FLAGS: dict[str, tuple[tuple[str, ...], type]] = {
    "population": (("--population", "-n"), int),
    "aggregation_size": (("--aggregation-size", "-k"), int),
    "rounds": (("--rounds", "-t"), int),
    "tail_tokens": (("--tail-tokens",), int),
    "max_tokens": (("--max-tokens",), int),
    "temperature": (("--temperature",), float),
    "top_p": (("--top-p",), float),
    "top_k": (("--top-k",), int),
    "seed": (("--seed",), int),
    "tail_source": (("--tail-source",), str),
    "selection": (("--selection",), str),
    "early_stop_share": (("--early-stop-share",), float),
    "barrier": (("--barrier/--no-barrier",), bool),
    "max_concurrency": (("--max-concurrency",), int),
    "deadline_s": (("--deadline",), float),
    "token_budget": (("--token-budget",), int),
}
HELP = {  # where RSAConfig's field description is empty or not CLI-shaped
    "temperature": "sampling temperature (0 = greedy)", "top_p": "nucleus sampling mass",
    "top_k": "sample among the k most likely tokens", "tail_source": "what the next stage sees: trace | answer",
    "selection": "final answer: majority | random | aggregate",
    "deadline_s": "wall-clock seconds per solve; on expiry the best answer so far is returned",
    "token_budget": "generated tokens per solve; on reaching it the best answer so far is returned",
}
FLAG_OF = {field: flags[0].split("/")[0] for field, (flags, _) in CONFIG_FLAGS.items()}


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"error: {message}", markup=False)
    return typer.Exit(code)


def load_config(preset: Optional[str], config_file: Optional[Path], flags: dict[str, Any]) -> RSAConfig:
    """Preset, then the JSON file, then the flags given; exits 2 with pydantic's messages."""
    base: dict[str, Any] = {}
    if preset is not None:
        try:
            base.update(preset_fields(preset))
        except ValueError as exc:
            raise fail(str(exc), 2) from None
    if config_file is not None:
        try:
            data = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read --config {config_file}: {exc}", 2) from None
        if not isinstance(data, dict):
            raise fail(f"--config {config_file} must hold a JSON object of RSAConfig fields", 2)
        base.update(data)
    try:
        return make_config(base, **flags)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():  # name the flag; a whole-model check (K > N) has no field
            field = str(e["loc"][0]) if e["loc"] else None
            got = f" (got {e['input']!r})" if field else ""
            lines.append(f"  {FLAG_OF.get(field, field) if field else 'config'}: {e['msg']}{got}")
        raise fail("invalid config:\n" + "\n".join(lines), 2) from None


def _option(name: str, typ: Any, *decls: str, help: Optional[str]) -> inspect.Parameter:
    option = typer.Option(*decls, help=help, rich_help_panel="RSA config")
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[typ], option])


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the RSAConfig flags plus --preset/--config; it receives `config`."""
    fields = RSAConfig.model_fields
    extra = [_option(name, typ, *flags, help=HELP.get(name) or fields[name].description)
             for name, (flags, typ) in CONFIG_FLAGS.items()]
    extra.append(_option("preset", str, help=f"start from a preset: {', '.join([*PRESETS, 'nano'])} "
                         "(nano, the default model's own, is the default with --backend engine)"))
    extra.append(_option("config_file", Path, "--config",
                         help="FILE.json of RSAConfig fields (over the preset, under the flags)"))
    own = [p for p in inspect.signature(func).parameters.values() if p.name != "config"]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in CONFIG_FLAGS}
        preset, config_file = kwargs.pop("preset"), kwargs.pop("config_file")
        if preset is None and config_file is None and kwargs.get("backend") in (None, [], ["engine"]):
            preset = "nano"  # the embedded default model runs with its shipped setting
        config = load_config(preset, config_file, {k: v for k, v in flags.items() if v is not None})
        return func(config=config, **kwargs)

    params = own + extra
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def open_backend(specs: Optional[list[str]]) -> Any:
    try:
        return build_backend(specs or [])
    except BackendSpecError as exc:
        raise fail(str(exc), 2) from None


# -- rsa solve --------------------------------------------------------------------------------
def stage_table(result: SolveResult) -> Table:
    table = Table(title="Stages", title_justify="left")
    for name in ("stage", "live", "majority", "share", "tokens"):
        table.add_column(name, justify="left" if name == "majority" else "right")
    for s in result.stages:
        table.add_row(str(s.index), f"{len(s.live)}/{len(s.candidates)}", s.majority or "-", f"{100 * s.share:.0f}%",
                      f"{s.completion_tokens:,}")
    return table


def print_solve(result: SolveResult) -> None:
    votes = ", ".join(f"{a} x{n}" for a, n in sorted(result.votes.items(), key=lambda kv: -kv[1])[:5])
    out_console.print(f"answer: {result.answer if result.answer is not None else '(none)'}", markup=False)
    out_console.print(f"share:  {100 * result.share:.0f}%  (votes: {votes or '-'})", markup=False)
    out_console.print(stage_table(result))
    stop = f", stopped early: {result.stop_reason}" if result.stopped_early else ""
    out_console.print(f"{result.prompt_tokens:,} prompt + {result.completion_tokens:,} generated tokens, "
                      f"{result.wall_time_s:.1f} s, seed {result.seed}{stop}", markup=False)


@app.command()
@config_options
def solve(
    problem: Annotated[str, typer.Argument(help="the problem text ('-' reads it from stdin)")],
    backend: BackendOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the whole SolveResult as JSON")] = False,
    config: Optional[RSAConfig] = None,
) -> None:
    """Solve one problem: the answer, its vote share and a per-stage summary."""
    text = sys.stdin.read() if problem == "-" else problem
    if not text.strip():
        raise fail("the problem text is empty", 2)

    async def go() -> SolveResult:
        client = open_backend(backend)
        status = err_console.status("solving") if err_console.is_terminal and not json_out else None

        def on_event(ev: Any) -> None:
            if status is not None and isinstance(ev, (StageStarted, StageFinished)):
                status.update(f"stage {ev.stage} {'running' if isinstance(ev, StageStarted) else 'done'}")

        try:
            if status is not None:
                status.start()
            return await asolve(text, backend=client, config=config, on_event=on_event)
        finally:
            if status is not None:
                status.stop()
            await client.aclose()

    try:
        result = asyncio.run(go())
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except RSAError as exc:
        if json_out and exc.partial is not None:
            sys.stdout.write(exc.partial.model_dump_json(indent=2) + "\n")
        raise fail(str(exc), 1) from None
    except BackendError as exc:
        raise fail(f"{type(exc).__name__}: {exc}", 1) from None
    if json_out:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        print_solve(result)


# -- rsa batch --------------------------------------------------------------------------------
class OnError(str, Enum):
    skip = "skip"
    abort = "abort"


def resume_command() -> str:
    return shlex.join(["rsa", *sys.argv[1:]])


@app.command()
@config_options
def batch(
    input: Annotated[str, typer.Argument(help="problems: .jsonl/.json/.csv/.parquet, a save_to_disk directory, "
                                              "or synthetic:KIND:N[:SEED]")],
    out: Annotated[Path, typer.Option("--out", "-o", help="results directory (resumable)")],
    backend: BackendOpt = None,
    runs: Annotated[int, typer.Option(min=1, help="solves per problem; run r uses seed + r")] = 1,
    max_problems_in_flight: Annotated[int, typer.Option(min=1, help="problems solved concurrently")] = 8,
    on_error: Annotated[OnError, typer.Option(help="bad input lines: skip them or abort")] = OnError.abort,
    force: Annotated[bool, typer.Option("--force", help="continue in --out even if its recorded config or "
                                                         "input differ")] = False,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="solve again the pairs recorded with "
                                                                       "an error")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display and no tables")] = False,
    config: Optional[RSAConfig] = None,
) -> None:
    """Solve many problems x runs into --out (results.jsonl, summary.json, report.md, stages.png)."""
    assert config is not None
    try:
        run_batch_command(input, out, backend, runs, max_problems_in_flight, on_error, force, retry_errors,
                          quiet, config)
    except KeyboardInterrupt:  # outside the solving (loading, writing the report): nothing is lost
        err_console.print(f"interrupted; resume with:\n  {resume_command()}", markup=False)
        raise typer.Exit(130) from None


def run_batch_command(input: str, out: Path, backend: Optional[list[str]], runs: int, max_problems_in_flight: int,
                      on_error: OnError, force: bool, retry_errors: bool, quiet: bool, config: RSAConfig) -> None:
    try:
        problems, skipped = batch_mod.load_input(input, on_error.value)
    except ProblemLoadError as exc:
        hint = " (--on-error skip drops bad lines of JSONL/JSON files)" if exc.location else ""
        raise fail(f"{exc}{hint}", 1) from None
    except ImportError as exc:
        raise fail(str(exc), 1) from None
    for e in skipped:
        err_console.print(f"skipped: {e}", markup=False)
    try:
        log = ResultsLog(out)  # locks the directory, then cuts a torn tail
    except RunLogError as exc:
        raise fail(str(exc), 2) from None
    try:
        meta = batch_mod.prepare_dir(out, config=config, source=input, problems=problems, runs=runs,
                                     backend=backend or ["engine"], force=force, command=sys.argv[1:],
                                     skipped=[str(e) for e in skipped])
        records = read_results(out)
    except RunLogError as exc:
        log.close()
        raise fail(str(exc), 2) from None
    if log.repaired_bytes:
        err_console.print(f"repaired {log.path}: cut a torn final line ({log.repaired_bytes} bytes)", markup=False)
    jobs = batch_mod.pending_jobs(problems, runs, records, retry_errors)
    pending = {(p.id, r) for p, r in jobs}
    wanted = {(p.id, r) for r in range(runs) for p in problems}
    done = [r for r in records if (r["id"], r["run"]) in wanted - pending]
    if not quiet and records:
        err_console.print(f"resuming: {len(done)} of {len(wanted)} pairs already in {out / 'results.jsonl'}",
                          markup=False)

    t0 = time.perf_counter()
    try:
        with log:
            status, code = asyncio.run(run_batch(jobs, config, backend, log, max_problems_in_flight,
                                                 BatchProgress(err_console, total=len(wanted), done=done,
                                                               enabled=not quiet)))
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once; every written line is whole
        status, code = "interrupted", 130
    except typer.Exit:  # the backend could not be built: nothing ran
        batch_mod.finish_session(out, meta, "failed", time.perf_counter() - t0)
        raise
    except Exception:  # a bug, not a failed solve (those are recorded): show it, keep the lines
        traceback.print_exc()
        status, code = "failed", 1
    batch_mod.finish_session(out, meta, status, time.perf_counter() - t0)
    finish_batch(out, meta, status, code, quiet)


async def run_batch(jobs: list[batch_mod.Job], config: RSAConfig, specs: Optional[list[str]], log: ResultsLog,
                    in_flight: int, progress: BatchProgress) -> tuple[str, int]:
    """Run the pairs; ("completed", 0) or ("interrupted", 130/143) when a signal stopped it."""
    if not jobs:
        return "completed", 0
    client = open_backend(specs)
    stop, received = asyncio.Event(), []
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: leave now
        received.append(sig)
        err_console.print("stopping: cancelling the solves in flight (again to quit at once)...", markup=False)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    grader = default_grader()  # shared with the controller's vote clustering: one cache, one worker
    try:
        def on_record(rec: dict[str, Any]) -> None:
            log.append(rec)
            progress.on_record(rec)

        async def solve(job: batch_mod.Job) -> dict[str, Any]:
            pair = (job[0].id, job[1])
            return await batch_mod.solve_job(job, backend=client, config=config, grader=grader,
                                             on_event=lambda ev: progress.on_event(pair, ev))

        with progress:
            interrupted = await batch_mod.run_jobs(jobs, solve, on_record, in_flight=in_flight, stop=stop)
    finally:
        await client.aclose()
    if interrupted:
        return "interrupted", 128 + (received[0] if received else signal.SIGINT)
    return "completed", 0


def finish_batch(out: Path, meta: dict[str, Any], status: str, code: int, quiet: bool) -> None:
    records = read_results(out)
    summary, plotted = write_report(out, records, meta)
    if not quiet:
        for table in rich_tables(summary):
            out_console.print(table)
    files = "results.jsonl, summary.json, report.md" + (", stages.png" if plotted else "")
    acc = summary["accuracy"]
    acc_text = "-" if acc is None else f"{100 * acc:.1f}%"
    err_console.print(f"{status}: {summary['solves']} solves, accuracy {acc_text}; wrote {files} in {out}",
                      markup=False)
    if not plotted:
        err_console.print("no stages.png: install matplotlib (pip install 'markovian-rsa[plot]')", markup=False)
    if summary["errors"] and status == "completed":
        err_console.print(f"{summary['errors']} solves failed (see 'error' in results.jsonl); "
                          "rerun with --retry-errors to solve them again", markup=False)
    if code:
        err_console.print(f"{status}; resume with:\n  {resume_command()}", markup=False)
        raise typer.Exit(code)


# -- rsa report -------------------------------------------------------------------------------
@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="a batch directory (holding results.jsonl)", metavar="DIR")],
) -> None:
    """Rebuild summary.json, report.md and stages.png from DIR/results.jsonl and print the tables."""
    try:
        records = read_results(out)
        meta = read_meta(out)
    except RunLogError as exc:
        raise fail(str(exc), 1) from None
    if not records:
        raise fail(f"no results in {out / 'results.jsonl'}", 1)
    summary, plotted = write_report(out, records, meta)
    for table in rich_tables(summary):
        out_console.print(table)
    if not plotted:
        err_console.print("no stages.png: install matplotlib (pip install 'markovian-rsa[plot]')", markup=False)


# -- rsa serve / rsa mcp ----------------------------------------------------------------------
def server_defaults(config: RSAConfig) -> Optional[RSAConfig]:
    """None when no config flag was given, so the servers keep their own per-effort defaults."""
    return None if config == RSAConfig() else config


@app.command()
@config_options
def serve(
    backend: BackendOpt = None,
    host: Annotated[str, typer.Option(help="address to bind (loopback unless told otherwise)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8020,
    api_key: Annotated[Optional[str], typer.Option(envvar="RSA_API_KEY", help="require this Bearer key")] = None,
    upstream_api_key: Annotated[Optional[str], typer.Option(envvar="RSA_UPSTREAM_API_KEY",
                                                            help="key sent to http(s) upstreams")] = None,
    max_rollouts: Annotated[Optional[int], typer.Option(min=1, help="refuse requests needing more rollouts")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    config: Optional[RSAConfig] = None,
) -> None:
    """OpenAI-compatible proxy: model `rsa` runs Markovian RSA, other models pass through."""
    try:
        from .proxy import serve_proxy
    except ImportError as exc:
        raise fail(str(exc), 2) from None
    try:
        serve_proxy(backend or ["engine"], host=host, port=port, api_key=api_key, upstream_api_key=upstream_api_key,
                    config=server_defaults(config), max_rollouts=max_rollouts, log_level=log_level)
    except BackendSpecError as exc:
        raise fail(str(exc), 2) from None


class McpTransport(str, Enum):
    stdio = "stdio"
    http = "http"


@app.command()
@config_options
def mcp(
    backend: BackendOpt = None,
    transport: Annotated[McpTransport, typer.Option(help="stdio, or streamable HTTP")] = McpTransport.stdio,
    host: Annotated[str, typer.Option(help="address to bind (http transport)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (http transport)")] = 8021,
    path: Annotated[str, typer.Option(help="endpoint path (http transport)")] = "/mcp",
    max_deadline: Annotated[Optional[float], typer.Option(help="cap on every solve's wall-clock seconds")] = None,
    config: Optional[RSAConfig] = None,
) -> None:
    """MCP tool server with a `solve_math` tool (stdio prints nothing but the protocol)."""
    try:
        from .mcp_server import run_mcp
    except ImportError as exc:
        raise fail(str(exc), 2) from None
    try:
        run_mcp(backend or ["engine"], transport=transport.value, host=host, port=port,
                config=server_defaults(config), max_deadline_s=max_deadline, path=path)
    except BackendSpecError as exc:
        raise fail(str(exc), 2) from None


# -- rsa engine serve -------------------------------------------------------------------------
engine_app = typer.Typer(no_args_is_help=True, help="The embedded ZAYA1 engine.")
app.add_typer(engine_app, name="engine")


@engine_app.command("serve")
def engine_serve(
    model: Annotated[str, typer.Option("--model", "-m", help="checkpoint directory (native ZAYA format); "
                                       "'nano' for the shipped ZAYA1-nano")],
    host: Annotated[str, typer.Option(help="address to bind (loopback unless told otherwise)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8010,
    api_key: Annotated[Optional[str], typer.Option(envvar="RSA_API_KEY", help="require this Bearer key on /v1")] = None,
    served_model_name: Annotated[Optional[str], typer.Option(help="model name in the API")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on CUDA, else float32) | float32 | bfloat16 | float16")] = "auto",
    kv_cache_dtype: Annotated[Optional[str], typer.Option(help="K/V cache dtype (default: the model's)")] = None,
    max_num_seqs: Annotated[Optional[int], typer.Option(min=1, help="sequences decoded at once")] = None,
    max_num_batched_tokens: Annotated[Optional[int], typer.Option(min=1, help="tokens per engine step")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(min=1, help="context length cap")] = None,
    block_size: Annotated[Optional[int], typer.Option(min=1, help="tokens per K/V cache block")] = None,
    memory_budget: Annotated[Optional[int], typer.Option(min=1, help="cache bytes (K/V blocks + CCA state)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="engine seed for unseeded requests")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve a ZAYA1 checkpoint with the OpenAI/vLLM-compatible API (chat, completions, tokenize, metrics)."""
    try:
        from rsa.backends.zaya1.server import serve as serve_engine
    except ImportError as exc:
        raise fail(f"{exc} (install the engine and serve extras: pip install 'markovian-rsa[engine,serve]')", 2) from None
    if model == "nano":
        from rsa.backends.zaya1 import NANO_PATH

        model = str(NANO_PATH)
    options = {k: v for k, v in dict(kv_cache_dtype=kv_cache_dtype, max_num_seqs=max_num_seqs,
                                      max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
                                      block_size=block_size, memory_budget=memory_budget, seed=seed).items()
               if v is not None}
    try:
        serve_engine(model, host=host, port=port, api_key=api_key, served_model_name=served_model_name,
                     log_level=log_level, device=device, dtype=dtype, **options)
    except (OSError, ValueError) as exc:
        raise fail(str(exc), 2) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
