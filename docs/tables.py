"""The measured tables in README.md and docs/*.md, generated from the studies' own ranking.csv — never typed by hand
— and the command reference in docs/cli.md, generated from the `curate` app itself.

    python docs/tables.py update   # copy runs/<study>/ranking/ranking.csv -> docs/results/<study>.csv (those that
                                   # exist), then rewrite every table block from docs/results/
    python docs/tables.py check    # exit 1 when a block differs from its CSV (tests/test_docs.py runs this)

A block in a Markdown file is

    <!-- table: sst2-demo -->
    | rank | arm | ... |
    <!-- /table -->

and is rendered from docs/results/sst2-demo.csv: rank, arm, the primary metric at each size, the predicted value
when the ranking used the fit, the delta vs the control with its interval, sig, mde and p_best, exactly as the CSV
spells them. A block `<!-- cli -->` ...
`<!-- /cli -->` holds every command with its arguments and options, read from the typer app.
"""

import csv
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
BLOCK = re.compile(r"(<!-- table: ([\w.-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
CLI = re.compile(r"(<!-- cli -->\n)(.*?)(<!-- /cli -->)", re.S)


def commands():
    """(['curate', 'catalog', 'list'], click command) for every command of the app, groups walked."""
    import typer.main

    sys.path.insert(0, str(ROOT))
    from cli.main import app

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield path, command
    root = typer.main.get_command(app)
    return root, list(walk(root, ["curate"]))


def render_cli() -> str:
    root, found = commands()
    out = []
    for path, command in found:
        args = " ".join(p.name.upper() if p.required else f"[{p.name.upper()}]" for p in command.params
                        if not getattr(p, "opts", [""])[0].startswith("-"))
        out += [f"### `{' '.join(path)}{' ' + args if args else ''}`", "", (command.help or "").split("\n\n")[0]
                .replace("\n", " ").strip(), ""]
        for p in command.params:
            if p.opts[0].startswith("-") and p.name != "help":
                flags = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
                out.append(f"- {flags}: {' '.join((p.help or '').split())}")
        out.append("")
    options = [p for p in root.params if p.opts[0].startswith("-") and "completion" not in p.opts[0]]
    out += ["### Options of `curate` itself", ""] + [f"- {', '.join(f'`{o}`' for o in p.opts)}: {p.help}" for p in options]
    return "\n".join(out).rstrip() + "\n"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render(study: str) -> str:
    """The Markdown table of one study's ranking.csv snapshot."""
    path = RESULTS / f"{study}.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no snapshot (run the study, then `python docs/tables.py update`)")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    metric = header[3].rsplit("@", 1)[0]  # rank, arm, license, then the metric at each size
    sizes = [c for c in header if re.fullmatch(re.escape(metric) + r"@\d+", c)]
    interval = next(c for c in header if c.startswith("delta ") and c.endswith("interval"))
    estimate = header[3 + len(sizes)]  # 'observed@128' or 'predicted@4096': what was ranked
    kind, at = estimate.split("@")
    shown = [estimate] if kind == "predicted" else []  # an observed estimate is the last size's column already
    cols = ["rank", "arm", *(f"@{c.rsplit('@', 1)[1]}" for c in sizes), *shown,
            f"delta vs control, {kind} at {at} [{interval.split()[1]}]", "sig", "mde", "p_best"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        delta = f"{r['delta_vs_control']} {r[interval]}".strip()
        cells = [r["rank"], f"`{r['arm']}`", *(r[c] for c in [*sizes, *shown]), delta, r["sig"], r["mde"], r["p_best"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def refresh(text: str) -> str:
    text = BLOCK.sub(lambda m: m.group(1) + render(m.group(2)) + m.group(4), text)
    return CLI.sub(lambda m: m.group(1) + render_cli() + m.group(3), text) if CLI.search(text) else text


def stale() -> list[str]:
    """Files whose table blocks differ from their CSV snapshots."""
    return [str(p.relative_to(ROOT)) for p in documents() if refresh(p.read_text()) != p.read_text()]


def update() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for study in sorted({m.group(2) for p in documents() for m in BLOCK.finditer(p.read_text())}):
        run = ROOT / "runs" / study / "ranking" / "ranking.csv"
        if run.is_file():
            shutil.copyfile(run, RESULTS / f"{study}.csv")
            print(f"{run.relative_to(ROOT)} -> {(RESULTS / f'{study}.csv').relative_to(ROOT)}")
    for p in documents():
        text = p.read_text()
        if refresh(text) != text:
            p.write_text(refresh(text))
            print(f"rewrote the tables of {p.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["update"]:
        update()
    elif sys.argv[1:] == ["check"]:
        bad = stale()
        print("tables stale in: " + ", ".join(bad) if bad else "every table equals its CSV")
        sys.exit(1 if bad else 0)
    else:
        raise SystemExit(__doc__)
