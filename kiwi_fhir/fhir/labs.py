"""Structured HL7 results (OBX NM/SN/CWE/DT..., ``Source.results``) to
Observations, and each OBR group of them to a DiagnosticReport.

These are facts the sender already coded, so they travel beside the
extracted resources rather than through the model; they carry no
derivation reference because they are not spans of the note. Codes the
sender gave (OBX-3, OBR-4, CWE values) are passed through as they came.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from kiwi_fhir.fhir.build import Targets
from kiwi_fhir.fhir.tables import FhirMapping
from kiwi_fhir.fhir.units import number, quantity
from kiwi_fhir.fhir.values import reference_range
from kiwi_fhir.source import LabResult, ResultGroup

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
#: The cross-version extension for R5's DiagnosticReport.note, used in R4.
_R5_NOTE: Final = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note"


def lab_observations(
    groups: tuple[ResultGroup, ...], mapping: FhirMapping, source: Targets
) -> list[tuple[dict[str, Any], str]]:
    """(Observation, identifier value) per structured result, in message order."""
    out: list[tuple[dict[str, Any], str]] = []
    labs = [(g, lab) for g in groups for lab in g.results]
    for n, (group, lab) in enumerate(labs, start=1):
        code: dict[str, Any] = {"text": lab.display or lab.code or "result"}
        if lab.code:
            code["coding"] = [{"code": lab.code, **({"system": lab.system} if lab.system else {})}]
        ident = f"{source.key}.lab.{lab.set_id or n}.{n}"
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": [{"system": mapping.identifier_system, "value": ident}],
            "status": _STATUS.get(lab.status or "F", "final"),
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
        if lab.date or group.date:
            obs["effectiveDateTime"] = lab.date or group.date
        if lab.range:
            obs["referenceRange"] = [_range(lab.range, lab.unit, mapping)]
        if lab.flag in _FLAGS:
            obs["interpretation"] = [{"coding": [{"system": _INTERPRETATION, "code": lab.flag}]}]
        if lab.notes:  # NTE after the OBX
            obs["note"] = [{"text": n} for n in lab.notes]
        out.append((obs, ident))
    return out


def diagnostic_reports(
    groups: tuple[ResultGroup, ...], observations: list[tuple[dict[str, Any], str]],
    source: Targets, mapping: FhirMapping, full_url: Callable[[str], str],
) -> list[tuple[dict[str, Any], str]]:  # fmt: skip
    """One DiagnosticReport per OBR group of results, referencing its Observations."""
    reports: dict[str, tuple[ResultGroup, list[str]]] = {}
    idents = iter(ident for _obs, ident in observations)
    for g in groups:
        mine = [next(idents) for _ in g.results]
        if g.set_id:  # results under a TXA, or before any OBR, have no report
            reports.setdefault(g.set_id, (g, []))[1].extend(mine)
    out: list[tuple[dict[str, Any], str]] = []
    for set_id, (g, members) in reports.items():
        code: dict[str, Any] = {"text": g.display or g.code or "laboratory report"}
        if g.code:
            code["coding"] = [{"code": g.code, **({"system": g.system} if g.system else {})}]
        ident = f"{source.key}.report.{set_id}"
        dr: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": mapping.identifier_system, "value": ident}],
            "status": _REPORT_STATUS.get(g.status or "F", "final"),
            "category": [{"coding": [{"system": _DR_CATEGORY, "code": "LAB"}]}],
            "code": code,
            "subject": source.patient,
            "result": [{"reference": full_url(i)} for i in members],
        }
        if source.encounter is not None:
            dr["encounter"] = source.encounter
        if g.date:
            dr["effectiveDateTime"] = g.date
        if g.notes:  # NTE after the OBR; R4 has no DiagnosticReport.note (R5 does)
            dr["extension"] = [{"url": _R5_NOTE, "valueAnnotation": {"text": n}} for n in g.notes]
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


def _value(lab: LabResult, mapping: FhirMapping) -> tuple[str, Any] | None:
    if lab.value_code or lab.value_display:
        cc: dict[str, Any] = {"text": lab.value_display or lab.value_code}
        if lab.value_code:
            system = {"system": lab.value_system} if lab.value_system else {}
            cc["coding"] = [{"code": lab.value_code, **system}]
        return "valueCodeableConcept", cc
    if lab.value_datetime:
        return "valueDateTime", lab.value_datetime
    try:
        num = number(lab.value)
    except ValueError:
        return ("valueString", lab.value) if lab.value else None
    if lab.value2:  # SN range "2^-^4" or ratio "1^:^128": keep as text
        sep = lab.separator or "-"
        return "valueString", f"{lab.comparator}{lab.value}{sep}{lab.value2}"
    q = quantity(num, lab.unit, mapping.codes)
    if lab.comparator in ("<", ">", "<=", ">="):
        q["comparator"] = lab.comparator
    return "valueQuantity", q
