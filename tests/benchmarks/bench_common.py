"""What the benches share: the child process that scores with one code version, older commits' code, result lines."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "deployments" / "studies"

# Runs in a child process with PYTHONPATH set to one code version: scores the same adapter `points` times in a row,
# as an arm's worker scores its points, and prints the seconds of each (and of its generation: Scorer.samples, which
# generate() calls, where the code has it) and where the predictions went.
CHILD = r"""
import json, sys, time, torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
import tasks
try:
    from tasks.backends.evaluation import score_adapter
    from tasks.schema.training import Training
    context = args.get("context") or {"labels": args["labels"]}
except ImportError:  # the code before the layout split
    from tasks.evaluation import score_adapter
    from tasks.study import Training
    context = args["labels"]
import transformers; transformers.logging.set_verbosity_error()
generating = [0.0]
try:
    from tasks.backends.scorer import Scorer
except ImportError:  # code from before the Scorer module: only the whole evaluation is timed
    Scorer = None
if Scorer is not None:
    def timed(self, *a, _samples=Scorer.samples, **k):
        start = time.perf_counter()
        try:
            return _samples(self, *a, **k)
        finally:
            generating[0] += time.perf_counter() - start
    Scorer.samples = timed
preset = Training(**{k: v for k, v in args["preset"].items() if k in Training.model_fields})  # fields of that code
times, generation = [], []
for k in range(args["points"]):
    start, generating[0] = time.perf_counter(), 0.0
    out = score_adapter(args["model"], args["adapter"], args["bench"], args.get("task", "classification"), context,
                        preset, args["out"] + f"/p{k}")
    times.append(time.perf_counter() - start)
    generation.append(generating[0])
print(json.dumps({"times": times, "generation": generation, "predictions": out["predictions"], "accuracy": out["metrics"].get("accuracy"),
                  "code": tasks.__file__}))
"""


def score(code: Path, args: dict) -> dict:
    from tasks.ops.workers import MALLOC

    env = {**os.environ, **MALLOC, "PYTHONPATH": str(code), "TOKENIZERS_PARALLELISM": "false"}  # as in a worker
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env, cwd=code, capture_output=True,
                          text=True)  # cwd first on sys.path: the code under test, not the installed one
    if done.returncode:
        raise SystemExit(f"scoring with {code} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"].startswith(str(code)), f"imported {result['code']}, expected code under {code}"
    return result


LINES: list[str] = []


def say(line: str) -> None:
    """Print a result line and keep it for --save."""
    print(line, flush=True)
    LINES.append(line)


def checkout(commit: str, folder: Path) -> Path:
    """The tasks package of an older commit, for the 'before' side of a comparison."""
    if not folder.exists():
        folder.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "tasks"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder
