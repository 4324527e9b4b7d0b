"""Adding a task type touches only the registry's list (here: $CURATE_TASK_TYPES) and one new file
(tests/toy_tasktype.py): validation, training, scoring in worker processes, MLflow and the ranking all follow from
the registry. The study runs as a new user runs it — `curate run` in its own process, with an empty PREFECT_HOME
(the temporary Prefect server creates its database on this first start) — and the terminal stays quiet."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, write_study

pytestmark = pytest.mark.integration


def _rows(numbers) -> list[dict]:
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return [{"number": " ".join(words[int(d)] for d in str(n)), "answer": "odd" if n % 2 else "even"} for n in numbers]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_toy_task_type_runs_a_whole_study(tmp_path, tiny_model):
    env = {**os.environ, "CURATE_TASK_TYPES": "toy_tasktype", "PYTHONPATH": str(ROOT / "tests"),
           "PREFECT_HOME": str(tmp_path / "prefect"), "CURATE_CACHE": str(tmp_path / "cache")}
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "more.yaml").write_text(f"name: more\ntask: toy_parity\nlicense: CC0-1.0\n"
                                       f"path: {_jsonl(tmp_path / 'more.jsonl', _rows(range(500, 600)))}\n")
    study = {"name": "toy", "task": "toy_parity", "base": {"source": _jsonl(tmp_path / "d0.jsonl", _rows(range(100, 160)))},
             "benchmark": {"data": {"source": _jsonl(tmp_path / "bench.jsonl", _rows(range(900, 930)))}},
             "model": {"source": str(tiny_model)}, "candidates": ["more"], "mixture": {"sizes": [16, 32]},
             "target_size": 256, "training": {"epochs": 1, "batch_size": 8, "max_length": 32, "lora": {"r": 4, "alpha": 8}},
             "output_dir": str(tmp_path / "out"), "catalog_dir": str(catalog), "concurrency": 2}
    path = write_study(tmp_path, study)
    listed = subprocess.run([sys.executable, "-m", "cli.main", "tasks"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert "toy_parity" in listed.stdout, listed.stdout + listed.stderr
    done = subprocess.run([sys.executable, "-m", "cli.main", "run", str(path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "first run on this machine: Prefect creates its database" in done.stdout
    assert "[10/10]" in done.stdout and ("accuracy observed at" in done.stdout or "accuracy predicted at 256" in done.stdout)  # progress (6 control replicates), ranking
    for noise in ("Warning", "warnings.warn", "train_runtime", "Finished in state"):  # all in the log file instead
        assert noise not in done.stdout + done.stderr, noise
    log = (tmp_path / "out" / "curate.log").read_text()
    assert "Beginning flow run" in log and "point 2/2 size=32" in log
    ranking = (tmp_path / "out" / "ranking" / "ranking.md").read_text()
    assert "| more |" in ranking and "| control |" in ranking
    bad = write_study(tmp_path, {**study, "task": "toy_parity_typo"}, "bad.yaml")
    refused = subprocess.run([sys.executable, "-m", "cli.main", "validate", str(bad)], env=env, cwd=ROOT,
                             capture_output=True, text=True)
    said = " ".join(refused.stdout.split())  # the terminal wraps long lines
    assert refused.returncode == 2 and "unknown task type 'toy_parity_typo'; task types: classification, code, " \
                                       "extractive_qa, instruction, math, preference, toy_parity" in said
