"""The README and docs say only what is true (issue 26): the README fits in 300 lines; every `curate` command and
option they show exists; the measured tables and the command reference equal what docs/tables.py generates from
the runs' ranking.csv and from the app; the README's study and catalog examples are valid."""

import csv
import re
import sys

import pytest
import yaml

from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))
import tables  # noqa: E402

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_fits():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300 and any(line.startswith("**Contents**") for line in lines[:20])


def _shown_commands():
    """(file, 'curate a b --flag ...') for every curate command line in code spans and blocks."""
    for doc in DOCS:
        text = doc.read_text()
        for snippet in re.findall(r"```(?:bash)?\n(.*?)```|`([^`\n]+)`", text, re.S):
            for line in "\n".join(snippet).splitlines():
                for m in re.finditer(r"(?:^|[\s;&|(/])curate((?: +[^\s|;&#`)]+)+)", line):
                    yield doc.name, m.group(1).split()


def test_every_command_and_option_shown_exists():
    root, commands = tables.commands()
    by_path = {tuple(path[1:]): command for path, command in commands}
    groups = {path[1] for path, _ in commands if len(path) > 2}
    global_options = {o for p in root.params for o in p.opts}
    problems, checked = [], 0
    for where, words in _shown_commands():
        words = [w for w in words if w not in global_options]
        if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]) or words[0] in ("COMMAND",):
            continue
        path = tuple(words[:2]) if words[0] in groups and len(words) > 1 else tuple(words[:1])
        command = by_path.get(path)
        if command is None:
            problems.append(f"{where}: curate {' '.join(words)}: no command {' '.join(path)}")
            continue
        known = {o for p in command.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        for flag in (w.split("=")[0] for w in words if w.startswith("-")):
            if flag not in known | {"--help"}:
                problems.append(f"{where}: curate {' '.join(words)}: {' '.join(path)} has no option {flag}")
        checked += 1
    assert checked >= 40 and problems == [], "\n".join(problems)


def test_generated_tables_and_command_reference_are_current():
    assert tables.stale() == [], "run `python docs/tables.py update`"
    text = (ROOT / "README.md").read_text()
    with open(ROOT / "docs" / "results" / "sst2-demo.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    shown = text.split("<!-- table: sst2-demo -->\n")[1].split("<!-- /table -->")[0].splitlines()[2:]
    assert len(shown) == len(csv_rows) == 4
    for row, line in zip(csv_rows, shown):  # the same numbers, digit for digit
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:2] == [row["rank"], f"`{row['arm']}`"] and cells[-1] == row["p_best"]
        assert cells[-4].startswith(row["delta_vs_control"]) and row["gold_logprob@128"] in cells


def test_the_check_fails_on_a_hand_edited_table():
    text = (ROOT / "README.md").read_text()
    first = re.search(r"\| 1 \| `[^`]+` \| ([^|]+) \|", text)
    edited = text.replace(first.group(0), first.group(0).replace(first.group(1), " -9.9999 "))
    assert tables.refresh(text) == text and tables.refresh(edited) == text != edited


def test_the_readme_study_and_catalog_examples_are_valid(tmp_path):
    from tasks.schema.catalog import CatalogEntry
    from tasks.schema.study import Study

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    study = yaml.safe_load(blocks[0])
    assert Study.model_validate(study).mixture.sizes == [32, 64, 128]
    left = "\n".join(line[:52].rstrip() for line in blocks[1].splitlines()[1:])
    right = "\n".join(line[52:] for line in blocks[1].splitlines()[1:])
    names = {CatalogEntry.model_validate(yaml.safe_load(side)).name for side in (left, right)}
    assert names == set(study["candidates"])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_between_docs_resolve(doc):
    for target in re.findall(r"\]\(((?!https?:|#)[^)#\s]+)", doc.read_text()):
        assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
