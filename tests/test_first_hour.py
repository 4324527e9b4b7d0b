"""A user's first hour (issue 26): --json and the exit codes, a study run from another directory, a typo answered
before torch loads, no folded lines in a pipe, and datasets from the Hub — the real `datasets` code path against
the local stand-in (tests/hub_standin.py) — with no mirror; a wrong mirror is an error; offline is not retried."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli.main import app
from conftest import FIXTURES, ROOT, sentiment_entry, sentiment_study, write_catalog, write_study


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_json_documents_and_exit_codes(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_catalog(tmp_path / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    study = write_study(tmp_path, sentiment_study(tmp_path, tiny_model, ["clean"]))
    ok = _invoke("validate", study, "--json")
    doc = json.loads(ok.output)  # the output is one JSON document and nothing else
    assert ok.exit_code == 0 and doc["ok"] and doc["points"] == 10 and [a["name"] for a in doc["arms"]] == ["control", "clean"]
    plan = _invoke("plan", study, "--json")
    totals = json.loads(plan.output)["totals"]
    assert plan.exit_code == 0 and totals["points"] == doc["points"] and json.loads(plan.output)["model"]["params"] > 0

    bad = write_study(tmp_path, {**sentiment_study(tmp_path, tiny_model, ["clean"]), "seeds": 1.5}, "bad.yaml")
    invalid = _invoke("validate", bad, "--json")
    err = json.loads(invalid.output)
    assert invalid.exit_code == 2 and not err["ok"] and err["problems"][0].startswith(f"{bad}:") and "seeds" in err["problems"][0]
    never = _invoke("status", study, "--json")
    assert never.exit_code == 1 and not json.loads(never.output)["ok"]
    missing_store = _invoke("rank", "abc", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--json")
    assert missing_store.exit_code == 2 and "no MLflow store at" in json.loads(missing_store.output)["error"]
    assert _invoke("validate", bad).exit_code == 2 and "{" not in _invoke("validate", bad).output  # text again
    for flag in ("0", "-2", "1.5"):  # an override is checked like the study's own field, before anything is written
        zero = _invoke("run", study, "--concurrency", flag, "--yes")
        assert zero.exit_code == 2 and "--concurrency" in zero.output and not (tmp_path / "out").exists(), zero.output


def test_status_and_rank_json_of_a_finished_study(finished_study):
    tmp, uri, _ = finished_study
    status = _invoke("status", "fixture-study", "--tracking-uri", uri, "--json")
    doc = json.loads(status.output)
    assert status.exit_code == 0 and doc["studies"][0]["study"] == "fixture-study"
    run_id = doc["studies"][0]["run_id"]
    assert all(p["state"].startswith("completed") for p in doc["studies"][0]["points"])  # trained or reused
    ranked = _invoke("rank", run_id, "--tracking-uri", uri, "--out", tmp / "re-rank", "--json")
    rows = json.loads(ranked.output)["rows"]
    assert ranked.exit_code == 0 and rows[0]["rank"] == "1" and {r["arm"] for r in rows} == {"control", "clean", "flipped", "copy"}


def test_relative_paths_are_relative_to_the_study_file(tmp_path, tiny_model, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir()
    for name in ("d0.jsonl", "benchmark.jsonl", "candidate_clean.jsonl"):
        (project / "data" / name).write_text((FIXTURES / name).read_text())
    write_catalog(project / "catalog", {"clean": {**sentiment_entry("x"), "path": "../data/candidate_clean.jsonl"}})
    study = sentiment_study(project, tiny_model, ["clean"], output_dir="runs/{name}", catalog_dir="catalog")
    study["base"]["source"], study["benchmark"]["data"]["source"] = "data/d0.jsonl", "data/benchmark.jsonl"
    path = write_study(project, study)
    monkeypatch.chdir(elsewhere)
    result = _invoke("validate", os.path.relpath(path, elsewhere), "--json")
    assert result.exit_code == 0, result.output
    assert {a["name"]: a["rows"] for a in json.loads(result.output)["arms"]} == {"control": 120, "clean": 240}
    from tasks.schema.study import load_study

    assert load_study(path).output_path == project / "runs" / "fixture-study"  # not under the working directory
    never = _invoke("status", path)
    assert never.exit_code == 1 and str(project / "runs" / "fixture-study" / "mlflow.db") in " ".join(never.output.split())
    assert list(elsewhere.iterdir()) == []


def test_a_typo_is_answered_before_torch_loads(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: x\ntask: classification\nbaes: {source: a.jsonl}\n")
    code = ("import sys; from typer.testing import CliRunner; from cli.main import app; "
            f"r = CliRunner().invoke(app, ['validate', {str(path)!r}]); "
            "print(r.exit_code, 'torch' in sys.modules, 'datasets' in sys.modules); print(r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout
    assert out.startswith("2 False False"), out
    assert f"{path}:3: baes: unknown key; did you mean 'base'?" in out


def test_no_folded_lines_when_not_a_terminal(tmp_path, tiny_model):
    deep = tmp_path / ("a-long-folder-name-" * 12) / "s"
    write_catalog(deep / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    path = write_study(deep, sentiment_study(deep, tiny_model, ["clean"]))
    out = subprocess.run([sys.executable, "-m", "cli.main", "validate", str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env={**os.environ, "COLUMNS": "80"}).stdout
    assert len(str(path)) > 250 and any(line.startswith("OK ") and str(path) in line for line in out.splitlines()), out


def test_a_mirror_that_does_not_exist_is_an_error_naming_it(monkeypatch, tmp_path):
    from tasks.backends.data import load_split
    from tasks.errors import DataError
    from tasks.schema.sources import DataRef

    monkeypatch.setenv("CURATE_HUB_MIRROR", str(tmp_path / "no-such-mirror"))
    with pytest.raises(DataError, match=f"CURATE_HUB_MIRROR={tmp_path / 'no-such-mirror'}: no such folder"):
        load_split(DataRef(source="stanfordnlp/sst2"))


def test_offline_mode_is_never_retried(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    from tasks.backends import data

    assert not data.transient(OfflineModeIsEnabled("offline")) and not data.transient(LocalEntryNotFoundError("x"))
    wrapped = ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)")
    wrapped.__cause__ = LocalEntryNotFoundError("not cached")
    assert not data.transient(wrapped) and data.transient(ConnectionError("reset by peer"))
    calls = []
    monkeypatch.delenv("CURATE_HUB_MIRROR", raising=False)
    monkeypatch.setattr(data.datasets, "load_dataset", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(wrapped))
    with pytest.raises(data.DataError, match="HF_HUB_OFFLINE is set"):
        data.load_split(data.DataRef(source="org/not-here"))
    assert len(calls) == 1  # once: no retries of ours on top of huggingface_hub's


def test_hub_ids_load_through_the_hub_stand_in_without_a_mirror(tmp_path, tiny_model):
    """The real huggingface_hub + datasets code path: a study whose D0, benchmark and candidate are Hub ids, served
    by the stand-in over HTTP; no mirror, not offline, an empty HF_HOME."""
    from hub_standin import HubStandIn

    hub = tmp_path / "hub"
    (hub / "acme__reviews").mkdir(parents=True)
    for split, name in (("train", "d0.jsonl"), ("validation", "benchmark.jsonl"), ("test", "candidate_clean.jsonl")):
        (hub / "acme__reviews" / f"{split}.jsonl").write_text((FIXTURES / name).read_text())
    entry = {**sentiment_entry("x"), "hub_id": "acme/reviews", "split": "test[:100]"}
    del entry["path"]
    write_catalog(tmp_path / "catalog", {"more": entry})
    study = sentiment_study(tmp_path, tiny_model, ["more"])
    study["base"]["source"] = "acme/reviews"
    study["benchmark"]["data"].update(source="acme/reviews", split="validation")
    path = write_study(tmp_path, study)
    env = {k: v for k, v in os.environ.items() if k not in ("CURATE_HUB_MIRROR", "HF_HUB_OFFLINE")}
    with HubStandIn(datasets=hub) as server:
        env.update(HF_ENDPOINT=server.endpoint, HF_HOME=str(tmp_path / "hf"))
        done = subprocess.run([sys.executable, "-m", "cli.main", "validate", str(path), "--json"], capture_output=True,
                              text=True, cwd=ROOT, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {a["name"]: a["rows"] for a in json.loads(done.stdout)["arms"]} == {"control": 120, "more": 100}
    assert (tmp_path / "hf" / "hub").is_dir() or any((tmp_path / "hf").rglob("*.jsonl"))  # it was downloaded


def test_the_makefile_uses_the_mirror_only_when_it_exists(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in ("CURATE_HUB_MIRROR", "HF_HUB_OFFLINE", "MIRROR")}

    def exported(*args: str) -> subprocess.CompletedProcess:  # what a recipe of the Makefile sees
        return subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), *args, "--eval",
                               'show: ; @echo "$$CURATE_HUB_MIRROR|$$HF_HUB_OFFLINE"', "show"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=60, env=clean)
    (tmp_path / "mirror").mkdir()
    assert exported(f"MIRROR={tmp_path / 'mirror'}").stdout.strip() == f"{tmp_path / 'mirror'}|1"
    assert exported().stdout.strip() == "|"  # no ../shared/datasets beside: the Hub (or $HF_ENDPOINT), online
    wrong = exported(f"MIRROR={tmp_path / 'absent'}")  # asked for by name: an error naming it
    assert wrong.returncode != 0 and f"MIRROR={tmp_path / 'absent'}: no such folder" in wrong.stderr


def test_the_temporary_prefect_server_starts_in_the_background_and_leaves_nothing_behind(tmp_path):
    """`curate run` starts the temporary Prefect server (and on a first run its database) while the plan is
    computed. After the background start the server answers, the flow's client finds the same one, and when the
    command exits no server process is left."""
    code = ("from cli.main import _start_prefect\n"
            "import httpx, os\n"
            "from prefect.server.api.server import SubprocessASGIServer\n"
            "_start_prefect().join()\n"
            "server = SubprocessASGIServer()\n"
            "print('server', server.server_process.pid, httpx.get(server.api_url + '/health').status_code)\n"
            "from prefect.client.orchestration import get_client\n"
            "print('client', str(get_client(sync_client=True).api_url).rstrip('/') == server.api_url.rstrip('/'))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("server ", "client ")))
    pid, status = lines["server"].split()
    assert "first run on this machine" in done.stdout and status == "200" and lines["client"] == "True"
    assert (tmp_path / "prefect" / "prefect.db").exists()
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
