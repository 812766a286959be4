"""Structured HL7 results (OBX NM/SN kept in ``meta["lab_results"]``) to Observations.

These are facts the sender already coded, so they travel beside the
extracted resources rather than through the model; they carry no
derivation reference because they are not spans of the note.
"""

from __future__ import annotations

import json
from typing import Any, Final

from kiwi_fhir.fhir.build import Source
from kiwi_fhir.fhir.tables import FhirMapping
from kiwi_fhir.fhir.units import number, quantity

_STATUS: Final[dict[str, str]] = {
    "F": "final",
    "P": "preliminary",
    "C": "corrected",
    "X": "cancelled",
    "D": "entered-in-error",
}
_FLAGS: Final[frozenset[str]] = frozenset({"L", "H", "LL", "HH", "N", "A", "AA"})
_INTERPRETATION: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def lab_observations(
    raw: str | None, mapping: FhirMapping, source: Source
) -> list[tuple[dict[str, Any], str]]:
    """(Observation, identifier value) per structured result; malformed values skipped."""
    if not raw:
        return []
    out: list[tuple[dict[str, Any], str]] = []
    for n, lab in enumerate(json.loads(raw), start=1):
        code: dict[str, Any] = {"text": lab.get("display") or lab.get("code", "result")}
        if lab.get("code"):
            coding = {
                "code": lab["code"],
                **({"system": lab["system"]} if lab.get("system") else {}),
            }
            code["coding"] = [coding]
        ident = f"{source.key}.lab.{lab.get('set_id', n)}.{n}"
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": [{"system": mapping.identifier_system, "value": ident}],
            "status": _STATUS.get(lab.get("status", "F"), "final"),
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": code,
            "subject": source.patient,
        }
        if source.encounter is not None:
            obs["encounter"] = source.encounter
        value = _value(lab, mapping)
        if value is not None:
            obs[value[0]] = value[1]
        if lab.get("range"):
            obs["referenceRange"] = [{"text": lab["range"]}]
        if lab.get("flag") in _FLAGS:
            obs["interpretation"] = [{"coding": [{"system": _INTERPRETATION, "code": lab["flag"]}]}]
        out.append((obs, ident))
    return out


def _value(lab: dict[str, str], mapping: FhirMapping) -> tuple[str, Any] | None:
    try:
        num = number(lab.get("value", ""))
    except ValueError:
        return ("valueString", lab["value"]) if lab.get("value") else None
    if lab.get("value2"):  # SN range "2^-^4" or ratio "1^:^128": keep as text
        sep = lab.get("separator", "-")
        return "valueString", f"{lab.get('comparator', '')}{lab['value']}{sep}{lab['value2']}"
    q = quantity(num, lab.get("unit", ""), mapping.codes)
    if lab.get("comparator") in ("<", ">", "<=", ">="):
        q["comparator"] = lab["comparator"]
    return "valueQuantity", q
