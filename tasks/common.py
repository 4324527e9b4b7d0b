"""Names and helpers every layer shares, defined once."""

import functools
import hashlib
import json
import os
from pathlib import Path

CONTROL = "control"  # the D0-only arm; always runs, and no catalog entry may take its name
PLACEBO = "placebo-"  # prefix of the A/A arms (more rows of D0 as the 'candidate'); reserved like CONTROL
LOG_FILE_ENV = "CURATE_LOG_FILE"  # the study's log file: set by the CLI, read by every worker process


def is_placebo(arm: str) -> bool:
    return arm.startswith(PLACEBO)


def cache_dir() -> Path:
    """Converted models and unzipped data: $CURATE_CACHE, else ~/.cache/curation-workbench."""
    return Path(os.environ.get("CURATE_CACHE", Path.home() / ".cache" / "curation-workbench"))


def fingerprint(obj) -> str:
    """A short, stable hash of anything JSON can write (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """The package's version (its metadata) plus a hash of the code that decides results (tasks/, flows/): the same
    on a laptop, in an editable install and in a worker image without .git, different after any code change.
    Computed once per process."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("curation-workbench")
    except PackageNotFoundError:
        release = "0"
    root = Path(__file__).resolve().parents[1]
    files = sorted(p for d in ("tasks", "flows") for p in (root / d).rglob("*.py"))
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return f"{release}+src.{digest.hexdigest()[:12]}"
