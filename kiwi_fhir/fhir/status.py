"""A document's status, carried into the resources extracted from it.

A fact from a dictated, not yet signed note is not a confirmed diagnosis,
and a retracted note's facts must be withdrawn, not left standing. Senders
say where a document stands in several places; they are folded here into
one :class:`Standing`:

=================  ==========================================================
``preliminary``    TXA-17 DI/DO/IP/IN/PA (table 0271), OBR-25 P/R/I/S/A
                   (table 0123), ``docStatus`` preliminary
``amended``        OBR-25 C, ``docStatus`` amended, MDM T07-T10 (edit,
                   replace)
``entered-in-error``  OBR-25 X, ``docStatus`` / ``status`` entered-in-error,
                   MDM T11 (cancel)
``final``          anything else (TXA-17 AU/LA, OBR-25 F, nothing said)
=================  ==========================================================

What each standing changes:

- preliminary: a Condition the note asserts becomes ``provisional`` (a
  refuted one stays refuted), Observations ``preliminary``; the
  DocumentReference of the text gets ``docStatus`` preliminary.
- amended: Observations ``amended``; ``docStatus`` amended.
- entered-in-error: every resource is marked entered-in-error (each type's
  own element) and so is the DocumentReference.

When the sender stated a status at all, a transaction Bundle *updates* each
resource by its identifier (conditional PUT) instead of creating it only if
absent, so a later version of the same note (preliminary, then signed; or
cancelled) changes the resources an earlier one created. Without a stated
status the Bundle keeps ``ifNoneExist``, so a plain resend changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from kiwi_fhir.source import DocumentEvent, Source


class Standing(StrEnum):
    FINAL = "final"
    PRELIMINARY = "preliminary"
    AMENDED = "amended"
    ENTERED_IN_ERROR = "entered-in-error"


_TXA17_PRELIMINARY: Final = frozenset({"DI", "DO", "IP", "IN", "PA"})
_OBR25: Final[dict[str, Standing]] = {
    **{c: Standing.PRELIMINARY for c in ("P", "R", "I", "S", "A")},
    "C": Standing.AMENDED,
    "X": Standing.ENTERED_IN_ERROR,
    "F": Standing.FINAL,
}
_EVENTS: Final[dict[DocumentEvent, Standing]] = {
    DocumentEvent.EDIT: Standing.AMENDED,
    DocumentEvent.REPLACE: Standing.AMENDED,
    DocumentEvent.CANCEL: Standing.ENTERED_IN_ERROR,
}
_VER_STATUS: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def standing(source: Source) -> Standing:
    """The strongest statement wins: retracted over amended over preliminary."""
    found = {Standing.FINAL}
    doc = source.document_status.strip()
    if doc.upper() in _TXA17_PRELIMINARY or doc.lower() == "preliminary":
        found.add(Standing.PRELIMINARY)
    if doc.lower() in ("amended", "entered-in-error"):
        found.add(Standing(doc.lower()))
    if (result := source.result_status.strip().upper()) in _OBR25:
        found.add(_OBR25[result])
    if source.reference_status == "entered-in-error":
        found.add(Standing.ENTERED_IN_ERROR)
    if source.event is not None and source.event in _EVENTS:
        found.add(_EVENTS[source.event])
    for s in (Standing.ENTERED_IN_ERROR, Standing.AMENDED, Standing.PRELIMINARY):
        if s in found:
            return s
    return Standing.FINAL


def stated(source: Source) -> bool:
    """Whether the sender said anything about the document's status."""
    return source.status_stated


def apply(res: dict[str, Any], s: Standing) -> None:
    """Mark one extracted resource (in place) with the document's standing."""
    if s is Standing.FINAL:
        return
    rtype = res.get("resourceType")
    if rtype == "Condition":
        code = _ver_code(res)
        if s is Standing.ENTERED_IN_ERROR:
            res["verificationStatus"] = _ver("entered-in-error")
            res.pop("clinicalStatus", None)  # not allowed with entered-in-error (con-5)
        elif s is Standing.PRELIMINARY and code == "confirmed":
            res["verificationStatus"] = _ver("provisional")
    elif rtype in ("Observation", "DiagnosticReport"):
        if s is Standing.ENTERED_IN_ERROR:
            res["status"] = "entered-in-error"
        elif res.get("status") in ("final", None):
            res["status"] = s.value
    elif rtype in ("MedicationStatement", "Procedure", "FamilyMemberHistory", "ServiceRequest"):
        if s is Standing.ENTERED_IN_ERROR:
            res["status"] = "entered-in-error"
    elif rtype == "DocumentReference":
        if s is Standing.ENTERED_IN_ERROR:
            res["status"] = "entered-in-error"
        res["docStatus"] = s.value


def _ver(code: str) -> dict[str, Any]:
    return {"coding": [{"system": _VER_STATUS, "code": code}]}


def _ver_code(res: Mapping[str, Any]) -> str:
    codings = (res.get("verificationStatus") or {}).get("coding") or [{}]
    return str(codings[0].get("code", ""))
