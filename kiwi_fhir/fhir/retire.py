"""Withdraw what an earlier version of a note made, when a new version arrives.

Every resource's identifier contains the document key (source identity +
text hash, :func:`kiwi_fhir.fhir.bundle.document_key`), so an edited note
(MDM T07/T08, a T09/T10 replacement, a T11 cancellation, a new FHIR
version with other text) maps to *new* resources, and the old version's
Conditions and Observations would otherwise stand beside them. The
service keeps each job's Bundle, so for the previous version's job it
knows exactly which resources it made; :func:`retire` adds to the new
Bundle a conditional update of each of them that the new Bundle does not
make again:

- the DocumentReference of the old text becomes ``superseded`` (it was a
  real document, just not the current one), and the new text's
  DocumentReference gets ``relatesTo: replaces`` it;
- every extracted or lab resource is marked ``entered-in-error`` the way
  :mod:`.status` does for a cancelled note (each type's own element):
  FHIR R4 has no "retired" status for a Condition, and the facts that still
  hold are restated by the new version's resources.

Provenance of the old version is left alone: it records what happened;
so are its Patient and Encounter entries.
Only transaction Bundles are changed (a collection is not applied by a
server, so there is nothing to update).
"""

from __future__ import annotations

import copy
from typing import Any, Final
from urllib.parse import quote

from kiwi_fhir.fhir import status

#: Left alone: what happened (Provenance), and who it is about (a Patient or
#: Encounter entry is only ever created if absent, never overwritten).
_KEEP: Final = frozenset({"Provenance", "Patient", "Encounter"})


def _token(res: dict[str, Any]) -> str | None:
    idents = res.get("identifier") or []
    if not idents:
        return None
    return f"{idents[0].get('system', '')}|{idents[0].get('value', '')}"


def retire(new: dict[str, Any], old: dict[str, Any], document_system: str) -> list[str]:
    """Add to transaction Bundle ``new`` (in place) the retirement of what
    ``old`` made and ``new`` does not; returns the identifier tokens retired.

    ``document_system`` is the identifier system of our own text
    DocumentReferences, so the old one can be told from extracted resources.
    """
    if new.get("type") != "transaction" or old.get("type") != "transaction":
        return []
    made = {_token(e["resource"]) for e in new.get("entry", [])}
    retired: list[str] = []
    old_text: str | None = None
    for entry in old.get("entry", []):
        res = copy.deepcopy(entry["resource"])
        token = _token(res)
        if res.get("resourceType") in _KEEP or token is None or token in made:
            continue
        rtype = res["resourceType"]
        if rtype == "DocumentReference":
            ours = res["identifier"][0].get("system") == document_system
            # the old version's own text, not one it retired in turn (v1 in v2's Bundle)
            if ours and old_text is None and res.get("status") != "superseded":
                old_text = entry["fullUrl"]
            res["status"] = "superseded"
        else:
            status.apply(res, status.Standing.ENTERED_IN_ERROR)
        query = f"identifier={quote(token, safe='')}"
        new["entry"].append({"fullUrl": entry["fullUrl"], "resource": res,
                             "request": {"method": "PUT", "url": f"{rtype}?{query}"}})  # fmt: skip
        retired.append(token)
    if old_text is not None:
        _link(new, old_text, document_system)
    return retired


def _link(new: dict[str, Any], old_url: str, document_system: str) -> None:
    """``relatesTo: replaces`` from the new text's DocumentReference to the old
    one (its fullUrl: the same transaction updates it, so the server resolves
    it), unless the note already names its parent."""
    for entry in new["entry"]:
        res = entry["resource"]
        if res.get("resourceType") != "DocumentReference" or entry.get("fullUrl") == old_url:
            continue
        if res["identifier"][0].get("system") != document_system:
            continue
        relates = res.setdefault("relatesTo", [])
        if not any(r.get("code") in ("replaces", "appends") for r in relates):
            relates.append({"code": "replaces", "target": {"reference": old_url}})
        return
