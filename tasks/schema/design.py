"""The study's design and analysis: how D0 and a candidate are mixed at each size, how training noise is measured,
and how the ranking fits, ranks and states its uncertainty."""

from typing import Literal

from pydantic import Field, field_validator

from tasks.schema.base import Strict


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
