"""Code with executed tests (HumanEval/MBPP-style): a prompt (imports, signature, docstring) -> the function body.

Rows: {id, prompt, solution, test, entry_point} (`curate convert humaneval|mbpp` writes them; tasks.core.codeconvert).
Training: prompt -> solution. Scoring: the reference solution's log-probability (`token_logprob` per token, the
continuous metric), and n generated completions per problem (greedy for n = 1, sampled with the study's temperature
otherwise), each cut at the next top-level statement and run with the problem's tests in the sandbox
(tasks.backends.sandbox: the completion in one isolated process, the tests that judge it in another; never in this
process). pass@k is the
unbiased estimator of Chen et al. (2021) per problem, averaged. Each sample's outcome kind (passed, syntax_error,
assertion, timeout, memory, forbidden, crash) is kept per example and counted per point (`exec_<kind>`).

Code runs only when the study says `allow_code_execution: true`. The benchmark's reference solutions are run
against their own tests before any training: a failing one is refused (or dropped, `execution.reference_failures:
drop`) — never counted."""

import logging
from math import comb

import numpy as np

from tasks.core import codeconvert
from tasks.errors import DataError, SandboxUnavailable
from tasks.tasktypes.base import TaskType, fit_pair, rotate

PASS_K = (1, 2, 5, 10)  # the pass@k metrics a study can name (k <= execution.samples)
STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#", "\n```"]  # a new top-level statement


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from n samples of which c passed: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def cut(completion: str) -> str:
    """The completion up to the first new top-level statement (the function body ends there)."""
    end = min((i for i in (completion.find(s) for s in STOP) if i >= 0), default=len(completion))
    return completion[:end].rstrip()


class Code(TaskType):
    name = "code"
    generates = True
    runs_code = True
    fields = ("prompt", "solution")
    optional_fields = ("id", "test", "entry_point")  # the benchmark needs test (and ids name the problems)
    metrics = (*(f"pass_at_{k}" for k in PASS_K), "token_logprob", "gold_logprob", "eval_loss")
    optional = tuple(f"pass_at_{k}" for k in PASS_K[1:])
    primary = "pass_at_1"
    continuous = "token_logprob"
    per_example = {"token_logprob": "token_logprob", **{f"pass_at_{k}": f"pass_at_{k}" for k in PASS_K}}
    diagnostics = tuple(f"exec_{kind}" for kind in codeconvert.OUTCOMES)

    def normalize(self, row, ref, origin, index):
        out = {f: str(row[f]) for f in self.fields}
        if not out["prompt"].strip():
            self.fail(origin, index, "empty prompt")
        if not out["solution"].strip():
            self.fail(origin, index, "empty solution")
        out.update({f: str(row[f]) for f in self.optional_fields if row.get(f) is not None})
        out.setdefault("id", f"row_{index}")
        return out

    def text(self, row):
        return row["prompt"]

    def completion(self, answer):
        return answer

    def answer(self, row):
        return row["solution"]

    def settings(self, study):
        e = study.execution
        ks = sorted({int(m.rsplit("_", 1)[1]) for m in study.metric_names if m.startswith("pass_at_")} or {1})
        return {"execution": {"allowed": study.allow_code_execution, "samples": e.samples, "temperature": e.temperature,
                              "top_p": e.top_p, "timeout_s": e.timeout_s, "memory_mb": e.memory_mb,
                              "parallel": e.parallel, "reference_failures": e.reference_failures, "k": ks,
                              "executor": e.executor}}

    def check(self, rows, context, origin, entry=None, execute=None):
        """The benchmark: every problem has tests, and its reference solution passes them, run by `execute` (the
        sandbox the caller gives: tasks.backends.sandbox.run_problems)."""
        if entry is not None:
            return rows, []  # training data is not executed (a negative control's solutions fail by design)
        no_test = [r["id"] for r in rows if not r.get("test", "").strip()]
        if no_test:
            return rows, [f"{origin}: {len(no_test)} problem(s) have no tests (field 'test'), e.g. {no_test[:5]}; a "
                          f"code benchmark needs them (`curate convert` writes them)"]
        e = context["execution"]
        if not e["allowed"]:
            return rows, []  # the study's own check already says allow_code_execution is off
        if execute is None:
            raise TypeError("the code task type runs its benchmark's reference solutions: pass execute= (the sandbox)")
        try:
            outcomes = execute([codeconvert.program(r, r["solution"]) for r in rows], e)
        except SandboxUnavailable as err:
            return rows, [f"{origin}: {err}"]
        failed = [(r["id"], o) for r, o in zip(rows, outcomes) if not o.passed]
        if not failed:
            return rows, []
        listed = "; ".join(f"{i} ({o.kind}: {o.detail[:80]})" for i, o in failed[:5])
        if e["reference_failures"] == "drop":
            logging.getLogger("curate").warning("%s: dropped %d of %d problems whose reference solution fails its own "
                                                "tests: %s", origin, len(failed), len(rows), listed)
            bad = {i for i, _ in failed}
            return [r for r in rows if r["id"] not in bad], []
        return rows, [f"{origin}: the reference solutions of {len(failed)} of {len(rows)} problems fail their own "
                      f"tests: {listed}{' …' if len(failed) > 5 else ''}; fix them, or drop them with "
                      f"execution.reference_failures: drop (they are never counted)"]

    def label_noise(self, rows, share, seed, context):
        """A documented negative control: the solutions of a share of rows shuffled among them (none keeps its own)."""
        return rotate(rows, share, np.random.default_rng([seed, 11]), ("solution",))

    def profile(self, rows):
        return {"solution_lines_mean": round(float(np.mean([len(r["solution"].splitlines()) for r in rows])), 1)}

    # ---- prompts ----------------------------------------------------------------------------------------------
    def pairs(self, rows, context, tokenizer, max_length):
        return [dict(zip(("prompt", "completion"), fit_pair(r["prompt"], r["solution"], tokenizer, max_length)))
                for r in rows]

    # ---- scoring ----------------------------------------------------------------------------------------------
    def predict(self, rows, context, scorer):
        e = context["execution"]
        if not e["allowed"]:
            raise DataError("code execution is off: the study must say allow_code_execution: true")
        prompts = [r["prompt"] for r in rows]
        scored = scorer.logprobs(prompts, [[r["solution"]] for r in rows])
        drawn = scorer.samples(prompts, n=e["samples"], temperature=e["temperature"] if e["samples"] > 1 else 0.0,
                               top_p=e["top_p"], stop=STOP)
        completions = [[cut(t) for t in texts] for texts in drawn]
        outcomes = iter(scorer.execute([codeconvert.program(r, c) for r, cs in zip(rows, completions) for c in cs], e))
        records = []
        for r, ((logp, tokens),), cs in zip(rows, scored, completions):
            runs = [next(outcomes) for _ in cs]
            passed = sum(o.passed for o in runs)
            rec = {"id": r["id"], "gold_logprob": logp, "gold_tokens": tokens, "token_logprob": logp / tokens,
                   "samples": len(cs), "passed": passed, "generation": cs[0], "kind": runs[0].kind,
                   "kinds": [o.kind for o in runs], "details": [o.detail for o in runs],
                   "completions": cs if len(cs) > 1 else None, "network": runs[0].network}
            rec.update({f"pass_at_{k}": pass_at_k(len(cs), passed, k) for k in e["k"]})
            records.append(rec)
        return records

    def aggregate(self, records, context):
        out = super().aggregate(records, context)
        counts = {kind: 0 for kind in codeconvert.OUTCOMES}
        for rec in records:
            for kind in rec["kinds"]:
                counts[kind] += 1
        out.update({f"exec_{kind}": n for kind, n in counts.items()})
        return out

    def review(self, row, record, context):
        why = "passed" if record["kind"] == "passed" else f"{record['kind']}: {record['details'][0]}"
        return {"prompt_messages": [{"role": "user", "content": row["prompt"]}], "model_response": record["generation"],
                "quality_score": record["passed"] / record["samples"],
                "failure_reason": f"{record['passed']} of {record['samples']} samples passed; first: {why}"}

    def bounds(self, metric):
        return (-np.inf, 0.0) if metric == "token_logprob" else super().bounds(metric)


TASK = Code()
