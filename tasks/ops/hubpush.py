"""Results on the Hugging Face Hub: `curate push RUN_ID --repo ORG/NAME` commits a study's ranking, scaling plot,
fits, per-point metrics and a dataset card to a private dataset repository (one commit per push: the repository's
history is the study's versions), and optionally each arm's adapter to a private model repository;
`curate push-data STUDY.yaml --repo ORG/NAME` uploads a study's local D0 to a private dataset repository so that
workers on a cluster read it from the Hub. Read from MLflow only. The token comes from $HF_TOKEN and is never
printed or logged; $HF_ENDPOINT points at another Hub (the tests use a local stand-in, tests/hub_standin.py)."""

import csv
import os
import shutil
import tempfile
from pathlib import Path

from tasks.backends import tracking
from tasks.errors import WorkbenchError

RESULTS = ("ranking.md", "ranking.csv", "scaling.png", "fits.json", "backtest.md", "study.resolved.json")


def _api(endpoint: str | None = None):
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise WorkbenchError("HF_HUB_OFFLINE is set: unset it to push to the Hub (`env -u HF_HUB_OFFLINE curate push ...`)")
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise WorkbenchError("no Hub token: set HF_TOKEN in the environment to a token with write access to the "
                             "repository's owner (tokens are read from the environment only, never from arguments)")
    return HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)


def _hub_error(err: Exception, repo: str) -> WorkbenchError:
    text = str(err).replace(os.environ.get("HF_TOKEN", "\0"), "***")  # never echo the token
    return WorkbenchError(f"Hub: {repo}: {type(err).__name__}: {text.splitlines()[0] if text else ''}"[:600])


def _card(study, run, ranking_md: str, points: int) -> str:
    return (f"---\npretty_name: {study.name} (curation-workbench results)\ntags: [curation-workbench]\n---\n# {study.name}: which candidate data helps "
            f"{study.model.source}\n\nStudy run `{run.info.run_id}` ({points} points; task {study.task}, target size "
            f"{study.target_size}). Files: `ranking.md`/`ranking.csv` (the answer), `scaling.png`, `fits.json`, "
            f"`points.csv` (every point's metrics), `study.resolved.json` (the study as run).\n\n{ranking_md}")


def _points_csv(points: list[dict], path: Path) -> None:
    names = sorted({k for p in points for k in p["metrics"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "size", "seed", "run_id", *names])
        for p in sorted(points, key=lambda p: (p["arm"], p["size"], p["seed"])):
            w.writerow([p["arm"], p["size"], p["seed"], p["run_id"], *(p["metrics"].get(n, "") for n in names)])


def push(uri: str, study_run_id: str, repo: str, adapters_repo: str | None = None, endpoint: str | None = None) -> dict:
    """Commit the study's results (and, with adapters_repo, each arm's largest-size adapter) to private repos."""
    api = _api(endpoint)
    data = tracking.read_study(uri, study_run_id, examples=False)
    study, run = data["study"], data["run"]
    if not data["points"]:
        raise WorkbenchError(f"study run {study_run_id} has no finished points to push")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "results"
        folder.mkdir()
        for name in RESULTS:
            try:
                tracking.download(uri, f"runs:/{study_run_id}/{name}", folder)
            except (tracking.StoreError, OSError):
                if name in ("ranking.md", "ranking.csv"):
                    raise WorkbenchError(f"study run {study_run_id} has no {name}: rank it first (curate rank)") from None
        _points_csv(data["points"], folder / "points.csv")
        (folder / "README.md").write_text(_card(study, run, (folder / "ranking.md").read_text(), len(data["points"])))
        message = f"{study.name}: study run {study_run_id[:8]} ({len(data['points'])} points)"
        try:
            api.create_repo(repo, repo_type="dataset", private=True, exist_ok=True)
            done = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset", commit_message=message)
            out = {"repo": repo, "commit": done.oid, "url": done.commit_url, "files": sorted(os.listdir(folder))}
            if adapters_repo:
                out["adapters"] = _push_adapters(api, uri, data, adapters_repo, Path(tmp) / "adapters", message)
        except Exception as err:  # huggingface_hub raises many HTTP error types; say which repo and why
            if isinstance(err, WorkbenchError):
                raise
            raise _hub_error(err, repo) from None
    return out


def _push_adapters(api, uri: str, data: dict, repo: str, folder: Path, message: str) -> dict:
    """Each arm's adapter at its largest size (first seed), as ARM/sizeN-seedS/ in one private model repo."""
    chosen = {}
    for p in sorted(data["points"], key=lambda p: (p["size"], -p["seed"])):
        chosen[p["arm"]] = p  # the last kept: the largest size, the first seed
    for arm, p in chosen.items():
        target = folder / arm / f"size{p['size']}-seed{p['seed']}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tracking.download(uri, p["adapter"], folder / ".dl" / arm)), target)
    shutil.rmtree(folder / ".dl", ignore_errors=True)
    api.create_repo(repo, repo_type="model", private=True, exist_ok=True)
    done = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model", commit_message=message)
    return {"repo": repo, "commit": done.oid, "arms": sorted(chosen)}


def push_data(path: Path, repo: str, endpoint: str | None = None) -> dict:
    """A local D0 file to a private dataset repository as data/<name>; returns the DataRef to put in the study."""
    if not path.is_file():
        raise WorkbenchError(f"{path}: not a file (push-data uploads the study's local base.source file)")
    api = _api(endpoint)
    try:
        api.create_repo(repo, repo_type="dataset", private=True, exist_ok=True)
        done = api.upload_file(path_or_fileobj=str(path), path_in_repo=f"data/train{path.suffix}", repo_id=repo,
                               repo_type="dataset", commit_message=f"D0 from {path.name}")
    except Exception as err:
        raise _hub_error(err, repo) from None
    return {"repo": repo, "commit": done.oid, "source": repo, "split": "train"}
