"""Whom a note is about, as Bundle entries a server can resolve.

Every resource needs a ``subject``. A literal reference the sender gave
(``Patient/1``) is used as is. An identifier *with a system* (PID-3 with a
known assigning authority, :mod:`kiwi_fhir.inputs.identifier_systems`)
becomes a ``Patient`` entry that a transaction creates only if no Patient
has that identifier (``ifNoneExist: identifier=system|value``); every
subject references it by ``fullUrl``, which the server rewrites to the
Patient it found or made. The same holds for the encounter (PV1-19).
These entries are never updated (no conditional PUT): a minimal Patient
must not overwrite the demographics a registry holds.

An identifier without a system stays a logical reference by identifier
(with the authority's name as ``assigner``): no server can match it, and a
made-up reference string would be one no server can resolve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from kiwi_fhir.source import Identifier, Ref, Source

#: PV1-2 patient class (HL7 table 0004) to Encounter.class (v3 ActCode).
_CLASS: Final = {"I": "IMP", "O": "AMB", "E": "EMER", "P": "PRENC"}
_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_NULL_FLAVOR: Final = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"


@dataclass(frozen=True)
class Parties:
    """The references every resource uses, and the entries that make them resolve."""

    patient: dict[str, Any]
    encounter: dict[str, Any] | None
    entries: tuple[dict[str, Any], ...] = ()


def parties(src: Source, bundle_type: str, full_url: Callable[[str], str]) -> Parties:
    """Patient and encounter references of one note (see the module docstring)."""
    entries: list[dict[str, Any]] = []
    patient = {"display": "patient not identified in the source document"}
    if src.patient is not None:
        patient, entry = _party("Patient", src.patient, {}, bundle_type, full_url)
        entries += entry
    encounter = None
    if src.encounter is not None:
        extra = {"status": "unknown", "class": _class(src.encounter_class), "subject": patient}
        encounter, entry = _party("Encounter", src.encounter, extra, bundle_type, full_url)
        entries += entry
    return Parties(patient, encounter, tuple(entries))


def reference(ref: Ref, resolvable: Callable[[str], bool]) -> dict[str, Any]:
    """A FHIR Reference: the literal one the sender gave when ``resolvable``,
    else by identifier (a ``urn:oid:`` system once made the literal,
    unresolvable reference ``urn:oid:1.2|123``)."""
    if ref.reference and resolvable(ref.reference):
        return {"reference": ref.reference}
    found = ref.identifier or Identifier(ref.reference)
    return {"identifier": _identifier(found)}


def _party(
    rtype: str,
    ref: Ref,
    extra: dict[str, Any],
    bundle_type: str,
    full_url: Callable[[str], str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from kiwi_fhir.fhir.bundle import resolvable

    found = ref.identifier
    if (ref.reference and resolvable(ref.reference)) or found is None or not found.system:
        return reference(ref, resolvable), []
    ident = _identifier(found)
    url = full_url(f"{rtype.lower()}.{found.token}")
    res: dict[str, Any] = {"resourceType": rtype, "identifier": [ident], **extra}
    entry: dict[str, Any] = {"fullUrl": url, "resource": res}
    if bundle_type == "transaction":
        query = f"identifier={quote(found.token, safe='')}"
        entry["request"] = {"method": "POST", "url": rtype, "ifNoneExist": query}
    else:
        res["id"] = url.rpartition(":")[2]
    return {"reference": url, "identifier": ident}, [entry]


def _identifier(found: Identifier) -> dict[str, Any]:
    ident: dict[str, Any] = {"value": found.value}
    if found.system:
        ident["system"] = found.system
    if found.assigner:
        ident["assigner"] = {"display": found.assigner}
    return ident


def _class(code: str) -> dict[str, str]:
    if code in _CLASS:
        return {"system": _ACT_CODE, "code": _CLASS[code]}
    return {"system": _NULL_FLAVOR, "code": "UNK"}
