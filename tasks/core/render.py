"""Every text and table a ranking is shown as: the terminal's table and lines, ranking.csv and ranking.md, the
back-test table, the MLflow descriptions of the study and arm runs, the Prefect artifact and the plot's title. The
numbers come from tasks.core.ranking; nothing here computes one."""

import csv
import io

import numpy as np

from tasks.common import CONTROL, is_placebo
from tasks.core.ranking import Ranking, RankRow


def ranked_at(r: Ranking) -> str:
    """What was ranked, in words, for every surface: 'predicted at 512' or 'observed at 128' (the table's column
    writes it observed@128)."""
    return f"predicted at {r.target}" if r.method == "fit" else f"observed at {max(r.rows[0].observed)}"


def fmt_interval(iv: tuple | None, signed: bool = False) -> str:
    if iv is None:
        return ""
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"[{f.format(iv[0])}, {f.format(iv[1])}]"


def columns(r: Ranking) -> tuple[list[str], list[list[str]]]:
    sizes = sorted({s for row in r.rows for s in row.observed})
    pct = f"{round(r.confidence * 100)}%"
    estimate = ranked_at(r).replace(" at ", "@")  # observed@128
    header = ["rank", "arm", "license", *[f"{r.metric}@{s}" for s in sizes], estimate, f"{pct} interval",
              "delta_vs_control", f"delta {pct} interval", "sig", "mde", "p_best", "contaminated", "removed", "rows",
              "duplicates", "d0_copies", "tokens_p50", "method", *(["gates"] if r.gates else [])]
    body = []
    for row in r.rows:
        prof = row.profile
        how = row.pruned or (("fit " + row.fit.form) if r.method == "fit" else "observed")
        body.append([str(row.rank) if row.rank else "A/A", row.arm, row.license,
                     *[f"{row.observed[s]:.4f}" if s in row.observed else "" for s in sizes],
                     "" if row.pruned else f"{row.predicted:.4f}", fmt_interval(row.interval),
                     "" if row.pruned else f"{row.delta_vs_control:+.4f}",
                     fmt_interval(row.delta_interval, True), row.significance,
                     "" if row.mde is None else f"{row.mde:.4f}",
                     "" if row.p_best is None else f"{row.p_best:.2f}", str(prof.get("contaminated", "")),
                     *(str(prof.get(k, "")) for k in ("removed", "rows", "duplicates", "d0_copies")),
                     str(prof.get("tokens_p50", "")), how + (" (fit unreliable)" if row.note else ""),
                     *([gate_cell(row.gates)] if r.gates else [])])
    return header, body


def to_csv(r: Ranking) -> str:
    header, body = columns(r)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *body])
    return buf.getvalue()


def to_records(r: Ranking) -> list[dict]:
    header, body = columns(r)
    return [dict(zip(header, b)) for b in body]


def to_markdown(r: Ranking, extra: str = "") -> str:
    header, body = columns(r)
    lines = [f"**{r.method_note}.**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    if r.n_boot:
        lines += ["", intervals_note(r)]
    if r.gates:
        lines += ["", gates_note(r)]
    if r.placebo:
        lines += ["", placebo_note(r)]
    if r.per_size:
        lines += ["", "Paired delta vs control at each measured size:", "",
                  "| arm | size | delta | interval | sig |", "|---|---|---|---|---|"]
        lines += [f"| {d['arm']} | {d['size']} | {d['delta']:+.4f} | [{d['lo']:+.4f}, {d['hi']:+.4f}] | {d['significance']} |"
                  for d in r.per_size]
    notes = [f"- {row.arm}: {row.fit.note}" for row in r.rows if row.fit.note]
    notes += [f"- {row.arm}: fit unreliable, {row.note}" for row in r.rows if row.note]
    if notes:
        lines += ["", "Fit notes:", *notes]
    if r.backtest:
        lines += ["", backtest_markdown(r.backtest, r.metric).rstrip()]
    if extra:
        lines += ["", extra.rstrip()]
    return "\n".join(lines) + "\n"


def intervals_note(r: Ranking) -> str:
    """What the intervals contain and what they do not, for this ranking."""
    pct = round(r.confidence * 100)
    text = (f"Intervals: {pct}% percentile bootstrap, {r.n_boot} resamples of the benchmark examples (paired across "
            f"arms)")
    if r.noise:
        n = r.noise
        per = ", ".join(f"{s}: {v['sd']:.4f} ({v['df']} df)" for s, v in n["per_size"].items())
        borrowed = sorted(s for s, m in n["borrow"].items() if s != m)
        text += (f", plus training noise: the seed-to-seed SD of {r.metric} measured from {n['source']} (by size "
                 f"{per}{'; sizes ' + str(borrowed) + ' take the noisier measured neighbour' if borrowed else ''}), added to "
                 f"every point with its own uncertainty (few replicates give wider intervals), every arm refitted on "
                 f"every resample. ")
    else:
        text += (". **No training noise was measured** (one seed per point and no control replicates), so the "
                 "intervals hold benchmark sampling only and no arm is called better or worse (sig '?'); set "
                 "noise.control_replicates: 2 or seeds: 2. ")
    mdes = [row.mde for row in r.rows if row.mde is not None and not is_placebo(row.arm)]
    if mdes:
        text += (f"Minimum detectable effect: {float(np.median(mdes)):.4f} {r.metric} (median over arms; a true delta "
                 f"this large is called significant 80% of the time at {pct}%). ")
    return text + ("sig: + better than the control, - worse, ~ not distinguishable from zero. p_best: share of "
                   "resamples in which the arm ranks first. Not contained: other benchmarks, base models or "
                   "training presets, and errors of the fit form beyond what the back-test shows.")


def placebo_note(r: Ranking) -> str:
    p = r.placebo
    called = f" ({', '.join(p['called'])})" if p["called"] else ""
    return (f"Placebo (A/A) check: {len(p['called'])} of {p['arms']} placebo arm(s) called different from the control"
            f"{called}: false-positive rate {p['rate']:.2f} (nominal {p['nominal']:.2f}); at single sizes "
            f"{p['sizes_called']} of {p['sizes']}. Placebo arms train on more rows of D0 as the 'candidate', so any "
            f"+ or - on them is noise.")


def noise_line(r: Ranking) -> str:
    """One line for the terminal: the training noise the intervals contain and the smallest detectable delta."""
    if not r.n_boot:
        return ""
    if not r.noise:
        return ("sig '?': no training noise measured (one seed, no control replicates); intervals hold benchmark "
                "sampling only, so no arm is called better or worse")
    mdes = [row.mde for row in r.rows if row.mde is not None and not is_placebo(row.arm)]
    mde = f"; smallest detectable delta (80% power) {float(np.median(mdes)):.4f}" if mdes else ""
    per = ", ".join(f"{v['sd']:.4f} at {s}" for s, v in r.noise["per_size"].items())
    return (f"training noise in every interval: seed-to-seed SD of {r.metric} {per} ({r.noise['df']} df, from "
            f"{r.noise['source']}){mde}")


def gate_cell(results: list[dict]) -> str:
    """The table cell: 'pass' or what failed, e.g. 'fail: safety_rate >= 0.9 (0.82, fails)'."""
    failed = [r for r in results if r["status"] == "fail"]
    if not failed:
        undecided = sum(r["verdict"] == "undecided" for r in results)
        return "pass" + (f" ({undecided} undecided)" if undecided else "")
    return "fail: " + "; ".join(f"{r['gate']} ({r['value']:.4f}{', ' + r['verdict'] if r['verdict'] else ''})"
                                for r in failed)


def gates_note(r: Ranking) -> str:
    """What the gates decided, for ranking.md and the Prefect artifact."""
    lines = [f"Quality gates ({'; '.join(r.gates)}): an arm that fails one ranks below every arm that passes; the "
             f"verdict is the {round(r.confidence * 100)}% interval's (passes, fails, undecided)."]
    lines += [f"- {row.arm}: {gate_cell(row.gates)}" for row in r.rows if row.gates and not is_placebo(row.arm)]
    return "\n".join(lines)


def backtest_markdown(result: dict, metric: str) -> str:
    """backtest.md: both methods' scores on the held-out size, each arm's values and the verdict."""
    columns = ("method", "spearman", "kendall_tau", "pairwise_accuracy", "top1_regret", "mean_abs_error")
    head = f"Back-test on {metric}: fit on sizes {result['fitted_on']}, predict held-out size {result['held_out']}\n\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join([r["method"], *[f"{r[c]:.3f}" for c in columns[1:]]]) + " |" for r in result["rows"]]
    arms = ["", "| arm | observed | fit | baseline |", "|---|---|---|---|"]
    arms += [f"| {a} | {v['truth']:.4f} | {v['fit']:.4f} | {v['baseline']:.4f} |" for a, v in result["arms"].items()]
    said = {"fit": "the extrapolation beat the single-scale baseline",
            "observed": "the extrapolation did not beat the single-scale baseline",
            "inconclusive": "inconclusive"}[result["winner"]]
    uses = "fit" if result["winner"] == "fit" else "observed"
    return (head + "\n".join(lines + arms) + f"\n\nVerdict: {said} ({result['reason']}); the ranking uses "
            f"'{uses}'.\n")


def verdict(result: Ranking) -> str:
    """One line: a winner only when it is distinguishable from the control at the study's confidence; otherwise
    the leader, with what was ranked (observed or predicted, at which size), its delta and interval."""
    real = [r for r in result.rows if not is_placebo(r.arm) and not r.pruned]
    best = next((r for r in real if r.arm != CONTROL), None)
    if best is None:
        return f"Only the control finished ({result.metric} {ranked_at(result)})."
    pct = f"{round(result.confidence * 100)} %"
    iv = f" {fmt_interval(best.delta_interval, True)}" if best.delta_interval else ""
    facts = (f"{result.metric} {ranked_at(result)} {best.predicted:.4g}, delta vs control "
             f"{best.delta_vs_control:+.4g}{iv}")
    if best.significance == "+":
        return f"**Best candidate: {best.arm}**, better than the control at {pct}: {facts}."
    if best.significance == "-":
        return f"**No candidate beats the control**: the leader, {best.arm}, is worse at {pct}: {facts}."
    if best.significance == "~":
        return f"**No candidate is distinguishable from the control at {pct}**; leader {best.arm}: {facts}."
    return f"**Leader: {best.arm}** (significance unknown: no training-noise measurement): {facts}."


def arm_description(result: Ranking, row: RankRow) -> str:
    """An arm run's one-line description in MLflow: its rank and what was ranked, or where it was pruned."""
    line = row.pruned or (f"{result.metric} {ranked_at(result)} {row.predicted:.4g}; delta vs control "
                          f"{row.delta_vs_control:+.4f} {fmt_interval(row.delta_interval, True)} "
                          f"{row.significance}".rstrip())
    return f"rank {row.rank or 'A/A'} of {len(result.rows)}: {line}"


def run_name(row: RankRow) -> str:
    """'1. sst2-extra': the rank leads the MLflow runs table (which orders metric columns by name) and every chart
    legend; a placebo keeps its name."""
    return f"{row.rank}. {row.arm}" if row.rank else row.arm


def plot_title(result: Ranking) -> str:
    import textwrap

    note = "\n".join(textwrap.wrap(result.method_note, 110))  # a long note wider than the figure was cut off
    return (f"ranked: {result.metric} {ranked_at(result)}; bars/bands: {round(result.confidence * 100)}% bootstrap; "
            f"dotted: target {result.target}\n{note}")


def plot_label(row: RankRow) -> str:
    if row.pruned:
        return f"{row.arm} ({row.pruned.split(':')[0]})"
    return f"{row.arm} ({row.predicted:.3f}" + (f", p_best {row.p_best:.2f})" if row.p_best is not None else ")")


def agreement_note(agree: dict | None) -> str:
    if not agree:
        return ""
    if agree["all_tied"]:
        return f"Agreement with the ranking on {agree['metric']}: none to measure, every arm scored the same on it."
    return (f"Agreement with the ranking on {agree['metric']}: Kendall tau {agree['kendall_tau']:+.2f}, "
            f"{'same' if agree['same_best'] else 'different'} best arm (order: {', '.join(agree['order'])}).")


def judge_note(metric: str, missing: int, answers: int, unparsable_score: float) -> str:
    return (f"Judge ({metric}): {missing} of {answers} answers had no verdict word (scored {unparsable_score:g}, "
            f"never dropped).")


def pruned_note(pruned: dict[str, dict]) -> str:
    return (f"Successive halving after size {min(i['size'] for i in pruned.values())}: {len(pruned)} arm(s) pruned "
            f"({', '.join(sorted(pruned))}), ranked last.")
