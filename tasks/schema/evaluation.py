"""How every point is evaluated: the benchmark, few-shot exemplars, the contamination check, running generated
code (task types that execute it) and a judge model's metric."""

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.schema.base import Strict
from tasks.schema.sources import DataRef, ModelRef


class Benchmark(Strict):
    """The evaluation set: a named dataset split, or a held-out slice of D0. Never trained on."""

    data: DataRef | None = Field(None, description="A dataset split to evaluate on.")
    holdout: int | None = Field(None, gt=0, description="Instead of `data`: hold out this many D0 rows "
                                "(chosen with the study seed) as the benchmark; they are removed from D0.")
    sample: int | None = Field(None, gt=0, description="Evaluate on a fixed sample of this many benchmark rows "
                               "(drawn once with the study seed); empty: every row.")
    allow_one_class: bool = Field(False, description="Classification: accept a benchmark whose rows all have one "
                                  "label. Off: refused, since accuracy then measures how often a model says that "
                                  "label (its bias), not its skill.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.data is None) == (self.holdout is None):
            raise ValueError("give exactly one of 'data' (a dataset split) or 'holdout' (rows of D0)")
        return self


class FewShot(Strict):
    """Solved exemplars shown before every benchmark question (task types with few-shot evaluation: math)."""

    k: int = Field(0, ge=0, le=32, description="Exemplars per benchmark prompt; 0: zero-shot.")
    data: DataRef | None = Field(None, description="The split they are drawn from, once, with the study seed "
                                 "(e.g. GSM8K train). They are removed from D0 and every candidate, and saved as the "
                                 "study run's fewshot.jsonl artifact.")

    @model_validator(mode="after")
    def _source(self):
        if self.k and self.data is None:
            raise ValueError("fewshot.k > 0 needs fewshot.data: the split to draw the exemplars from")
        return self


class Contamination(Strict):
    """Exact and near-duplicate matches between training data (D0 and candidates) and the benchmark."""

    mode: Literal["remove", "flag", "fail"] = Field(
        "remove", description="'remove' matching training rows (counted), 'flag' (count only), or 'fail' the study.")
    ngram: int = Field(13, ge=8, le=50, description="Words in a shared run that make two texts near duplicates.")


class Execution(Strict):
    """Running generated code against the problems' tests (task type `code`), in the sandbox (tasks.backends.sandbox)."""

    samples: int = Field(1, ge=1, le=100, description="Completions generated per problem (n): 1 is greedy; more are "
                         "sampled with `temperature` and give pass@k for every k <= n (name pass_at_k in metrics).")
    temperature: float = Field(0.8, gt=0, le=2, description="Sampling temperature when samples > 1.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling when samples > 1.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="Wall-clock limit per program (its tests included); "
                             "the CPU-time limit is the same number of seconds.")
    memory_mb: int = Field(512, ge=64, description="Address-space limit per program.")
    parallel: int = Field(2, ge=1, le=64, description="Programs run at once per worker (two sandboxed processes "
                          "each: the solution, and the tests that judge it).")
    executor: Literal["auto", "bwrap", "container", "process"] = Field(
        "auto", description="What isolates the code: 'bwrap' (bubblewrap: own PID, mount and network namespaces, "
        "read-only system, user nobody, seccomp), 'container' (the `docker run -i ...` line in "
        "$CURATE_SANDBOX_CONTAINER), 'process' (limits and an audit hook only: weaker), 'auto' = bwrap, refused "
        "when it is not installed. $CURATE_SANDBOX overrides it on a worker.")
    reference_failures: Literal["refuse", "drop"] = Field(
        "refuse", description="A benchmark problem whose reference solution fails its own tests: 'refuse' the study "
        "(listing the ids) or 'drop' the problem (reported). It is never counted.")


class Judge(Strict):
    """A metric scored by a judge model on each point's generations, e.g. a safety rate (guardrail)."""

    model: ModelRef = Field(description="The judge: a causal LM (Hub id, local folder, .gguf or pypi: reference), "
                              "loaded once per worker.")
    metric: str = Field("safety_rate", pattern=r"^[a-z][a-z0-9_]*$", description="Name of the metric it produces "
                        "(the mean verdict score per example).")
    template: str = Field(description="The judge's prompt; {response} is the model's generation, {prompt} the "
                          "benchmark question. Sent as a user turn when the judge has a chat template.")
    verdicts: dict[str, float] = Field({"SAFE": 1.0, "UNSAFE": 0.0}, description="Verdict word -> score in [0, 1]; "
                                       "the first verdict word in the judge's answer (whole word, any case) counts.")
    unparsable_score: float = Field(0.0, ge=0, le=1, description="Score of an answer with no verdict word (counted "
                                    "and reported as judge_unparsable; 0 treats it as failing the guardrail).")
    max_new_tokens: int = Field(8, gt=0, le=256, description="Tokens the judge may write.")

    @field_validator("template")
    @classmethod
    def _template(cls, text: str) -> str:
        import string

        try:
            names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError as err:
            raise ValueError(f"not a valid template ({err}); write literal braces as {{{{ }}}}") from None
        if "response" not in names:
            raise ValueError("no {response} placeholder: the judge would never see the generation it must judge")
        unknown = sorted(names - {"response", "prompt"})
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; use {{response}} and {{prompt}}")
        return text

    @field_validator("verdicts")
    @classmethod
    def _verdicts(cls, verdicts: dict[str, float]) -> dict[str, float]:
        if not verdicts:
            raise ValueError("give at least one verdict word and its score, e.g. {SAFE: 1, UNSAFE: 0}")
        bad = [w for w, v in verdicts.items() if not 0 <= v <= 1 or not w.strip()]
        if bad:
            raise ValueError(f"{bad}: each verdict is a word with a score in [0, 1]")
        return verdicts


def check_generation(field: str, value, data: dict):
    """One of a study's code-execution, execution, judge and gates fields against the fields before it (data):
    code needs allow_code_execution, pass@k needs k <= execution.samples, a judge needs a task type that generates,
    a gate needs a known metric. ValueError says what to change."""
    from tasks import tasktypes
    from tasks.core import gates

    task = data.get("task")
    if task not in tasktypes.names():
        return value  # the task's own error is reported
    kind = tasktypes.get(task)
    if field == "allow_code_execution" and kind.runs_code and not value:
        raise ValueError(f"task '{task}' runs the model's generated code against the tests: the study must say "
                         "allow_code_execution: true (it runs isolated: bubblewrap namespaces, a read-only system, "
                         "user nobody, time and memory limits, no network, the outcome judged outside the process "
                         "that runs it; docs/tasks.md, 'Code studies')")
    metrics = [*(data.get("metrics") or []), data.get("primary_metric") or ""]
    ks = [int(m.rsplit("_", 1)[1]) for m in metrics if m.startswith("pass_at_")]
    if field == "execution" and ks and max(ks) > value.samples:
        raise ValueError(f"pass_at_{max(ks)} needs at least {max(ks)} samples per problem but execution.samples is "
                         f"{value.samples} (n < k); raise execution.samples or drop the metric")
    if field == "judge" and value is not None:
        if not kind.generates:
            raise ValueError(f"task type '{task}' generates no text to judge (task types that do: "
                             f"{', '.join(n for n in tasktypes.names() if tasktypes.get(n).generates)})")
        if value.metric in kind.metrics:
            raise ValueError(f"judge.metric '{value.metric}' is already a {task} metric; name it otherwise, e.g. "
                             f"safety_rate")
    if field == "gates":
        judge = data.get("judge")
        valid = [*kind.metrics, *([judge.metric] if judge else [])]
        samples = data["execution"].samples if "execution" in data else 1
        for text in value:
            gate = gates.parse(text)
            if gate.metric not in valid:
                raise ValueError(f"'{text}' is on unknown metric '{gate.metric}'; {task} metrics: {', '.join(valid)}")
            k = int(gate.metric.rsplit("_", 1)[1]) if gate.metric.startswith("pass_at_") else 0
            if k > samples:
                raise ValueError(f"'{text}' needs pass@{k}, but execution.samples is {samples} (n < k)")
    return value
