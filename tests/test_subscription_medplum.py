"""FHIR Subscriptions end to end against a real FHIR engine (@medplum/fhir-router on Node).

The test plays the notifying FHIR server: it stores a DocumentReference on the
medplum server, sends kiwi-fhir a notification, and then searches the FHIR
server for what kiwi-fhir wrote back. The FHIR server requires SMART backend
services tokens (client credentials), so fetch and write-back go through the
token flow too.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_service_helpers import Server, start_server
from test_subscription_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    FhirServer,
    backport_bundle,
    start_fhir_server,
)

pytestmark = pytest.mark.slow
SECRET_NOTE = "PANGOLINQUARTZ-5521"  # in every note; must never reach kiwi-fhir's logs
HOOK = ("X-Kiwi-Hook", "hook-secret-1")
WRITTEN = ("Condition", "Observation", "MedicationStatement", "Procedure")


@pytest.fixture(scope="module")
def fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    srv = start_fhir_server(tmp_path_factory.mktemp("medplum"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def kiwi(fhir: FhirServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("kiwi-sub"), env={
        "KIWI_FHIR_FHIR_BASE_URL": fhir.base,
        "KIWI_FHIR_FHIR_TOKEN_URL": fhir.token_url,
        "KIWI_FHIR_FHIR_CLIENT_ID": CLIENT_ID,
        "KIWI_FHIR_FHIR_CLIENT_SECRET": CLIENT_SECRET,
        "KIWI_FHIR_SUBSCRIPTION_HEADER_NAME": HOOK[0],
        "KIWI_FHIR_SUBSCRIPTION_HEADER_VALUE": HOOK[1],
        "KIWI_FHIR_FHIR_ATTEMPTS": "2", "KIWI_FHIR_FHIR_RETRY_BASE_S": "0.5",
        "KIWI_FHIR_FHIR_RETRY_MAX_S": "2",
        # medplum runs transactions with conditional creates serializable, 8 entries at most
        "KIWI_FHIR_FHIR_TRANSACTION_MAX_ENTRIES": "8", "KIWI_FHIR_FHIR_TIMEOUT_S": "5",
    })  # fmt: skip
    yield srv
    assert srv.stop() == 0
    assert SECRET_NOTE not in srv.logs()


def _note(n: int) -> str:
    return (f"{SECRET_NOTE} visit {n}: 67-year-old with hypertension and diabetes presents with "
            "shortness of breath and chest pain. Denies fever. Lisinopril 20 mg daily. "
            "Chest x-ray showed pulmonary edema. Start furosemide 40 mg IV.")  # fmt: skip


def _docref(patient: str, text: str) -> dict[str, Any]:
    data = base64.b64encode(text.encode()).decode()
    return {"resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": patient},
            "content": [{"attachment": {"contentType": "text/plain", "data": data}}]}  # fmt: skip


def _notify(kiwi: Server, body: Any = None, *, path: str = "", method: str = "POST",
            header: tuple[str, str] | None = HOOK) -> httpx.Response:  # fmt: skip
    url = f"http://127.0.0.1:{kiwi.ports['http']}/fhir/notify{path}"
    headers = {"Content-Type": "application/fhir+json", **dict([header] if header else [])}
    return httpx.request(method, url, json=body, headers=headers, timeout=30)


def _job(kiwi: Server, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"http://127.0.0.1:{kiwi.ports['http']}/jobs/{job_id}", timeout=10)
    r.raise_for_status()
    return dict(r.json())


def _wait(kiwi: Server, job_id: str, ok: Callable[[dict[str, Any]], bool],
          timeout: float = 120) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        job = _job(kiwi, job_id)
        if ok(job):
            return job
        assert time.monotonic() < deadline, f"job never got there: {job}"
        time.sleep(0.1)


def _written_back(job: dict[str, Any]) -> bool:
    return job["writeback"] in ("done", "failed", "skipped")


def _derived_from(fhir: FhirServer, doc_ref: str) -> dict[str, list[dict[str, Any]]]:
    """Our resources on the FHIR server whose derivation reference is ``doc_ref``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rtype in WRITTEN:
        found = []
        for res in fhir.search(f"{rtype}?_count=1000"):
            subs = [x for ext in res.get("extension", []) for x in ext.get("extension", [])]
            refs = [x.get("valueReference", {}).get("reference") for x in subs]
            if doc_ref in refs:
                found.append(res)
        out[rtype] = found
    return out


def test_sender_header_handshake_and_heartbeat(kiwi: Server) -> None:
    hs = backport_bundle("handshake", [])
    assert _notify(kiwi, hs, header=None).status_code == 401
    assert _notify(kiwi, hs, header=(HOOK[0], "wrong")).status_code == 401
    for kind in ("handshake", "heartbeat"):
        r = _notify(kiwi, backport_bundle(kind, []))
        assert r.status_code == 200 and r.json() == {"type": kind, "jobs": []}
    bad = _notify(kiwi, {"resourceType": "Bundle", "type": "history", "entry": []})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_id_only_notification_is_fetched_processed_and_written_back_once(
    kiwi: Server, fhir: FhirServer
) -> None:
    patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Test"}]})
    doc = fhir.create(_docref(f"Patient/{patient['id']}", _note(1)))
    ref = f"DocumentReference/{doc['id']}"
    r = _notify(kiwi, backport_bundle("event-notification", [ref], event=1))
    assert r.status_code == 200, r.text
    (first,) = r.json()["jobs"]
    job = _wait(kiwi, first["id"], _written_back)
    assert (job["status"], job["writeback"], job["kind"]) == ("done", "done", "docref")
    written = _derived_from(fhir, ref)
    assert written["Condition"], "no Condition written back"
    assert sum(map(len, written.values())) >= 3
    for res in (r for rs in written.values() for r in rs):
        assert res["subject"] == {"reference": f"Patient/{patient['id']}"}
    provs = [p for p in fhir.search("Provenance?_count=1000")
             if p["entity"][0]["what"]["reference"] == ref]  # fmt: skip
    assert len(provs) == 1
    counts = {k: len(v) for k, v in written.items()}

    # The same event again, a new event for the same version, the full resource
    # (Backport full-resource and R4 core PUT): all recognised as the same document.
    again = _notify(kiwi, backport_bundle("event-notification", [ref], event=1)).json()["jobs"]
    assert again == [{"id": first["id"], "duplicate": True, "status": "done"}]
    other = _notify(kiwi, backport_bundle("event-notification", [ref], event=2)).json()["jobs"]
    _wait(kiwi, other[0]["id"], lambda j: j["status"] == "done")
    full = fhir.read(ref)
    r3 = _notify(kiwi, backport_bundle("event-notification", [ref], event=3, resources=[full]))
    assert r3.json()["jobs"][0]["duplicate"] is True
    r4 = _notify(kiwi, full, path=f"/{ref}", method="PUT")
    assert r4.status_code == 200 and r4.json()["jobs"][0]["duplicate"] is True

    # A new version with the same text is processed again; conditional creates
    # make its write-back create nothing.
    full["description"] = "re-indexed"
    fhir.update(full)
    r5 = _notify(kiwi, backport_bundle("event-notification", [ref], event=4))
    job5 = _wait(kiwi, r5.json()["jobs"][0]["id"], _written_back)
    assert job5["writeback"] == "done" and job5["id"] != first["id"]
    assert {k: len(v) for k, v in _derived_from(fhir, ref).items()} == counts
    assert len([p for p in fhir.search("Provenance?_count=1000")
                if p["entity"][0]["what"]["reference"] == ref]) == 1  # fmt: skip


def test_fhir_server_failures_are_retried_visibly(kiwi: Server, fhir: FhirServer) -> None:
    doc = fhir.create(_docref("Patient/outage", _note(2)))
    ref = f"DocumentReference/{doc['id']}"
    fhir.fail("GET", 4)  # the fetch fails for two rounds of two tries, then works
    fhir.fail("POST", 4)  # and so does the write-back
    r = _notify(kiwi, backport_bundle("event-notification", [ref], event=10))
    job_id = r.json()["jobs"][0]["id"]
    seen = _wait(kiwi, job_id, lambda j: j["error"] is not None or j["status"] != "received")
    assert seen["status"] == "received" and "FHIR server read: HTTP 503" in seen["error"]
    assert seen["next_attempt_at"] is not None
    seen = _wait(kiwi, job_id, lambda j: j["writeback_error"] is not None or _written_back(j))
    assert seen["writeback_error"] and "HTTP 503" in seen["writeback_error"]
    done = _wait(kiwi, job_id, _written_back)
    assert done["writeback"] == "done" and done["writeback_attempts"] >= 1
    assert _derived_from(fhir, ref)["Condition"]


def test_empty_notification_searches_and_skips_known_documents(
    kiwi: Server, fhir: FhirServer
) -> None:
    doc = fhir.create(_docref("Patient/empty", _note(3)))
    ref = f"DocumentReference/{doc['id']}"
    r = _notify(kiwi)  # R4 core: an empty POST
    assert r.status_code == 200 and len(r.json()["jobs"]) == 1
    deadline = time.monotonic() + 120
    while not _derived_from(fhir, ref)["Condition"]:
        assert time.monotonic() < deadline, "the searched document was never written back"
        time.sleep(0.3)
    before = {k: len(v) for k, v in _derived_from(fhir, ref).items()}
    r2 = _notify(kiwi, backport_bundle("event-notification", [], event=20))  # payload 'empty'
    _wait(kiwi, r2.json()["jobs"][0]["id"], _written_back)
    time.sleep(1.5)  # give any (wrongly) new job the chance to write
    assert {k: len(v) for k, v in _derived_from(fhir, ref).items()} == before


def test_r4_core_put_with_the_resource_is_processed_without_fetching(
    kiwi: Server, fhir: FhirServer
) -> None:
    doc = fhir.create(_docref("Patient/put", _note(5)))
    ref = f"DocumentReference/{doc['id']}"
    fhir.fail("GET", 10_000)  # proves no fetch was needed
    try:
        r = _notify(kiwi, doc, path=f"/{ref}", method="PUT")
        assert r.status_code == 200 and r.json()["jobs"][0]["duplicate"] is False
        job = _wait(kiwi, r.json()["jobs"][0]["id"], _written_back)
    finally:
        fhir.fail("GET", 0)
    assert (job["kind"], job["writeback"]) == ("docref", "done")
    assert _derived_from(fhir, ref)["Condition"]


def test_unreadable_focus_fails_the_job_without_retrying(kiwi: Server, fhir: FhirServer) -> None:
    r = _notify(kiwi, backport_bundle("event-notification", ["DocumentReference/nope"], event=30))
    job = _wait(kiwi, r.json()["jobs"][0]["id"], _written_back)
    assert (job["status"], job["writeback"]) == ("failed", "skipped")
    assert "HTTP 404" in job["error"]


def test_parked_fetch_survives_a_crash(fhir: FhirServer, tmp_path: Path) -> None:
    """kill -9 while the FHIR server is down: the restarted service fetches and writes back."""
    env = {"KIWI_FHIR_FHIR_BASE_URL": fhir.base, "KIWI_FHIR_FHIR_TOKEN_URL": fhir.token_url,
           "KIWI_FHIR_FHIR_CLIENT_ID": CLIENT_ID, "KIWI_FHIR_FHIR_CLIENT_SECRET": CLIENT_SECRET,
           "KIWI_FHIR_SUBSCRIPTION_HEADER_NAME": HOOK[0],
           "KIWI_FHIR_SUBSCRIPTION_HEADER_VALUE": HOOK[1], "KIWI_FHIR_FHIR_ATTEMPTS": "1",
           "KIWI_FHIR_FHIR_RETRY_BASE_S": "0.3", "KIWI_FHIR_FHIR_RETRY_MAX_S": "1",
           "KIWI_FHIR_FHIR_TRANSACTION_MAX_ENTRIES": "8"}  # fmt: skip
    doc = fhir.create(_docref("Patient/crash", _note(4)))
    ref = f"DocumentReference/{doc['id']}"
    first = start_server(tmp_path, tag="first", env=env)
    try:
        fhir.fail("GET", 10_000)
        r = _notify(first, backport_bundle("event-notification", [ref], event=40))
        job_id = r.json()["jobs"][0]["id"]
        parked = _wait(first, job_id, lambda j: j["attempts"] >= 2)
        assert parked["status"] == "received" and "HTTP 503" in parked["error"]
    finally:
        first.kill()
        fhir.fail("GET", 0)
    second = start_server(tmp_path, tag="second", env=env)
    try:
        done = _wait(second, job_id, _written_back)
        assert (done["status"], done["writeback"]) == ("done", "done")
        assert _derived_from(fhir, ref)["Condition"]
    finally:
        assert second.stop() == 0
    assert SECRET_NOTE not in first.logs() + second.logs()


def test_fetched_note_over_the_note_limit_fails_without_retrying(
    kiwi: Server, fhir: FhirServer
) -> None:
    """Regression (hardening item 10): fetched notes were not held to ``max_note_bytes``."""
    doc = fhir.create(_docref("Patient/big", _note(7) + " x" * 40_000))
    ref = f"DocumentReference/{doc['id']}"
    r = _notify(kiwi, backport_bundle("event-notification", [ref], event=40))
    job = _wait(kiwi, r.json()["jobs"][0]["id"], _written_back)
    assert (job["status"], job["writeback"]) == ("failed", "skipped")
    assert "exceeds the limit of 65536 bytes" in job["error"]
    assert not any(_derived_from(fhir, ref).values())
