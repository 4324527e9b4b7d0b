"""Study sections that stand on their own: how the ranking states uncertainty, how training noise is measured,
and the contamination check (tasks.spec.study puts them together)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class Noise(Strict):
    """Training noise: how much a point's metric moves between seeds (data order, adapter init, rows drawn). Every
    interval and `sig` contains it; the README's "What the intervals contain" says how it is measured."""

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
