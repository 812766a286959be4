"""Structured HL7 results (OBX NM/SN/CWE/DT... kept in ``meta["lab_results"]``)
to Observations, and each OBR group of them to a DiagnosticReport.

These are facts the sender already coded, so they travel beside the
extracted resources rather than through the model; they carry no
derivation reference because they are not spans of the note. Codes the
sender gave (OBX-3, OBR-4, CWE values) are passed through as they came.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from kiwi_fhir.fhir.build import Source
from kiwi_fhir.fhir.tables import FhirMapping
from kiwi_fhir.fhir.units import number, quantity
from kiwi_fhir.fhir.values import reference_range

_STATUS: Final[dict[str, str]] = {
    "F": "final",
    "P": "preliminary",
    "C": "corrected",
    "X": "cancelled",
    "D": "entered-in-error",
}
_REPORT_STATUS: Final[dict[str, str]] = {
    "F": "final", "P": "preliminary", "C": "corrected", "X": "cancelled", "R": "registered",
    "I": "registered", "S": "partial", "A": "partial",
}  # fmt: skip
_DR_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/v2-0074"
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
        if lab.get("date") or lab.get("report_date"):
            obs["effectiveDateTime"] = lab.get("date") or lab["report_date"]
        if lab.get("range"):
            obs["referenceRange"] = [_range(lab["range"], lab.get("unit", ""), mapping)]
        if lab.get("flag") in _FLAGS:
            obs["interpretation"] = [{"coding": [{"system": _INTERPRETATION, "code": lab["flag"]}]}]
        out.append((obs, ident))
    return out


def diagnostic_reports(
    raw: str | None, observations: list[tuple[dict[str, Any], str]], source: Source,
    mapping: FhirMapping, full_url: Any,
) -> list[tuple[dict[str, Any], str]]:  # fmt: skip
    """One DiagnosticReport per OBR group of results, referencing its Observations."""
    if not raw:
        return []
    groups: dict[str, tuple[dict[str, str], list[str]]] = {}
    for lab, (_obs, ident) in zip(json.loads(raw), observations, strict=True):
        if "report_set" in lab:
            groups.setdefault(lab["report_set"], (lab, []))[1].append(ident)
    out: list[tuple[dict[str, Any], str]] = []
    for set_id, (lab, idents) in groups.items():
        code: dict[str, Any] = {"text": lab.get("report_display") or lab.get("report_code")
                                or "laboratory report"}  # fmt: skip
        if lab.get("report_code"):
            code["coding"] = [{"code": lab["report_code"],
                               **({"system": lab["report_system"]}
                                  if lab.get("report_system") else {})}]  # fmt: skip
        ident = f"{source.key}.report.{set_id}"
        dr: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": mapping.identifier_system, "value": ident}],
            "status": _REPORT_STATUS.get(lab.get("report_status", "F"), "final"),
            "category": [{"coding": [{"system": _DR_CATEGORY, "code": "LAB"}]}],
            "code": code,
            "subject": source.patient,
            "result": [{"reference": full_url(i)} for i in idents],
        }
        if source.encounter is not None:
            dr["encounter"] = source.encounter
        if lab.get("report_date"):
            dr["effectiveDateTime"] = lab["report_date"]
        out.append((dr, ident))
    return out


def _range(text: str, unit: str, mapping: FhirMapping) -> dict[str, Any]:
    """``4.3-6.2``, ``4.3 to 6.2``, ``70_105``, ``<5``, ``>=10``: low/high with OBX-6's unit."""
    t = text.strip().replace("_", "-") if re.fullmatch(r"[\d.]+_[\d.]+", text.strip()) else text
    ((_kind, rr),) = reference_range(t, mapping.codes, "")
    rr["text"] = text
    for side in ("low", "high"):
        if side in rr and unit and "unit" not in rr[side]:
            rr[side] = quantity(rr[side]["value"], unit, mapping.codes)
    return dict(rr)


def _value(lab: dict[str, str], mapping: FhirMapping) -> tuple[str, Any] | None:
    if lab.get("value_code") or lab.get("value_display"):
        cc: dict[str, Any] = {"text": lab.get("value_display") or lab["value_code"]}
        if lab.get("value_code"):
            cc["coding"] = [{"code": lab["value_code"],
                             **({"system": lab["value_system"]}
                                if lab.get("value_system") else {})}]  # fmt: skip
        return "valueCodeableConcept", cc
    if lab.get("value_datetime"):
        return "valueDateTime", lab["value_datetime"]
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
