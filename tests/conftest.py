"""Offline fixtures: a tiny random-init Llama and a tokenizer trained on fixture text (seconds, no downloads)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["teamstack"]  # the `team` fixture: the team stack, started once per session

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MIRROR = ROOT.parent / "shared" / "datasets"

if MIRROR.is_dir():  # beside a clone in CI; a clone without it skips the few tests that read it
    os.environ.setdefault("CURATE_HUB_MIRROR", str(MIRROR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests write their own SQLite stores, never into a user's server
if not shutil.which("bwrap"):  # `make setup` installs bubblewrap where it can; elsewhere code runs in the weaker
    os.environ.setdefault("CURATE_SANDBOX", "process")  # executor, and tests/test_sandbox.py skips the boundary tests


@pytest.fixture(autouse=True)
def _tracking_uri_stays_per_test():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; without this a later test's study would log into an
    earlier test's store (seen in CI, where test order put the math smoke test after one that set it)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def _corpus() -> list[str]:
    from tasks import tasktypes

    lines = [t for name in tasktypes.names() for t in (tasktypes.get(name).prompt_template,
                                                       tasktypes.get(name).completion_template)]
    for f in FIXTURES.glob("*.jsonl"):
        lines += [json.dumps(json.loads(line)) for line in f.read_text().splitlines()]
    return lines + ["negative positive World Sports Business"] * 5


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama (hidden 48) with a byte-level BPE tokenizer; saved as a normal model folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=600, special_tokens=["<|eos|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>", pad_token="<|eos|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


SHOTS = Path(os.environ.get("CURATE_TEST_OUTPUT", Path(__file__).parent / "output"))  # browser tests' screenshots


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):  # the test set-up installs Debian's chromium
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, capture_output=True, timeout=600).returncode:  # a new machine: no package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            subprocess.run(install, capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("no Chromium: `apt-get install chromium` (Debian) was not possible here")
    return found


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    path = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


def write_catalog(folder: Path, entries: dict[str, dict]) -> Path:
    """Catalog YAML files in a temp folder (absolute paths to fixture data)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    for name, fields in entries.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **fields}))
    return folder


def sentiment_entry(file: str, **extra) -> dict:
    return {"task": "classification", "license": "CC0-1.0", "path": str(FIXTURES / file),
            "columns": {"text": "sentence"}, "label_names": ["negative", "positive"], **extra}


def sentiment_study(tmp_path: Path, model_dir: Path, candidates: list[str], **overrides) -> dict:
    """A small valid study dict over the fixture files; tests change one thing to make it bad."""
    study = {
        "name": "fixture-study", "task": "classification",
        "base": {"source": str(FIXTURES / "d0.jsonl"), "columns": {"text": "sentence"}, "label_names": ["negative", "positive"]},
        "benchmark": {"data": {"source": str(FIXTURES / "benchmark.jsonl"), "columns": {"text": "sentence"},
                               "label_names": ["negative", "positive"]}},
        "model": {"source": str(model_dir)}, "candidates": candidates,
        "mixture": {"sizes": [16, 32], "d0_share": 0.5}, "target_size": 512, "seed": 0,
        "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "max_length": 48, "eval_batch_size": 20,
                     "lora": {"r": 4, "alpha": 8}},
        "output_dir": str(tmp_path / "out"), "catalog_dir": str(tmp_path / "catalog"), "concurrency": 2,
    }
    study.update(overrides)
    return study


def write_study(tmp_path: Path, study: dict, name: str = "study.yaml") -> Path:
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def run_tree(runs) -> tuple[list, list, list]:
    """MLflow runs of one experiment as (study runs, arm runs, point runs), by parent tag."""
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    studies = [r for r in runs if parent[r.info.run_id] is None]
    arms = [r for r in runs if parent[r.info.run_id] in {s.info.run_id for s in studies}]
    points = [r for r in runs if parent[r.info.run_id] in {a.info.run_id for a in arms}]
    return studies, arms, points


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory, tiny_model, prefect_harness):
    """`curate run` on the tiny model: a clean, a label-flipped and a leaky candidate plus the control, 3 sizes x 2
    seeds (tests/test_integration.py checks it; test_outputs.py reads it back through the Hub and MLflow UIs)."""
    from typer.testing import CliRunner

    from cli.main import app

    tmp = tmp_path_factory.mktemp("e2e")
    leaky = tmp / "leaky.jsonl"  # clean rows plus 10 copies of benchmark items
    bench = (FIXTURES / "benchmark.jsonl").read_text().splitlines(True)
    leaky.write_text("".join((FIXTURES / "candidate_clean.jsonl").read_text().splitlines(True)[120:] + bench[:10]))
    write_catalog(tmp / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl"),
                                    "flipped": sentiment_entry("candidate_flipped.jsonl"),
                                    "copy": {**sentiment_entry("x"), "path": str(leaky)}})
    study = sentiment_study(tmp, tiny_model, ["clean", "flipped", "copy"], seeds=2, mixture={"sizes": [16, 32, 64]},
                            ranking={"bootstrap": 200}, primary_metric="gold_logprob")
    path = write_study(tmp, study)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    uri = f"sqlite:///{tmp / 'out' / 'mlflow.db'}"
    return tmp, uri, result.output


def study_runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fixture-study")
    return client, client.search_runs([exp.experiment_id], max_results=1000)
