"""The failure-review loop: the review store (transitions, who and when, conflicts on SQLite and on PostgreSQL),
importing harness files (validated per line, ids deduplicated), and the export (mining a finished study:
test_integration.py; the page: test_review_page.py)."""

import json
import uuid

import pytest
from typer.testing import CliRunner

from cli.main import app
from tasks.backends.reviewstore import Conflict, ReviewStore
from tasks.core.sftrecords import SftCandidate
from tasks.errors import WorkbenchError


def _record(i: int, run: str = "run-a", **over) -> dict:
    return {"id": f"rec-{i}", "source": "harness", "benchmark_run_id": run, "timestamp": "2026-11-24T10:00:00+00:00",
            "status": "needs_review", "prompt_messages": [{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": f"question {i}"}],
            "model_response": f"<b>wrong {i}</b>", "corrected_response": None, "quality_score": 0.1 * i,
            "failure_reason": "answer mismatch", "task_id": f"t{i}", "task_type": "instruction", "task_name": "demo",
            "model_id": "org/model", "model_name": "model", **over}


def _postgres_url() -> str | None:
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except Exception:  # noqa: BLE001 - no PostgreSQL here: the SQLite run still holds
        return None
    name = f"curate_review_{uuid.uuid4().hex[:8]}"
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
        return
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 (the team database); the SQLite store is tested")
    yield (s := ReviewStore(url))
    s.engine.dispose()
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]}")
    conn.close()


def test_transitions_are_recorded_with_who_and_when(store):
    assert store.add([SftCandidate(**_record(i)) for i in range(3)], "importer") == (3, 0)
    first = store.get("rec-1")
    assert first["status"] == "needs_review" and first["version"] == 1 and first["corrected_response"] is None
    done = store.act("rec-1", "approve", 1, "ana", correction="the right answer")
    assert (done["status"], done["version"], done["corrected_response"], done["updated_by"]) == \
        ("approved", 2, "the right answer", "ana")
    store.act("rec-2", "flag", 1, "ben")
    store.act("rec-0", "discard", 1, "ben")
    assert [(e["action"], e["from_status"], e["to_status"], e["who"]) for e in store.history("rec-1")] == \
        [("import", None, "needs_review", "importer"), ("approve", "needs_review", "approved", "ana")]
    assert {r["id"]: r["status"] for r in store.records()} == \
        {"rec-0": "discarded", "rec-1": "approved", "rec-2": "model_rejected"}
    assert [r["id"] for r in store.records(status="model_rejected")] == ["rec-2"]
    [run] = store.summary()
    assert run == {"benchmark_run_id": "run-a", "total": 3, "needs_review": 0, "approved": 1, "discarded": 1,
                   "model_rejected": 1}
    with pytest.raises(WorkbenchError, match="approve needs a corrected response"):
        store.act("rec-0", "approve", 2, "ana", correction="  ")


def test_a_stale_edit_is_a_conflict_not_an_overwrite(store):
    store.add([SftCandidate(**_record(1))], "importer")
    store.act("rec-1", "approve", 1, "ana", correction="ana's answer")  # ana saves first
    with pytest.raises(Conflict) as err:  # ben still has version 1 on screen
        store.act("rec-1", "approve", 1, "ben", correction="ben's answer")
    assert err.value.current["corrected_response"] == "ana's answer" and err.value.current["version"] == 2
    assert "changed by ana" in str(err.value)
    assert store.get("rec-1")["corrected_response"] == "ana's answer"  # nothing of ben's was written
    assert len(store.history("rec-1")) == 2


def test_import_validates_every_line_and_skips_known_ids(tmp_path):
    db = f"sqlite:///{tmp_path / 'review.db'}"
    folder = tmp_path / "harness" / "node-1"
    folder.mkdir(parents=True)
    (folder / "sft_candidates.jsonl").write_text("".join(json.dumps(_record(i)) + "\n" for i in range(4)))
    first = CliRunner().invoke(app, ["review", "import", str(tmp_path / "harness"), "--db", db])
    assert first.exit_code == 0 and "4 records read, 4 added, 0 skipped" in first.output, first.output
    again = CliRunner().invoke(app, ["review", "import", str(folder / "sft_candidates.jsonl"), "--db", db])
    assert "4 records read, 0 added, 4 skipped" in again.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_record(7)) + "\n" + json.dumps(_record(8, status="done", quality_score=2)) + "\n"
                   + json.dumps({k: v for k, v in _record(9).items() if k != "task_id"}) + "\n")
    refused = CliRunner().invoke(app, ["review", "import", str(bad), "--db", db])
    assert refused.exit_code == 2 and "3 problem(s), nothing imported" in refused.output
    assert f"{bad}:2: status: Input should be 'needs_review', 'approved', 'discarded' or 'model_rejected'" in refused.output
    assert f"{bad}:2: quality_score: Input should be less than or equal to 1" in refused.output
    assert f"{bad}:3: task_id: Field required" in refused.output
    assert len(ReviewStore(db).records()) == 4  # not even the good first line


def test_export_writes_approved_corrections_and_a_catalog_entry(tmp_path):
    from tasks.schema.catalog import load_catalog

    db = f"sqlite:///{tmp_path / 'review.db'}"
    store = ReviewStore(db)
    store.add([SftCandidate(**_record(i)) for i in range(4)], "importer")
    store.act("rec-0", "approve", 1, "ana", correction="answer zero")
    store.act("rec-1", "discard", 1, "ana")
    store.act("rec-2", "flag", 1, "ana")  # rec-3 stays needs_review
    out, catalog = tmp_path / "data" / "corrected.jsonl", tmp_path / "catalog"
    args = ["review", "export", str(out), "--name", "reviewed-failures", "--catalog-dir", str(catalog),
            "--license", "MIT", "--db", db]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and "1 approved corrections" in first.output and "version 1 (new)" in first.output
    assert [json.loads(line) for line in out.open()] == [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "question 0"},
        {"role": "assistant", "content": "answer zero"}]}]
    entry = load_catalog(catalog)["reviewed-failures"]
    assert (entry.task, entry.format, entry.license, entry.version, entry.path) == \
        ("instruction", "messages", "MIT", 1, str(out.resolve()))
    assert "mined from benchmark run(s) run-a" in entry.description
    assert "version 1 (unchanged)" in CliRunner().invoke(app, args).output  # same content: same version
    store.act("rec-3", "approve", 1, "ben", correction="answer three")
    assert "2 approved corrections" in (again := CliRunner().invoke(app, args).output) and "version 2 (content changed)" in again
    assert load_catalog(catalog)["reviewed-failures"].version == 2
    empty = CliRunner().invoke(app, [*args[:-1], f"sqlite:///{tmp_path / 'empty.db'}"])
    assert empty.exit_code == 2 and "no approved record with a correction to export" in empty.output
