"""Durable intake store on SQLite and (when configured) PostgreSQL; intake keys; settings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
from test_service_helpers import HL7_DIR, db_url_for

from kiwi_fhir.errors import (
    ConfigError,
    HL7Error,
    IdentityConflictError,
    InvalidFieldError,
    JobNotFoundError,
    OverloadedError,
    StoreError,
)  # fmt: skip
from kiwi_fhir.service import intake, store
from kiwi_fhir.service.settings import load_settings
from kiwi_fhir.service.status import outcome


@pytest.fixture(params=["sqlite", "postgresql"])
def st(request: pytest.FixtureRequest, tmp_path: Path) -> store.IntakeStore:
    s = store.IntakeStore(db_url_for(request.param, tmp_path))
    s.migrate()
    s.migrate()  # idempotent
    yield s
    s.close()


def _new(payload: bytes, key: str | None = None, *, versioned: bool = True) -> store.NewJob:
    return store.NewJob("grpc", "text", payload, hashlib.sha256(payload).hexdigest(), key,
                        owner="grpc:anonymous", versioned=versioned,
                        identity_field="MSH-10")  # fmt: skip


def test_submit_dedups_by_hash_and_refuses_a_reused_versioned_key(st: store.IntakeStore) -> None:
    a, created = st.submit(_new(b"note one", "hl7:A|B|1"))
    assert created and a.status == store.RECEIVED
    with pytest.raises(IdentityConflictError) as conflict:  # regression: was the old job
        st.submit(_new(b"note one, resent with changes", "hl7:A|B|1"))
    assert conflict.value.where == "MSH-10" and outcome(conflict.value).ack == "AE"
    assert outcome(conflict.value).grpc_code == grpc.StatusCode.ALREADY_EXISTS
    same_hash, created3 = st.submit(_new(b"note one"))
    assert not created3 and same_hash.id == a.id
    same_both, created4 = st.submit(_new(b"note one", "hl7:A|B|1"))
    assert not created4 and same_both.id == a.id
    other, created5 = st.submit(_new(b"note two", "hl7:A|B|2"))
    assert created5 and other.id != a.id
    assert st.counts() == {"received": 2, "processing": 0, "done": 0, "failed": 0}


def test_an_unversioned_identity_with_new_content_supersedes(st: store.IntakeStore) -> None:
    old, _ = st.submit(_new(b"v1 text", "fhir:DocumentReference/d1|", versioned=False))
    new, created = st.submit(_new(b"v2 text", "fhir:DocumentReference/d1|", versioned=False))
    assert created and new.id != old.id and new.supersedes == old.id
    assert st.get(old.id).superseded_by == new.id and st.get(old.id).dedup_key is None
    again, created2 = st.submit(_new(b"v2 text", "fhir:DocumentReference/d1|", versioned=False))
    assert not created2 and again.id == new.id
    third, _ = st.submit(_new(b"v3 text", "fhir:DocumentReference/d1|", versioned=False))
    assert st.get(new.id).superseded_by == third.id and third.supersedes == new.id


def test_finish_completes_exactly_once_and_pending_lists_unfinished(st: store.IntakeStore) -> None:
    a, _ = st.submit(_new(b"a"))
    b, _ = st.submit(_new(b"b"))
    st.mark_processing([a.id, b.id])
    assert {j.id for j in st.pending()} == {a.id, b.id}
    st.finish([store.JobOutcome(a.id, store.DONE, None, '{"bundle": {}, "documents": []}',
                                "m1", "onnx")])  # fmt: skip
    again = st.finish([store.JobOutcome(a.id, store.DONE, None, "{}", "m2", "onnx")])  # a replay
    assert again[0].completions == 1 and again[0].model_id == "m1"
    assert again[0].backend == "onnx"
    st.finish([store.JobOutcome(b.id, store.FAILED, "OBX-5: bad")])
    got = st.get(b.id)
    assert got.status == store.FAILED and got.error == "OBX-5: bad" and got.attempts == 1
    assert st.pending() == []
    with pytest.raises(JobNotFoundError):
        st.get("no-such-job")


def test_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    s = store.IntakeStore("postgresql+psycopg://nobody:x@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError) as err:
        s.submit(_new(b"secret note text"))
    assert "secret note text" not in str(err.value)


def test_intake_keys_and_refusals() -> None:
    raw = (HL7_DIR / "svc_oru_progress.hl7").read_bytes()
    job = intake.hl7_job(raw, "mllp")
    assert job.dedup_key == "mllp:anonymous|hl7:KIWITEST|WARD7|SVC0001" and job.kind == "hl7"
    # Another caller's identical message is another job: dedup never crosses callers.
    theirs = intake.hl7_job(raw, "demo")
    assert theirs.sha256 != job.sha256 and theirs.dedup_key != job.dedup_key
    assert intake.hl7_job(raw, "mllp", "cert:ab").sha256 != job.sha256
    with pytest.raises(HL7Error) as wrong:
        intake.hl7_job((HL7_DIR / "svc_adt_a01.hl7").read_bytes(), "mllp")
    assert outcome(wrong.value).ack == "AR"
    with pytest.raises(HL7Error) as no_text:
        intake.hl7_job((HL7_DIR / "svc_oru_no_narrative.hl7").read_bytes(), "mllp")
    assert outcome(no_text.value).ack == "AE"
    with pytest.raises(InvalidFieldError):
        intake.text_job("   ", "", "", "", "grpc")
    t1 = intake.text_job("Fever.", "Patient/1", "", "", "grpc")
    t2 = intake.text_job("Fever.", "Patient/2", "", "", "grpc")
    assert t1.sha256 != t2.sha256  # same text, other patient: not a duplicate
    dr = ('{"resourceType": "DocumentReference", "id": "d1", "meta": {"versionId": "3"}, '
          '"status": "current", "content": [{"attachment": {"contentType": "text/plain", '
          '"data": "RmV2ZXIu"}}]}')  # fmt: skip
    versioned = intake.docref_job(dr, "grpc")
    assert versioned.dedup_key == "grpc:anonymous|fhir:DocumentReference/d1|3"
    assert versioned.versioned and versioned.identity_field == "meta.versionId"
    bare = intake.docref_job(dr.replace('"meta": {"versionId": "3"}, ', ""), "grpc")
    assert bare.dedup_key == "grpc:anonymous|fhir:DocumentReference/d1|" and not bare.versioned


def test_status_table_maps_every_service_error() -> None:
    assert outcome(OverloadedError("x")).grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert outcome(StoreError("x")).grpc_code == grpc.StatusCode.UNAVAILABLE
    assert outcome(StoreError("x")).ack == "AR"
    assert outcome(JobNotFoundError("j")).grpc_code == grpc.StatusCode.NOT_FOUND
    assert outcome(HL7Error("bad", segment="OBX", field="5")).ack == "AE"
    assert outcome(ValueError("x")).grpc_code == grpc.StatusCode.INTERNAL


def test_settings_precedence_and_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "kiwi.yaml"
    cfg.write_text("grpc_port: 6000\nmllp-port: 6001\nbatch_max_size: 4\n")
    monkeypatch.setenv("KIWI_FHIR_MLLP_PORT", "7001")
    s = load_settings(cfg, grpc_port=None, db="postgresql://u:p@127.0.0.1/db")
    assert (s.grpc_port, s.mllp_port, s.batch_max_size) == (6000, 7001, 4)
    assert s.db.startswith("postgresql+psycopg://")
    assert load_settings(cfg, grpc_port=5000).grpc_port == 5000
    cfg.write_text("batch_max_size: 0\n")
    with pytest.raises(ConfigError, match="batch_max_size"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="tls"):
        load_settings(None, tls_cert=tmp_path / "c.pem")
    with pytest.raises(ConfigError):
        load_settings(None, no_such_setting=1)


def test_migrations_match_the_orm_model(st: store.IntakeStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with st.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), store.Base.metadata)
    assert diff == [], "the ORM model changed without an Alembic revision"


def test_safe_defaults_demo_off_and_no_open_network_listener() -> None:
    """Regression: 0.0.0.0 with no token and the demo on was the container default."""
    s = load_settings(None)
    assert (s.host, s.demo, s.metrics) == ("127.0.0.1", False, "open")
    for host in ("0.0.0.0", "10.1.2.3", "::", "kiwi.example.org"):
        with pytest.raises(ConfigError, match="not a loopback address: set auth_token"):
            load_settings(None, host=host)
    assert load_settings(None, host="0.0.0.0", auth_token="t").auth_token is not None
    for host in ("localhost", "127.0.0.2", "::1"):
        assert load_settings(None, host=host).host == host
    with pytest.raises(ConfigError, match="metrics=token needs auth_token"):
        load_settings(None, metrics="token")


def test_a_resend_with_other_bytes_but_the_same_notes_is_a_duplicate(
    st: store.IntakeStore,
) -> None:
    """Engines re-stamp MSH-7 on resend: same MSH-10, same notes -> the stored job."""
    raw = (HL7_DIR / "svc_oru_progress.hl7").read_bytes()
    first, _ = st.submit(intake.hl7_job(raw, "mllp"))
    restamped = raw.replace(b"|20261130", b"|20261201", 1)
    assert restamped != raw
    again, created = st.submit(intake.hl7_job(restamped, "mllp"))
    assert not created and again.id == first.id
    edited = raw.replace(b"No chest pain.", b"Mild chest pain.")
    assert edited != raw
    with pytest.raises(IdentityConflictError):
        st.submit(intake.hl7_job(edited, "mllp"))
