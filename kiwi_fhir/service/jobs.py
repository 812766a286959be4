"""What the service's job store hands out and takes in: frozen values and
the job states, free of SQLAlchemy (``store`` is the only module that sees
rows). Callers keep using them as ``store.Job`` etc.; ``store`` imports them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

RECEIVED: Final = "received"
PENDING: Final = "pending"  # writeback states: pending -> done | failed | skipped
SKIPPED: Final = "skipped"
PROCESSING: Final = "processing"
DONE: Final = "done"
FAILED: Final = "failed"
STATUSES: Final = (RECEIVED, PROCESSING, DONE, FAILED)
SUBSCRIPTION: Final = "subscription"
FHIRREF: Final = "fhirref"  # kind: a reference still to be fetched (then rewritten to docref)


@dataclass(frozen=True)
class NewJob:
    """A validated payload, not yet stored (built by :mod:`.intake`)."""

    source: str  # grpc | mllp | subscription
    kind: str  # text | hl7 | docref
    payload: bytes
    sha256: str
    dedup_key: str | None = None
    params: str = "{}"  # JSON: references that travel with a text payload
    owner: str = ""  # channel:principal; already folded into sha256 and dedup_key
    #: True when the identity names one immutable version (MSH-10, versionId):
    #: other content under it is a conflict; False lets it supersede.
    versioned: bool = True
    #: Which field carries the identity, for the conflict error (never its value).
    identity_field: str = ""
    #: Hash of what would be extracted (notes, patient): equal under one
    #: identity means a resend, even when the bytes differ.
    content_sha256: str | None = None
    #: UTF-8 size of the longest note in the payload (checked against max_note_bytes).
    longest_note: int = 0
    #: What the payload held that will not become output (named in the ACK / response).
    warnings: tuple[str, ...] = ()
    #: The sender's identity of the document across its versions (owner-scoped;
    #: None when the payload holds no single identified document).
    doc_key: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """What processing one job came to, as :meth:`IntakeStore.finish` records it."""

    job_id: str
    status: str  # DONE or FAILED
    error: str | None = None  # the public message of a failure
    result: str = ""  # the result JSON; empty when failed
    model: str = ""  # model id and backend of the extraction; empty when failed
    backend: str = ""


@dataclass(frozen=True)
class Job:
    id: str
    source: str
    kind: str
    payload: bytes
    sha256: str
    dedup_key: str | None
    params: str
    received_at: datetime
    status: str
    error: str | None
    result: str | None  # JSON {"bundle": ..., "documents": [...]}
    model_id: str | None
    backend: str | None
    attempts: int
    completions: int
    writeback: str | None = None
    writeback_attempts: int = 0
    writeback_error: str | None = None
    next_attempt_at: datetime | None = None
    owner: str | None = None
    superseded_by: str | None = None
    supersedes: str | None = None
    content_sha256: str | None = None
    doc_key: str | None = None
