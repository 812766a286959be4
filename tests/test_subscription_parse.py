"""Notification parsing and the jobs it makes: both dialects, all payload kinds (no server)."""

from __future__ import annotations

import base64
import json

import pytest
from test_subscription_helpers import backport_bundle

from kiwi_fhir.errors import FhirInputError
from kiwi_fhir.service import subscriptions
from kiwi_fhir.service.store import FHIRREF, SUBSCRIPTION

CRITERIA = "DocumentReference?_sort=-_lastUpdated"


def _doc(rid: str = "d1", *, url: bool = False) -> dict[str, object]:
    att = (
        {"contentType": "text/plain", "url": "Binary/b1"}
        if url
        else {"contentType": "text/plain", "data": base64.b64encode(b"Fever. No cough.").decode()}
    )
    return {"resourceType": "DocumentReference", "id": rid, "meta": {"versionId": "3"},
            "status": "current", "content": [{"attachment": att}]}  # fmt: skip


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("kind", ["handshake", "heartbeat"])
def test_handshake_and_heartbeat_make_no_jobs(kind: str) -> None:
    note = subscriptions.parse("POST", "", _body(backport_bundle(kind, [])))
    assert note.type == kind and not note.carries_event
    assert subscriptions.jobs(note, CRITERIA) == []


def test_id_only_backport_r4_parameters() -> None:
    note = subscriptions.parse("POST", "", _body(backport_bundle(
        "event-notification", ["DocumentReference/d1", "Patient/p1"], event=7)))  # fmt: skip
    assert note.references == ("DocumentReference/d1",) and note.events == ("7", "7")
    (job,) = subscriptions.jobs(note, CRITERIA)
    assert (job.source, job.kind) == (SUBSCRIPTION, FHIRREF)
    assert json.loads(job.payload) == {"reference": "DocumentReference/d1"}
    (again,) = subscriptions.jobs(note, CRITERIA)
    assert again.sha256 == job.sha256  # the same event is the same job


def test_id_only_r4b_subscription_status() -> None:
    status = {"resourceType": "SubscriptionStatus", "type": "event-notification",
              "subscription": {"reference": "Subscription/s"},
              "notificationEvent": [{"eventNumber": "4",
                                     "focus": {"reference": "DocumentReference/d9"}}]}  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "subscription-notification",
              "entry": [{"resource": status}]}  # fmt: skip
    note = subscriptions.parse("POST", "", _body(bundle))
    assert (note.subscription, note.references, note.events) == (
        "Subscription/s",
        ("DocumentReference/d9",),
        ("4",),
    )


def test_full_resource_inline_text_is_an_ordinary_docref_job() -> None:
    note = subscriptions.parse("POST", "", _body(backport_bundle(
        "event-notification", ["DocumentReference/d1"], event=1, resources=[_doc()])))  # fmt: skip
    assert note.references == () and len(note.resources) == 1
    (job,) = subscriptions.jobs(note, CRITERIA)
    assert job.kind == "docref"
    assert job.dedup_key == "subscription:anonymous|fhir:DocumentReference/d1|3"


def test_full_resource_by_url_is_fetched_later() -> None:
    note = subscriptions.parse("PUT", "DocumentReference/d1", _body(_doc(url=True)))
    (job,) = subscriptions.jobs(note, CRITERIA)
    assert job.kind == FHIRREF and json.loads(job.payload)["resource"]["id"] == "d1"


def test_empty_payloads_search_with_the_criteria() -> None:
    for note in (subscriptions.parse("POST", "", b""),
                 subscriptions.parse("POST", "", _body(backport_bundle(
                     "event-notification", [], event=2)))):  # fmt: skip
        assert note.empty
        (job,) = subscriptions.jobs(note, CRITERIA)
        assert json.loads(job.payload) == {"search": CRITERIA}


def test_absolute_and_versioned_focus_references() -> None:
    refs = ["http://fhir.example/R4/DocumentReference/a", "DocumentReference/b/_history/2",
            "Observation/c"]  # fmt: skip
    note = subscriptions.parse("POST", "", _body(backport_bundle("event-notification", refs,
                                                                 event=5)))  # fmt: skip
    assert note.references == tuple(refs[:2])


def test_other_resource_types_are_acknowledged_and_ignored() -> None:
    note = subscriptions.parse("PUT", "Patient/p1", _body({"resourceType": "Patient", "id": "p1"}))
    assert note.carries_event and subscriptions.jobs(note, CRITERIA) == []


@pytest.mark.parametrize("method,tail,body,where", [
    ("POST", "", b"{not json", "$"),
    ("POST", "", _body({"resourceType": "Patient"}), "resourceType"),
    ("POST", "", _body({"resourceType": "Bundle", "type": "history", "entry": []}), "entry"),
    ("POST", "", _body({"resourceType": "Bundle", "type": "history",
                        "entry": [{"resource": {"resourceType": "Patient"}}]}),
     "entry[0].resource.resourceType"),
    ("PUT", "DocumentReference/other", _body(_doc()), "id"),
    ("PUT", "DocumentReference/d1", b"", "$"),
])  # fmt: skip
def test_bad_notifications_name_the_path(method: str, tail: str, body: bytes, where: str) -> None:
    with pytest.raises(FhirInputError) as exc:
        subscriptions.parse(method, tail, body)
    assert exc.value.path == where and exc.value.source == "notification"
