"""The code sandbox before and after issue 25, side by side in one run, on a finished code study's own completions.

    .venv/bin/python tests/benchmarks/bench_sandbox.py runs/code-demo      (after `make demo-code`)

Reads every point's predictions.jsonl under <output>/mlartifacts and the study's benchmark, rebuilds each executed
program (prompt + the model's completion + the tests), and runs all of them through the sandbox of commit bfde674
(one process, outcome reported by that process) and through this one (the solution and the tests in two isolated
processes), alternating halves so both see the same machine load. Prints the outcome kinds of each, how many
programs got a different kind, and seconds per program with their ratio."""

import collections
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
BEFORE = "bfde674"  # the last commit with the one-process sandbox

from tasks.backends import sandbox  # noqa: E402
from tasks.core import codeconvert  # noqa: E402


def old_sandbox(folder: Path):
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "tasks/backends/sandbox.py",
                              "tasks/backends/sandbox_runner.py"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    spec = importlib.util.spec_from_file_location("sandbox_before", folder / "tasks/backends/sandbox.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def programs(output: Path) -> list[tuple[dict, str, str]]:
    bench = {r["id"]: r for r in map(json.loads, (output / "data" / "benchmark.jsonl").read_text().splitlines())}
    found = []
    for path in sorted(output.glob("mlartifacts/*/artifacts/predictions.jsonl")):
        for rec in map(json.loads, path.read_text().splitlines()):
            if rec.get("id") in bench and "generation" in rec:
                found.append((bench[rec["id"]], rec["generation"], rec.get("kind", "")))
    return found


def timed(run, items, parallel):
    start = time.perf_counter()
    out = run(items, parallel)
    return out, time.perf_counter() - start


def main(output: Path, parallel: int = 2) -> None:
    found = programs(output)
    if not found:
        sys.exit(f"no code predictions under {output}/mlartifacts (run `make demo-code` first)")
    with tempfile.TemporaryDirectory() as tmp:
        old = old_sandbox(Path(tmp))
        limits_old, limits_new = old.Limits(timeout_s=5, memory_mb=512), sandbox.Limits(timeout_s=5, memory_mb=512)
        run_old = lambda items, p: old.execute_many(  # noqa: E731
            [f"{row['prompt']}{completion}\n\n{row['test']}" for row, completion, _ in items], limits_old, p)
        run_new = lambda items, p: sandbox.execute_many(  # noqa: E731
            [sandbox.Program(**codeconvert.program(row, completion)) for row, completion, _ in items], limits_new, p)
        half = len(found) // 2
        kinds_old, kinds_new, t_old, t_new = [], [], 0.0, 0.0
        for first, second in ((run_old, run_new), (run_new, run_old)):  # alternate the order per half
            part = found[:half] if first is run_old else found[half:]
            for run in (first, second):
                out, seconds = timed(run, part, parallel)
                (kinds_old if run is run_old else kinds_new).extend(o.kind for o in out)
                t_old, t_new = (t_old + seconds, t_new) if run is run_old else (t_old, t_new + seconds)
    order = found[:half] + found[half:]
    recorded = [k for _, _, k in order]
    print(f"{len(found)} programs from {output} ({parallel} at a time), executor now: "
          f"{sandbox.executor_name(limits_new.executor)}")
    for name, kinds in (("recorded in the study", recorded), (f"before ({BEFORE})", kinds_old), ("now", kinds_new)):
        print(f"  {name:24s} {dict(sorted(collections.Counter(kinds).items()))}")
    changed = [(row["id"], a, b) for (row, _, _), a, b in zip(order, kinds_old, kinds_new) if a != b]
    print(f"  programs with a different kind before/now: {len(changed)}" + "".join(f"\n    {c}" for c in changed[:20]))
    print(f"  seconds per program: before {t_old / len(found):.3f}  now {t_new / len(found):.3f}  "
          f"now/before = {t_new / t_old:.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2)
