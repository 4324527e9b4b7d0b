"""The review store: failure records (tasks.core.sftrecords) in a real database — SQLite by default, PostgreSQL (or
any SQLAlchemy URL) for a team. Every status change is one transaction that also writes an event row (who, when,
from, to); an edit names the version it was made on, and an edit on a stale version is a Conflict carrying the
current record — never a silent overwrite."""

import json
import os
from pathlib import Path

import sqlalchemy as sa

from tasks.core.sftrecords import STATUSES, SftCandidate, now
from tasks.errors import WorkbenchError

DB_ENV = "CURATE_REVIEW_DB"  # a SQLAlchemy URL; default sqlite:///runs/review.db
ACTIONS = {"approve": "approved", "discard": "discarded", "flag": "model_rejected", "reopen": "needs_review"}

meta = sa.MetaData()
candidates = sa.Table(
    "sft_candidates", meta,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("record", sa.Text, nullable=False),  # the interchange record as JSON (status/correction kept current)
    sa.Column("status", sa.String, nullable=False, index=True),
    sa.Column("corrected_response", sa.Text),
    sa.Column("benchmark_run_id", sa.String, nullable=False, index=True),
    sa.Column("task_type", sa.String, nullable=False, index=True),
    sa.Column("quality_score", sa.Float, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_by", sa.String),
    sa.Column("updated_at", sa.String),
)
events = sa.Table(
    "review_events", meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("candidate_id", sa.String, sa.ForeignKey("sft_candidates.id"), nullable=False, index=True),
    sa.Column("action", sa.String, nullable=False),
    sa.Column("from_status", sa.String),
    sa.Column("to_status", sa.String, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("who", sa.String, nullable=False),
    sa.Column("at", sa.String, nullable=False),
)


class Conflict(WorkbenchError):
    """The record changed since the reviewer loaded it; `current` is what it is now."""

    def __init__(self, current: dict):
        super().__init__(f"record {current['id']} was changed by {current.get('updated_by') or 'someone'} at "
                         f"{current.get('updated_at')} (now version {current['version']}, {current['status']}); "
                         f"reload it and apply your change again")
        self.current = current


def default_url() -> str:
    return os.environ.get(DB_ENV) or f"sqlite:///{Path('runs/review.db').resolve()}"


class ReviewStore:
    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(self.url)
        meta.create_all(self.engine)

    # ---- reading ------------------------------------------------------------------------------------------------
    @staticmethod
    def _out(row) -> dict:
        record = json.loads(row.record)
        return {**record, "status": row.status, "corrected_response": row.corrected_response,
                "version": row.version, "updated_by": row.updated_by, "updated_at": row.updated_at}

    def get(self, record_id: str) -> dict:
        with self.engine.connect() as c:
            row = c.execute(sa.select(candidates).where(candidates.c.id == record_id)).first()
        if row is None:
            raise WorkbenchError(f"no review record '{record_id}'")
        return self._out(row)

    def records(self, status: str | None = None, task_type: str | None = None, run: str | None = None) -> list[dict]:
        """Records, lowest quality score first (the worst failures lead the queue)."""
        query = sa.select(candidates).order_by(candidates.c.quality_score, candidates.c.id)
        for column, value in ((candidates.c.status, status), (candidates.c.task_type, task_type),
                              (candidates.c.benchmark_run_id, run)):
            if value:
                query = query.where(column == value)
        with self.engine.connect() as c:
            return [self._out(r) for r in c.execute(query)]

    def summary(self) -> list[dict]:
        """Per benchmark run: how many candidates it produced, by status."""
        query = sa.select(candidates.c.benchmark_run_id, candidates.c.status, sa.func.count()).group_by(
            candidates.c.benchmark_run_id, candidates.c.status)
        out: dict[str, dict] = {}
        with self.engine.connect() as c:
            for run, status, n in c.execute(query):
                out.setdefault(run, {"benchmark_run_id": run, "total": 0, **{s: 0 for s in STATUSES}})
                out[run][status] += n
                out[run]["total"] += n
        return sorted(out.values(), key=lambda r: r["benchmark_run_id"])

    def history(self, record_id: str) -> list[dict]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(events).where(events.c.candidate_id == record_id).order_by(events.c.seq))
            return [dict(r._mapping) for r in rows]

    # ---- writing ------------------------------------------------------------------------------------------------
    def add(self, records: list[SftCandidate], who: str) -> tuple[int, int]:
        """Insert new records (one transaction); ids already present are skipped. Returns (added, skipped)."""
        added = skipped = 0
        claimed = [r.id for r in records if r.status != "needs_review"]
        if claimed:  # approval is a reviewer's act on the page, never something a file brings along
            raise WorkbenchError(f"records enter the store as needs_review; {len(claimed)} claim another status, "
                                 f"e.g. {claimed[0]}")
        with self.engine.begin() as c:
            present = {r for (r,) in c.execute(sa.select(candidates.c.id).where(
                candidates.c.id.in_([r.id for r in records])))} if records else set()
            for rec in records:
                if rec.id in present:
                    skipped += 1
                    continue
                present.add(rec.id)
                at = now()
                c.execute(candidates.insert().values(
                    id=rec.id, record=rec.model_dump_json(), status=rec.status,
                    corrected_response=rec.corrected_response, benchmark_run_id=rec.benchmark_run_id,
                    task_type=rec.task_type, quality_score=rec.quality_score, version=1, updated_by=who, updated_at=at))
                c.execute(events.insert().values(candidate_id=rec.id, action="import", from_status=None,
                                                 to_status=rec.status, version=1, who=who, at=at))
                added += 1
        return added, skipped

    def act(self, record_id: str, action: str, version: int, who: str, correction: str | None = None) -> dict:
        """approve (with a correction) | discard | flag | reopen, made on `version`: one transaction, or Conflict."""
        if action not in ACTIONS:
            raise WorkbenchError(f"unknown action '{action}'; actions: {', '.join(ACTIONS)}")
        if action == "approve" and not (correction or "").strip():
            raise WorkbenchError("approve needs a corrected response (write the right answer first)")
        at, status = now(), ACTIONS[action]
        with self.engine.begin() as c:
            before = c.execute(sa.select(candidates.c.status).where(candidates.c.id == record_id)).scalar()
            if before is None:
                raise WorkbenchError(f"no review record '{record_id}'")
            values = {"status": status, "version": version + 1, "updated_by": who, "updated_at": at}
            if action == "approve":
                values["corrected_response"] = correction
            done = c.execute(candidates.update().where(candidates.c.id == record_id,
                                                       candidates.c.version == version).values(**values))
            if done.rowcount == 1:
                c.execute(events.insert().values(candidate_id=record_id, action=action, from_status=before,
                                                 to_status=status, version=version + 1, who=who, at=at))
        current = self.get(record_id)
        if done.rowcount != 1:  # someone else changed it since `version`: nothing was written
            raise Conflict(current)
        return current
