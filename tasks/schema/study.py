"""The study: one YAML file, one validated `Study` model, its sections defined by concept beside it (sources,
evaluation, design, training). Every field says what it means."""

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tasks import tasktypes
from tasks.schema.base import Strict, check_task, task_field
from tasks.schema.design import Mixture, Noise, Ranking
from tasks.schema.evaluation import Benchmark, Contamination, Execution, FewShot, Judge, check_generation
from tasks.schema.sources import DataRef, ModelRef
from tasks.schema.training import Training
from tasks.schema.yamlfile import load_model_file


class Study(Strict):
    """One question: which candidate, mixed into D0, helps most at the target size."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Study name; the MLflow experiment.")
    preset: Literal["quick", "standard", "thorough"] | None = Field(None, description="A named bundle of sizes, "
                                                                  "seeds, epochs, LoRA rank, few-shot k, generation "
                                                                  "length and benchmark sample (docs/study-file.md); the study's "
                                                                  "own values win, field by field.")
    task: str = task_field("Task type: one of the registered task types (`curate tasks` lists them).")
    base: DataRef = Field(description="D0, your own labelled data.")
    benchmark: Benchmark = Field(description="What every point is evaluated on.")
    model: ModelRef = Field(description="The base model.")
    metrics: list[str] | None = Field(None, description="Metrics to log; default: all of the task's metrics.")
    primary_metric: str | None = Field(None, description="Metric the ranking uses; default: the task type's primary "
                                       "metric (accuracy for classification, f1 for extractive_qa).")
    candidates: list[str] = Field(description="Catalog entry names to try (the control arm always runs).")
    mixture: Mixture = Field(description="Mixture sizes and D0 share.")
    target_size: int = Field(gt=0, description="The training size you plan to use: the ranking predicts here.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed for the benchmark hold-out, the D0 rows of each mixture, and the "
                      "first seed of every point.")
    seeds: int = Field(1, ge=1, le=20, description="Seeds per point (seed, seed+1, ...): each varies data order, "
                       "adapter init and the rows drawn from the candidate, and is its own MLflow point run.")
    training: Training = Field(default_factory=Training, description="Training preset.")
    output_dir: str = Field("runs/{name}", description="Where mixtures, adapters and the embedded MLflow store go. "
                            "'{name}' is replaced by the study name.")
    catalog_dir: str = Field("catalog", description="Folder of catalog entry YAML files.")
    concurrency: int = Field(1, gt=0, description="In-process: points trained at once, one worker process each, "
                             "shared by every arm's points (largest first). On a work pool: arm flow runs in flight "
                             "(this study's cap; the pool's limit still applies), each training its points this many "
                             "at once.")
    work_pool: str | None = Field(None, description="Prefect work pool whose 'evaluate-arm' deployment runs the arms "
                                  "(see deployments/prefect.yaml). Empty: $CURATE_WORK_POOL, else arms run in-process.")
    ranking: Ranking = Field(default_factory=Ranking, description="Intervals, fit form and ranking method.")
    contamination: Contamination = Field(default_factory=Contamination, description="Benchmark leak check.")
    noise: Noise = Field(default_factory=Noise, description="Training-noise measurement and the placebo (A/A) check.")
    fewshot: FewShot = Field(default_factory=FewShot, description="Few-shot exemplars in every benchmark prompt.")
    allow_code_execution: bool = Field(False, validate_default=True, description="Task type code: run the model's code against the tests "
                                       "(in a sandbox: separate process, limits, no network). Off unless you say so.")
    execution: Execution = Field(default_factory=Execution, validate_default=True, description="Samples, pass@k and sandbox limits (code).")
    judge: Judge | None = Field(None, description="A judge model that scores each generation (e.g. SAFE/UNSAFE -> "
                                "safety_rate), logged as one more metric.")
    gates: list[str] = Field(default_factory=list, description="Thresholds an arm must meet, e.g. 'safety_rate >= "
                             "0.9' or 'pass_at_1 >= control - 0.02'; arms failing one rank below all that pass.")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data):
        from tasks.schema.presets import apply

        return apply(data)

    # field validators (not one model validator) so these are reported together with every other field error
    @field_validator("task")
    @classmethod
    def _task(cls, name: str) -> str:
        return check_task(name)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[str] | None, info: ValidationInfo):
        valid = _metrics_of(info.data.get("task"))
        bad = [m for m in metrics or [] if valid and m not in valid]
        if bad:
            raise ValueError(f"unknown metric {', '.join(map(repr, bad))} for task {info.data['task']}; valid: {', '.join(valid)}")
        return metrics

    @field_validator("primary_metric")
    @classmethod
    def _primary(cls, metric: str | None, info: ValidationInfo):
        valid = _metrics_of(info.data.get("task"))
        if metric and valid and metric not in valid:
            raise ValueError(f"'{metric}' is not a {info.data['task']} metric; valid: {', '.join(valid)}")
        return metric

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, names: list[str]):
        if not names:
            raise ValueError("list at least one catalog entry (the control arm runs anyway)")
        if len(set(names)) != len(names):
            raise ValueError("a candidate is listed twice")
        return names

    @property
    def primary(self) -> str:
        return self.primary_metric or tasktypes.get(self.task).primary

    @property
    def metric_names(self) -> list[str]:
        """The metrics logged on every point: the study's (or the task's default ones), its primary, the judge's
        and every gated one."""
        from tasks.core.gates import parse

        kind = tasktypes.get(self.task)
        names = list(self.metrics or [m for m in kind.metrics if m not in kind.optional])
        names = names if self.primary in names else [self.primary, *names]
        return list(dict.fromkeys([*names, *([self.judge.metric] if self.judge else []),
                                   *(parse(g).metric for g in self.gates)]))

    # code execution, pass@k against the samples, the judge and the gates: field validators, so each error names its
    # field and line; each reads the fields declared before it (info.data)
    @field_validator("allow_code_execution", "execution", "judge", "gates")
    @classmethod
    def _generation(cls, value, info: ValidationInfo):
        return check_generation(info.field_name, value, info.data)

    @model_validator(mode="after")
    def _method(self):
        wanted, task = self.training.method, tasktypes.get(self.task)
        if wanted not in ("auto", task.method):
            hint = ("set task: preference (rows with prompt/chosen/rejected)" if wanted == "dpo" else
                    f"task {self.task} trains with {task.method}; drop training.method or set it to {task.method}")
            raise ValueError(f"training.method: {wanted} does not fit task {self.task}: {hint}")
        return self

    @model_validator(mode="after")
    def _sizes(self):
        largest = max(self.mixture.sizes)
        if self.target_size < largest:
            raise ValueError(f"target_size {self.target_size} is below the largest mixture size {largest}: the ranking "
                             f"predicts at the size you plan to train at; set target_size: {largest} or more")
        if self.training.step_batch > largest:
            raise ValueError(f"training.batch_size x gradient_accumulation_steps = {self.training.step_batch} is larger "
                             f"than the largest mixture ({largest} rows): no point could fill one optimizer step; use "
                             f"at most {largest}")
        return self

    @model_validator(mode="after")
    def _noise(self):
        sizes = self.noise.replicate_sizes
        if sizes and not set(sizes) <= set(self.mixture.sizes):
            raise ValueError(f"noise.replicate_sizes {sizes} must be mixture sizes {self.mixture.sizes}")
        if (self.ranking.prune_after or 0) >= len(self.mixture.sizes):
            raise ValueError(f"ranking.prune_after {self.ranking.prune_after} must be below the number of sizes "
                             f"({len(self.mixture.sizes)}): pruning decides before the larger sizes")
        if self.benchmark.data is not None and self.benchmark.data.label_noise:
            raise ValueError("benchmark.data.label_noise: noise is for training data (base) only; a benchmark must "
                             "keep its true labels")
        return self

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    def point_seeds(self, arm: str, size: int) -> list[int]:
        """The seeds of one (arm, size): the study's seeds, plus the control replicates where they run."""
        from tasks.common import CONTROL

        extra = self.noise.control_replicates if self.seeds == 1 and arm == CONTROL else 0
        if extra and size in (self.noise.replicate_sizes or {self.mixture.sizes[0], self.mixture.sizes[-1]}):
            return [self.seed + i for i in range(1 + extra)]
        return self.seed_list

    def arm_points(self, arm: str) -> list[tuple[int, int]]:
        """(size, seed) of every point of an arm, in the order they run."""
        return [(size, seed) for size in self.mixture.sizes for seed in self.point_seeds(arm, size)]

    @property
    def pool(self) -> str | None:
        import os
        return self.work_pool or os.environ.get("CURATE_WORK_POOL") or None

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir.replace("{name}", self.name)).resolve()


def _metrics_of(task: str | None) -> tuple[str, ...]:
    return tasktypes.get(task).metrics if task in tasktypes.names() else ()


def load_study(path: str | Path, overrides: dict[str, tuple] | None = None, smoke: bool = False) -> Study:
    """Read and validate a study YAML file; all problems are reported at once with their lines. Relative paths in
    it are relative to its folder (tasks.schema.paths). overrides: dotted field -> (value, the command-line option
    that set it); smoke: the --smoke reduction (tasks.schema.presets.smoke). Both are merged into the file's values
    before validation, so a value no study file could hold is refused the same way."""
    from tasks.schema.paths import anchor_study
    from tasks.schema.presets import smoke as reduced

    path, overrides = Path(path), dict(overrides or {})
    if smoke:
        study = anchor_study(load_model_file(Study, path, overrides), path.parent)
        overrides.update({k: (v, "--smoke") for k, v in reduced(study).items()})
    return anchor_study(load_model_file(Study, path, overrides), path.parent)
