"""Named bundles of study settings (`preset:` in a study) and the smoke-test reduction (`curate run --smoke`).

A preset fills only what the study leaves out: every field stays overridable one by one. docs/study-file.md's table is
this dict, sized for a 135M-parameter model on a CPU (quick) up to a GPU (thorough)."""

import copy

PRESETS: dict[str, dict] = {
    "quick": {"mixture": {"sizes": [32, 64, 128]}, "seeds": 1,
              "training": {"epochs": 1, "lora": {"r": 8, "alpha": 16}, "max_new_tokens": 128},
              "fewshot": {"k": 2}, "benchmark": {"sample": 100}},
    "standard": {"mixture": {"sizes": [64, 128, 256, 512]}, "seeds": 1,
                 "training": {"epochs": 2, "lora": {"r": 16, "alpha": 32}, "max_new_tokens": 256},
                 "fewshot": {"k": 4}, "benchmark": {"sample": 300}},
    "thorough": {"mixture": {"sizes": [128, 256, 512, 1024, 2048]}, "seeds": 3,
                 "training": {"epochs": 3, "lora": {"r": 16, "alpha": 32}, "max_new_tokens": 384},
                 "fewshot": {"k": 8}, "benchmark": {"sample": None}},
}

# --smoke: the whole path (validation, mixtures, training, scoring, MLflow, ranking) on a handful of rows
SMOKE = {"sizes": [8, 16], "benchmark_rows": 8, "max_steps": 2, "max_new_tokens": 16, "fewshot_k": 1}


def apply(data: dict) -> dict:
    """The study's raw fields with its preset's values under them (the study's own values win)."""
    name = data.get("preset") if isinstance(data, dict) else None
    if name not in PRESETS:
        return data  # no preset, or an unknown name the field's own check reports
    bundle = copy.deepcopy(PRESETS[name])
    if not isinstance(data.get("fewshot"), dict) or not data["fewshot"].get("data"):
        bundle.pop("fewshot")  # k exemplars only where the study names a split to draw them from
    if isinstance(data.get("benchmark"), dict) and data["benchmark"].get("holdout") and bundle["benchmark"]["sample"]:
        bundle["benchmark"]["sample"] = min(bundle["benchmark"]["sample"], data["benchmark"]["holdout"])
    return _merge(bundle, data)


def _merge(under: dict, over: dict) -> dict:
    out = dict(under)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def smoke(study) -> dict:
    """The fields that reduce a study to prove the set-up in about a minute (dotted names -> values, merged into the
    study file's own before it is validated): two tiny sizes, 8 benchmark rows, 2 optimizer steps per point, one
    control replicate; its own name and output folder, so no real result is touched."""
    return {"name": f"{study.name}-smoke", "output_dir": study.output_dir.replace("{name}", study.name) + "-smoke",
            "mixture.sizes": SMOKE["sizes"], "benchmark.sample": SMOKE["benchmark_rows"],
            "training.max_steps": SMOKE["max_steps"], "training.max_new_tokens": SMOKE["max_new_tokens"],
            "fewshot.k": min(study.fewshot.k, SMOKE["fewshot_k"]), "seeds": 1, "noise.control_replicates": 1,
            "noise.replicate_sizes": None}


def override(data: dict, dotted: dict) -> dict:
    """data with each 'a.b.c' -> value of `dotted` set in it (sections created where missing)."""
    out = copy.deepcopy(data)
    for name, value in dotted.items():
        *parents, last = name.split(".")
        at = out
        for key in parents:
            if not isinstance(at.setdefault(key, {}), dict):
                break  # the file's own value there is not a section: its error is reported
            at = at[key]
        else:
            at[last] = value
    return out
