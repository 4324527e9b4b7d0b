"""Quality gates: thresholds an arm must meet to be chosen, e.g. `safety_rate >= 0.9` (absolute) or
`pass_at_1 >= control - 0.02` (relative to the control arm). The ranking marks each arm per gate — pass or fail on
its estimate, and the interval's verdict (passes: the whole interval meets it; fails: the whole interval misses it;
undecided) — and ranks every arm that fails a gate below all arms that pass. Plain functions over rankings."""

import operator
import re
from dataclasses import dataclass

from tasks.common import is_placebo

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
GATE = re.compile(r"^\s*(?P<metric>[A-Za-z][\w@]*)\s*(?P<op>>=|<=|>|<)\s*(?P<rhs>.+?)\s*$")
RELATIVE = re.compile(r"^control\s*(?:(?P<sign>[+-])\s*(?P<offset>[0-9.eE+-]+))?$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float  # the number, or the offset from the control's value when relative
    relative: bool

    @property
    def text(self) -> str:
        if not self.relative:
            return f"{self.metric} {self.op} {self.threshold:g}"
        return f"{self.metric} {self.op} control" + (f" {'+' if self.threshold > 0 else '-'} {abs(self.threshold):g}"
                                                      if self.threshold else "")


def metric_name(name: str) -> str:
    """pass@1 is written pass_at_1 in MLflow (metric names cannot hold '@'); both spellings are accepted."""
    return re.sub(r"^pass@(\d+)$", r"pass_at_\1", name)


def parse(text: str) -> Gate:
    """'safety_rate >= 0.9' | 'pass@1 >= control' | 'token_logprob >= control - 0.05' -> Gate; ValueError says why."""
    found = GATE.match(str(text))
    if not found:
        raise ValueError(f"gate '{text}': write METRIC OP VALUE with OP one of >=, >, <=, < and VALUE a number or "
                         f"'control' (+/- a number), e.g. 'safety_rate >= 0.9' or 'pass_at_1 >= control - 0.02'")
    rhs = found["rhs"].strip()
    rel = RELATIVE.match(rhs)
    if rel:
        offset = float(rel["offset"] or 0.0) * (-1 if rel["sign"] == "-" else 1)
        return Gate(metric_name(found["metric"]), found["op"], offset, True)
    try:
        return Gate(metric_name(found["metric"]), found["op"], float(rhs), False)
    except ValueError:
        raise ValueError(f"gate '{text}': '{rhs}' is neither a number nor 'control' (+/- a number)") from None


def judge(gate: Gate, value: float, interval: tuple | None, control: float | None,
          delta_interval: tuple | None) -> dict:
    """One arm against one gate: its value, pass/fail on the estimate, and the interval's verdict."""
    if gate.relative:
        if control is None:
            return {"gate": gate.text, "value": value, "status": "fail", "verdict": "", "why": "no control arm"}
        compared, iv, bound = value - control, delta_interval, gate.threshold
    else:
        compared, iv, bound = value, interval, gate.threshold
    ok = OPS[gate.op](compared, bound)
    verdict = ""
    if iv is not None:
        lo_ok, hi_ok = OPS[gate.op](iv[0], bound), OPS[gate.op](iv[1], bound)
        verdict = "passes" if lo_ok and hi_ok else "fails" if not lo_ok and not hi_ok else "undecided"
    return {"gate": gate.text, "value": value, "status": "pass" if ok else "fail", "verdict": verdict}


def evaluate(texts: list[str], by_metric: dict, control: str) -> dict[str, list[dict]]:
    """Every arm against every gate. by_metric: metric -> the ranking of that metric (same method as the main one);
    returns arm -> one result per gate, in the study's order."""
    out: dict[str, list[dict]] = {}
    for text in texts:
        gate = parse(text)
        rows = {row.arm: row for row in by_metric[gate.metric].rows}
        base = rows[control].predicted if control in rows else None
        for arm, row in rows.items():
            delta = (0.0, 0.0) if arm == control else row.delta_interval
            out.setdefault(arm, []).append(judge(gate, row.predicted, row.interval, base, delta))
    return out


def apply_gates(r, texts: list[str], results: dict[str, list[dict]]) -> None:
    """Mark every arm with its gate results and move the arms that fail a gate below all arms that pass (each group
    keeps its order); ranks are numbered again."""
    r.gates = list(texts)
    for row in r.rows:
        row.gates = results.get(row.arm, [])
    failing = {row.arm for row in r.gated}
    r.rows = [row for row in r.rows if row.arm not in failing] + [row for row in r.rows if row.arm in failing]
    for i, row in enumerate(row for row in r.rows if not is_placebo(row.arm)):
        row.rank = i + 1
