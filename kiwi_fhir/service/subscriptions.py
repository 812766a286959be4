"""FHIR rest-hook notifications -> intake jobs.

Two dialects arrive at the same endpoint:

* R4 core: an empty POST ("something matched: go and look"), or the resource
  itself, ``PUT [endpoint]/DocumentReference/[id]``;
* the R4B / R4 Subscriptions Backport: a ``history`` (R4) or
  ``subscription-notification`` (R4B) Bundle whose first entry is the status
  (``Parameters`` or ``SubscriptionStatus``) and whose payload is ``empty``,
  ``id-only`` (references) or ``full-resource``. ``handshake`` and
  ``heartbeat`` carry no event: they are answered 200 and store nothing.

Each named DocumentReference becomes one job. A resource we already hold is
an ordinary ``docref`` job (dedup on ``id|versionId``); a reference is an
``fhirref`` job that the subscription worker fetches later -- storing first
and fetching after the 200 means a FHIR server that is slow or down never
costs a notification. An ``empty`` one becomes an ``fhirref`` job carrying
the configured search. Only DocumentReferences are processed; other focus
types ride along and are ignored.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kiwi_fhir.errors import FhirInputError
from kiwi_fhir.inputs import jsonin
from kiwi_fhir.service import intake
from kiwi_fhir.service.store import FHIRREF, SUBSCRIPTION, NewJob

_SRC: Final = "notification"
_NO_EVENT: Final = frozenset({"handshake", "heartbeat", "query-status"})
_BUNDLE_TYPES: Final = frozenset({"history", "subscription-notification"})


@dataclass(frozen=True)
class Notification:
    type: str  # handshake | heartbeat | event-notification | query-event | rest-hook
    subscription: str = ""
    references: tuple[str, ...] = ()  # id-only focus references
    resources: tuple[dict[str, Any], ...] = ()  # full-resource payloads
    events: tuple[str, ...] = ()  # event numbers, part of the fetch jobs' identity
    empty: bool = False  # nothing named: search with the configured criteria

    @property
    def carries_event(self) -> bool:
        return self.type not in _NO_EVENT


@dataclass
class _Status:
    type: str = "event-notification"
    subscription: str = ""
    focus: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def parse(method: str, tail: str, body: bytes) -> Notification:
    """The notification in a request to ``[endpoint]/<tail>``; FhirInputError names the path."""
    if not body.strip():
        if method == "PUT":
            raise FhirInputError("$", "PUT without a resource", source=_SRC)
        return Notification("rest-hook", empty=True)
    obj = jsonin.loads(body, source=_SRC)
    if not isinstance(obj, dict):
        raise FhirInputError("$", "expected a JSON object", source=_SRC)
    rtype = obj.get("resourceType")
    if rtype == "DocumentReference":  # R4 core with payload (PUT [endpoint]/Type/id)
        if tail and tail != f"DocumentReference/{obj.get('id')}":
            raise FhirInputError("id", "does not match the request path", source=_SRC)
        return Notification("rest-hook", resources=(obj,))
    if tail and isinstance(rtype, str) and tail.startswith(f"{rtype}/"):
        return Notification("rest-hook")  # another type matched the criteria: not ours
    if rtype != "Bundle" or obj.get("type") not in _BUNDLE_TYPES:
        raise FhirInputError("resourceType", "expected a subscription notification Bundle",
                             source=_SRC)  # fmt: skip
    entries = obj.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise FhirInputError("entry", "notification Bundle without a status entry", source=_SRC)
    st = _status(entries[0].get("resource"))
    refs: list[str] = []
    resources: list[dict[str, Any]] = []
    for entry in entries[1:]:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "DocumentReference":
            resources.append(res)
        elif isinstance(entry, dict) and isinstance(entry.get("fullUrl"), str):
            refs.append(entry["fullUrl"])
    held = tuple(f"DocumentReference/{r.get('id')}" for r in resources)
    refs = [r for r in dict.fromkeys(st.focus + refs) if _is_docref(r) and not r.endswith(held)]
    empty = st.type not in _NO_EVENT and not refs and not resources
    return Notification(st.type, st.subscription, tuple(refs), tuple(resources),
                        tuple(st.events), empty)  # fmt: skip


def _is_docref(ref: str) -> bool:
    """``[base/]DocumentReference/id[/_history/v]``, relative or absolute."""
    parts = ref.split("?")[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return len(parts) >= 2 and parts[-2] == "DocumentReference" and bool(parts[-1])


def _status(res: Any) -> _Status:
    """Backport ``Parameters`` (R4) or ``SubscriptionStatus`` (R4B)."""
    where = "entry[0].resource"
    if not isinstance(res, dict):
        raise FhirInputError(where, "missing status resource", source=_SRC)
    st = _Status()
    if res.get("resourceType") == "SubscriptionStatus":
        st.type = str(res.get("type") or st.type)
        st.subscription = str((res.get("subscription") or {}).get("reference", ""))
        for ev in res.get("notificationEvent") or []:
            if isinstance(ev, dict):
                _event(st, (ev.get("focus") or {}).get("reference"), ev.get("eventNumber"))
        return st
    if res.get("resourceType") != "Parameters":
        raise FhirInputError(f"{where}.resourceType", "expected Parameters or SubscriptionStatus",
                             source=_SRC)  # fmt: skip
    for p in res.get("parameter") or []:
        if not isinstance(p, dict):
            continue
        name = p.get("name")
        if name == "type":
            st.type = str(p.get("valueCode") or st.type)
        elif name == "subscription":
            st.subscription = str((p.get("valueReference") or {}).get("reference", ""))
        elif name == "notification-event":
            parts = {q.get("name"): q for q in p.get("part") or [] if isinstance(q, dict)}
            focus = (parts.get("focus") or {}).get("valueReference") or {}
            num = parts.get("event-number") or {}
            _event(st, focus.get("reference"), num.get("valueString") or num.get("valueInteger64"))
    return st


def _event(st: _Status, focus: Any, number: Any) -> None:
    if isinstance(focus, str) and focus:
        st.focus.append(focus)
    if number is not None:
        st.events.append(str(number))


def jobs(note: Notification, criteria: str) -> list[NewJob]:
    """The intake jobs one notification makes (none for handshake / heartbeat)."""
    if not note.carries_event:
        return []
    out: list[NewJob] = []
    for res in note.resources:
        if _by_url(res):  # the text is on the server: fetch it like an id-only event
            out.append(fetch_job({"reference": f"DocumentReference/{res.get('id')}",
                                  "resource": res}, key=_version_key(res)))  # fmt: skip
        else:
            out.append(intake.docref_job(json.dumps(res), SUBSCRIPTION))
    for ref in note.references:
        # Without an event number nothing tells a re-sent event from a new version
        # of the document: make the job unique; the fetch dedups on id|versionId.
        event = "|".join(note.events) or str(uuid.uuid4())
        out.append(fetch_job({"reference": ref}, key=f"{note.subscription}|{event}|{ref}"))
    if note.empty:
        out.append(fetch_job({"search": criteria}, key=str(uuid.uuid4())))
    return out


def fetch_job(task: Mapping[str, Any], *, key: str) -> NewJob:
    payload = json.dumps(task, sort_keys=True).encode("utf-8")
    digest = hashlib.sha256(b"fhirref\0" + key.encode("utf-8")).hexdigest()
    return NewJob(SUBSCRIPTION, FHIRREF, payload, digest)


def _by_url(res: Mapping[str, Any]) -> bool:
    content = res.get("content")
    atts = [c.get("attachment") for c in content if isinstance(c, dict)] if isinstance(
        content, list) else []  # fmt: skip
    return bool(atts) and all(isinstance(a, dict) and "data" not in a and "url" in a for a in atts)


def _version_key(res: Mapping[str, Any]) -> str:
    meta = res.get("meta")
    version = meta.get("versionId", "") if isinstance(meta, dict) else ""
    return f"DocumentReference/{res.get('id')}|{version}"
