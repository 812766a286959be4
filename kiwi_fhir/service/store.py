"""Durable intake: every accepted payload is a ``jobs`` row before we say yes.

The only module that sees SQLAlchemy rows; callers get frozen ``Job``s.
Methods are blocking (callers on the event loop use ``asyncio.to_thread``)
and every database failure leaves as ``StoreError`` from ``_guard``.

Idempotence lives in two unique columns, both scoped to the job's
``owner`` (channel + authenticated caller, folded into the values by
:mod:`.intake`): ``sha256`` (the exact payload) and ``dedup_key`` (the
sender's identity for the item: HL7 sender + MSH-10, or DocumentReference
id + version). The policy (docs/service.md):

- same owner, same content -> a duplicate: the stored job is returned;
- same owner, same identity, other content -> for a *versioned* identity
  (MSH-10, ``meta.versionId``) ``IdentityConflictError``; for an
  unversioned one (a DocumentReference without ``versionId``) a new job that
  supersedes the old (``superseded_by`` / ``supersedes``);
- another owner -> never a duplicate, whatever it sent: one caller's result
  is never handed to another.

``completions`` counts transitions to ``done`` so tests can prove
exactly-once completion across crashes.

Subscription jobs carry a second state, ``writeback`` (pending -> done |
failed; NULL for other sources): results go back to the FHIR server after
``done``. ``next_attempt_at`` schedules both the fetch of an ``fhirref`` job
(a notification that named a resource we still have to read) and write-back
retries, so a restart resumes the backoff where it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)  # fmt: skip
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from kiwi_fhir.errors import IdentityConflictError, JobNotFoundError, StoreError
from kiwi_fhir.service.jobs import (
    DONE,
    FAILED,
    FHIRREF,
    PENDING,
    PROCESSING,
    RECEIVED,
    SKIPPED,
    STATUSES,
    SUBSCRIPTION,
    Job,
    JobOutcome,
    NewJob,
)

# The job values and states are re-exported: callers use store.Job, store.DONE, ...
__all__ = [
    "DONE",
    "FAILED",
    "FHIRREF",
    "PENDING",
    "PROCESSING",
    "RECEIVED",
    "SKIPPED",
    "STATUSES",
    "SUBSCRIPTION",
    "Base",
    "IntakeStore",
    "Job",
    "JobOutcome",
    "JobRow",
    "NewJob",
]
_MIGRATIONS: Final = Path(__file__).with_name("migrations")


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    dedup_key: Mapped[str | None] = mapped_column(String(512), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    params: Mapped[str] = mapped_column(Text, default="{}")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str | None] = mapped_column(String(200))
    backend: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    completions: Mapped[int] = mapped_column(Integer, default=0)
    writeback: Mapped[str | None] = mapped_column(String(16), index=True)
    writeback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    writeback_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(200))
    superseded_by: Mapped[str | None] = mapped_column(String(36))
    supersedes: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    doc_key: Mapped[str | None] = mapped_column(String(512), index=True)


def _job(row: JobRow) -> Job:
    return Job(row.id, row.source, row.kind, row.payload, row.sha256, row.dedup_key, row.params,
               row.received_at, row.status, row.error, row.result, row.model_id, row.backend,
               row.attempts, row.completions, row.writeback, row.writeback_attempts or 0,
               row.writeback_error, row.next_attempt_at, row.owner, row.superseded_by,
               row.supersedes, row.content_sha256, row.doc_key)  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)


class IntakeStore:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open intake database ({type(exc).__name__})") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def _guard(self) -> Iterator[Session]:
        """One transaction; library failures become ``StoreError`` here, nowhere else."""
        try:
            with self._session.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            # The driver message can echo bound parameters (payloads): keep it off.
            raise StoreError(f"intake database error ({type(exc).__name__})") from exc

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe to repeat)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate intake database ({type(exc).__name__})") from exc

    def submit(self, new: NewJob) -> tuple[Job, bool]:
        """Store ``new`` (status ``received``) or return the job it duplicates.

        Returns ``(job, created)``; ``created`` is False for a duplicate.
        Raises ``IdentityConflictError`` for a versioned identity reused with
        other content (see the module docstring for the whole policy).
        """
        same, twin = self._existing(new)
        if same is not None:
            return same, False
        if twin is not None and twin.content_sha256 is not None and (
                twin.content_sha256 == new.content_sha256):  # fmt: skip
            return twin, False  # a resend with other bytes (MSH-7, JSON formatting)
        if twin is not None and new.versioned:
            raise IdentityConflictError(new.identity_field or "identity",
                                        "a different item was already accepted under it")
        now = _now()
        row = JobRow(id=str(uuid.uuid4()), source=new.source, kind=new.kind,
                     dedup_key=new.dedup_key, sha256=new.sha256, payload=new.payload,
                     params=new.params, received_at=now, updated_at=now, status=RECEIVED,
                     attempts=0, completions=0, writeback_attempts=0, owner=new.owner or None,
                     content_sha256=new.content_sha256, doc_key=new.doc_key,
                     supersedes=twin.id if twin is not None else None,
                     writeback=PENDING if new.source == SUBSCRIPTION else None)  # fmt: skip
        try:
            with self._guard() as s:
                if twin is not None:  # the new version takes the identity over
                    s.execute(update(JobRow).where(JobRow.id == twin.id)
                              .values(dedup_key=None, superseded_by=row.id,
                                      updated_at=now))  # fmt: skip
                    s.flush()
                s.add(row)
        except StoreError as exc:
            lost_race = isinstance(exc.__cause__, IntegrityError)  # a twin was inserted first
            if lost_race:
                same, twin = self._existing(new)
                if same is not None:
                    return same, False
                if twin is not None:
                    raise IdentityConflictError(new.identity_field or "identity",
                                                "accepted concurrently") from exc  # fmt: skip
            raise
        return _job(row), True

    def _existing(self, new: NewJob) -> tuple[Job | None, Job | None]:
        """(the job with this exact content, the job holding this identity)."""
        cond = JobRow.sha256 == new.sha256
        if new.dedup_key is not None:
            cond = or_(cond, JobRow.dedup_key == new.dedup_key)
        with self._guard() as s:
            rows = [_job(r) for r in s.scalars(select(JobRow).where(cond).limit(2))]
        same = next((j for j in rows if j.sha256 == new.sha256), None)
        twin = next((j for j in rows if new.dedup_key is not None
                     and j.dedup_key == new.dedup_key), None)  # fmt: skip
        return same, twin

    def previous_version(self, doc_key: str, job: Job) -> Job | None:
        """The newest finished job for the same document received before ``job``:
        the one whose resources an edit or a new version retires."""
        with self._guard() as s:
            row = s.scalars(
                select(JobRow)
                .where(JobRow.doc_key == doc_key, JobRow.id != job.id, JobRow.status == DONE,
                       JobRow.received_at <= job.received_at)
                .order_by(JobRow.received_at.desc())
                .limit(1)
            ).first()  # fmt: skip
            return _job(row) if row is not None else None

    def get(self, job_id: str) -> Job:
        with self._guard() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise JobNotFoundError(job_id)
            return _job(row)

    def pending(self) -> list[Job]:
        """Jobs a crash left unfinished, oldest first."""
        with self._guard() as s:
            rows = s.scalars(select(JobRow).where(JobRow.status.in_((RECEIVED, PROCESSING)))
                             .order_by(JobRow.received_at))  # fmt: skip
            return [_job(r) for r in rows]

    def mark_processing(self, ids: Sequence[str], lease_s: float = 300.0) -> None:
        """Claim ``ids`` for one attempt; the lease says until when the claim holds."""
        now = _now()
        with self._guard() as s:
            s.execute(update(JobRow).where(JobRow.id.in_(ids), JobRow.status != DONE)
                      .values(status=PROCESSING, attempts=JobRow.attempts + 1,
                              lease_until=now + timedelta(seconds=lease_s),
                              updated_at=now))  # fmt: skip

    def reclaim(self, *, older_than_s: float, exclude: Collection[str], limit: int = 64,
                hold_s: float = 60.0) -> list[Job]:  # fmt: skip
        """Jobs nobody is working on: ``processing`` with an expired lease, or
        ``received`` for longer than ``older_than_s`` (their waiter was lost to a
        database outage). Rows are locked ``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL and their lease pushed ``hold_s`` ahead in the same
        transaction, so two replicas never re-claim the same job."""
        now = _now()
        cutoff = now - timedelta(seconds=older_than_s)
        stale = or_(
            (JobRow.status == PROCESSING) & or_(JobRow.lease_until.is_(None),
                                                JobRow.lease_until < now),
            (JobRow.status == RECEIVED) & (JobRow.received_at < cutoff)
            & or_(JobRow.lease_until.is_(None), JobRow.lease_until < now),
        )  # fmt: skip
        with self._guard() as s:
            q = (select(JobRow).where(stale, JobRow.kind != FHIRREF)
                 .order_by(JobRow.received_at).limit(limit + len(exclude)))  # fmt: skip
            if self.engine.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            rows = [r for r in s.scalars(q) if r.id not in exclude][:limit]
            for r in rows:
                r.lease_until = now + timedelta(seconds=hold_s)
            return [_job(r) for r in rows]

    def release(self, ids: Sequence[str]) -> None:
        """Undo a claim that was not the jobs' fault (the backend was down)."""
        with self._guard() as s:
            s.execute(update(JobRow).where(JobRow.id.in_(ids), JobRow.status == PROCESSING)
                      .values(status=RECEIVED, attempts=JobRow.attempts - 1, lease_until=None,
                              updated_at=_now()))  # fmt: skip

    def give_up(self, job_id: str, reason: str) -> None:
        """A poison job: ``failed`` with the reason, never claimed again."""
        with self._guard() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status != DONE)
                      .values(status=FAILED, error=reason, lease_until=None,
                              updated_at=_now()))  # fmt: skip

    def finish(self, outcomes: Sequence[JobOutcome]) -> list[Job]:
        """Record the outcomes in one transaction.

        A job already ``done`` is left alone, so a replay never completes twice.
        """
        with self._guard() as s:
            for o in outcomes:
                s.execute(update(JobRow).where(JobRow.id == o.job_id, JobRow.status != DONE)
                          .values(status=o.status, error=o.error, result=o.result or None,
                                  model_id=o.model or None, backend=o.backend or None,
                                  completions=JobRow.completions + int(o.status == DONE),
                                  updated_at=_now()))  # fmt: skip
            rows = s.scalars(select(JobRow).where(JobRow.id.in_([o.job_id for o in outcomes])))
            return [_job(r) for r in rows]

    # -- subscription jobs: fetch and write-back scheduling ------------------------

    def due_fetches(self, limit: int = 16) -> list[Job]:
        """``fhirref`` jobs whose fetch is due now (never tried, or backoff over)."""
        now = _now()
        with self._guard() as s:
            rows = s.scalars(select(JobRow).where(
                JobRow.kind == FHIRREF, JobRow.status == RECEIVED,
                or_(JobRow.next_attempt_at.is_(None), JobRow.next_attempt_at <= now))
                .order_by(JobRow.received_at).limit(limit))  # fmt: skip
            return [_job(r) for r in rows]

    def resolve(self, job_id: str, new: NewJob) -> Job | None:
        """The fetched resource replaces the reference; the job is then an ordinary one.

        None when another job already holds that resource version with the same
        content: this one is then closed as a duplicate (``done``, nothing to
        write back). Other content under an unversioned identity supersedes the
        holder; under a versioned one the job fails with the conflict named.
        """
        dedup_key = new.dedup_key
        values: dict[str, Any] = {"kind": new.kind, "payload": new.payload, "error": None,
                                  "next_attempt_at": None, "updated_at": _now(),
                                  "content_sha256": new.content_sha256,
                                  "doc_key": new.doc_key}  # fmt: skip
        try:
            with self._guard() as s:
                s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.kind == FHIRREF)
                          .values(dedup_key=dedup_key, **values))  # fmt: skip
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            with self._guard() as s:
                holder = s.scalars(select(JobRow).where(JobRow.dedup_key == dedup_key)).first()
                other = holder is not None and holder.payload != new.payload and (
                    holder.content_sha256 is None or holder.content_sha256 != new.content_sha256)
                superseding = holder is not None and other and not new.versioned
                if superseding and holder is not None:
                    holder.dedup_key, holder.superseded_by = None, job_id
                    s.flush()
                    s.execute(update(JobRow).where(JobRow.id == job_id)
                              .values(dedup_key=dedup_key, supersedes=holder.id, **values))
                elif holder is not None and other:
                    values["error"] = str(IdentityConflictError(
                        "meta.versionId", "the server sent other content for a known version"))
                    s.execute(update(JobRow).where(JobRow.id == job_id)
                              .values(status=FAILED, writeback=SKIPPED, **values))  # fmt: skip
                else:
                    s.execute(update(JobRow).where(JobRow.id == job_id)
                              .values(status=DONE, writeback=DONE,
                                      completions=JobRow.completions + 1, **values))  # fmt: skip
            return self.get(job_id) if superseding else None
        return self.get(job_id)

    def retry_at(self, job_id: str, error: str, at: datetime, *, writeback: bool) -> None:
        """Record a failed fetch (``error``) or write-back and when to try again."""
        with self._guard() as s:
            values: dict[str, Any] = {"next_attempt_at": at, "updated_at": _now()}
            if writeback:
                values.update(writeback_error=error,
                              writeback_attempts=JobRow.writeback_attempts + 1)  # fmt: skip
            else:
                values.update(error=error, attempts=JobRow.attempts + 1)
            s.execute(update(JobRow).where(JobRow.id == job_id).values(**values))

    def due_writebacks(self, limit: int = 16) -> list[Job]:
        """Finished subscription jobs whose results still have to reach the FHIR server."""
        now = _now()
        with self._guard() as s:
            rows = s.scalars(select(JobRow).where(
                JobRow.writeback == PENDING, JobRow.status.in_((DONE, FAILED)),
                or_(JobRow.next_attempt_at.is_(None), JobRow.next_attempt_at <= now))
                .order_by(JobRow.received_at).limit(limit))  # fmt: skip
            return [_job(r) for r in rows]

    def writeback_finished(self, job_id: str, state: str, error: str | None = None) -> None:
        with self._guard() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id)
                      .values(writeback=state, writeback_error=error, next_attempt_at=None,
                              updated_at=_now()))  # fmt: skip

    def counts(self) -> dict[str, int]:
        with self._guard() as s:
            rows = s.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all()
        got = {str(status): int(n) for status, n in rows}
        return {st: got.get(st, 0) for st in STATUSES}

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; FULL sync makes an ACK survive power loss."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
