"""What the terminal shows: errors, tables, the ranking, a progress display for a running study, and the quiet mode
that sends library warnings and Prefect's per-task logs to `<output>/curate.log` instead of the screen."""

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tasks.common import LOG_FILE_ENV as LOG_FILE  # worker processes log there too (tasks.ops.workers)

# Not a terminal (a pipe, a log, CI): lines are never folded, and tables are as wide as their content.
console = Console() if sys.stdout.isatty() else Console(width=1000, soft_wrap=True)
# Exit codes of every verb (docs/cli.md): 0 ok; 1 nothing found, or the study ran and failed; 2 invalid input.
OK, NOTHING_OR_FAILED, INVALID = 0, 1, 2
JSON = {"on": False}  # --json: the one JSON document on stdout, errors included


def fail(err: Exception, code: int = INVALID) -> None:
    """The one way a command stops on bad input: the message (a JSON object with --json), exit status 2."""
    if JSON["on"]:
        emit({"ok": False, "error": str(err).split("\n")[0], "problems": getattr(err, "problems", [str(err)])})
        raise typer.Exit(code)
    console.print("[bold red]error:[/]", end=" ")
    console.print(str(err), markup=False, highlight=False)  # messages hold regexes like [a-z0-9]
    raise typer.Exit(code)


def emit(document) -> None:
    """--json output: one JSON document on stdout (numbers as numbers, paths and dates as strings)."""
    sys.stdout.write(json.dumps(_plain(document), indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def _plain(value):
    """NaN and infinities are not JSON: null (a metric that could not be computed)."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def table(rows: list[dict], title: str) -> Table:
    out = Table(title=title)
    for col in rows[0]:
        out.add_column(col, justify="left" if col in ("arm", "license", "method", "state", "why", "task", "row fields", "metrics") else "right",
                       no_wrap=col != "license", max_width=24 if col == "license" else None)
    for r in rows:
        out.add_row(*r.values())
    return out


TERMINAL_HIDDEN = ("license", "duplicates", "d0_copies", "tokens_p50", "method")  # in ranking.csv/.md; too wide for a terminal


def print_ranking(result: dict, name: str) -> None:
    title = f"{name + ': ' if name else ''}{result['metric']} {result['ranked_at']} (all columns: ranking.md)"
    short = {"delta_vs_control": "delta", "contaminated": "contam.", "removed": "rm"}
    rows = [{short.get(k, k).replace(result["metric"] + "@", "@").replace(" interval", " int."): v
             for k, v in r.items() if k not in TERMINAL_HIDDEN} for r in result["rows"]]
    console.print(table(rows, title))
    console.print(result["method_note"], markup=False, highlight=False)
    for key in ("noise_line",):
        if result.get(key):
            console.print(result[key], markup=False, highlight=False)
    if result.get("placebo"):
        console.print(result["placebo"]["summary"], markup=False, highlight=False)
    if result["agreement"]:
        console.print(result["agreement"], markup=False, highlight=False)


def fmt(v, key: str = "") -> str:
    """A status cell: seconds with one decimal, metrics with four."""
    if v is None:
        return ""
    return f"{v:.1f}" if key == "seconds" else f"{v:.4f}" if isinstance(v, float) else str(v)


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


# ---- quiet mode --------------------------------------------------------------------------------------------------
class _PrefectOnly(logging.Filter):
    """On the console: Prefect's own warnings and errors; anything else only from ERROR up (the rest goes to the file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("prefect") or record.levelno >= logging.ERROR


def quiet_defaults(verbose: bool) -> None:
    """Before Prefect or MLflow is imported: their console output at WARNING unless --verbose."""
    if verbose:
        return
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # per-tensor bars of a GGUF conversion, in worker processes too


def log_to_file(path: Path, verbose: bool) -> Path:
    """Everything — Prefect's INFO logs per point, library warnings, worker logs — also goes to `path`; in quiet mode
    the console keeps only Prefect's warnings and errors."""
    import prefect  # noqa: F401 - configures logging; our handlers go on after it

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    logging.captureWarnings(True)
    os.environ[LOG_FILE] = str(path)
    if not verbose:
        for h in root.handlers:
            if h is not handler:
                h.addFilter(_PrefectOnly())
    return path


# ---- progress ----------------------------------------------------------------------------------------------------
class StudyProgress:
    """Polls MLflow (the record of work) while the flow runs: a bar per arm in a terminal, and one line per finished
    point everywhere (points done/total, elapsed, estimated time left from the points trained so far)."""

    def __init__(self, uri: str, study_name: str, plan: dict[str, list[tuple[int, int]]], workers: int = 1,
                 every: float = 3.0):
        """plan: arm -> its points' (size, seed); workers: points that run at once (the estimate of the time left)."""
        per_arm = {arm: len(points) for arm, points in plan.items()}
        self.uri, self.name, self.every, self.plan, self.workers = uri, study_name, every, plan, workers
        self.seconds: dict[int, list[float]] = {}  # size -> seconds of the points trained here
        self.total, self.since_ms = sum(per_arm.values()), int(time.time() * 1000)
        self.start, self.seen, self.trained = time.time(), set(), 0
        self.stop_event = threading.Event()
        self.bars = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=console,
                             disable=not console.is_terminal, transient=True)
        self.tasks = {a: self.bars.add_task(a, total=n, note="") for a, n in per_arm.items()}
        self.thread = threading.Thread(target=self._loop, daemon=True, name="curate-progress")

    def __enter__(self):
        self.bars.start()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=10)
        self._poll()  # the last points, finished between two polls
        self.bars.stop()

    def _loop(self) -> None:
        while not self.stop_event.wait(self.every):
            try:
                self._poll()
            except Exception as err:  # noqa: BLE001 - the display must never stop the study
                logging.getLogger("curate.progress").info("progress poll failed: %s", err)

    def _poll(self) -> None:
        from tasks.ops.status import study_status

        info = study_status(self.uri, self.name, since_ms=self.since_ms, prefect=False)
        if not info:
            return
        metric = info["primary_metric"]
        for p in info["points"]:
            key = (p["arm"], p["size"], p["seed"])
            if key in self.seen or not p["state"].startswith(("completed", "failed")):
                continue
            self.seen.add(key)
            reused = p["state"].endswith("(reused)")
            self.trained += p["state"].startswith("completed") and not reused
            self._line(p, metric, reused)
        for arm in info["arms"]:
            if arm["arm"] in self.tasks:
                done = int(arm["points"].split("/")[0])
                self.bars.update(self.tasks[arm["arm"]], completed=done, note=arm["state"])

    def _line(self, p: dict, metric: str, reused: bool) -> None:
        from tasks.core.plan import time_left

        now = time.time()
        elapsed, done = now - self.start, len(self.seen)
        if p["state"].startswith("completed") and not reused and p.get("seconds"):
            self.seconds.setdefault(p["size"], []).append(float(p["seconds"]))
        remaining = [size for arm, points in self.plan.items() for size, seed in points
                     if (arm, size, seed) not in self.seen]
        left = time_left(remaining, self.seconds, self.workers)
        what = (f"FAILED: {p['why']}" if p["state"].startswith("failed")
                else f"{metric}={fmt(p['metric'])}" + (" (reused)" if reused else f" in {fmt(p['seconds'], 'seconds')} s"))
        eta = f", ~{clock(left)} left" if left is not None and done < self.total else ""
        console.print(f"  [{done}/{self.total}] {p['arm']} size={p['size']} seed={p['seed']}: {what}  "
                      f"(elapsed {clock(elapsed)}{eta})", markup=False, highlight=False)
