"""Value parsers: modifier text to FHIR datatypes (expectations checked by hand)."""

from __future__ import annotations

from typing import Any

import pytest

from kiwi_fhir.fhir import load_mapping
from kiwi_fhir.fhir.units import check_ucum
from kiwi_fhir.fhir.values import parse

UCUM = "http://unitsofmeasure.org"


def first(parser: str, text: str, table: str = "") -> tuple[str, Any] | None:
    cands = parse(parser, text, load_mapping().codes, table)
    return cands[0] if cands else None


def q(value: float, unit: str, code: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value, "unit": unit}
    if code:
        out.update(system=UCUM, code=code)
    return out


def test_labvalue_quantity_with_ucum_and_fallbacks() -> None:
    assert first("labvalue", "10.6 gm/dL") == ("Quantity", q(10.6, "gm/dL", "g/dL"))
    assert first("labvalue", "98%") == ("Quantity", q(98, "%", "%"))
    assert first("labvalue", "1,200 mg/dl") == ("Quantity", q(1200, "mg/dl", "mg/dL"))
    assert first("labvalue", "12 widgets") == ("Quantity", {"value": 12, "unit": "widgets"})
    assert first("labvalue", "normal") == ("string", "normal")
    assert first("labvalue", "5/500 mg") == ("string", "5/500 mg")


def test_blood_pressure_becomes_components() -> None:
    kind, comps = first("labvalue", "100/60 mmHg")  # type: ignore[misc]
    assert kind == "Components"
    assert [
        (c["code"]["coding"][0]["code"], c["valueQuantity"]["value"], c["valueQuantity"]["code"])
        for c in comps
    ] == [("8480-6", 100, "mm[Hg]"), ("8462-4", 60, "mm[Hg]")]


def test_reference_range() -> None:
    assert first("reference_range", "12-16") == (
        "ReferenceRange",
        {"text": "12-16", "low": {"value": 12}, "high": {"value": 16}},
    )
    _, rr = first("reference_range", "125 - 200 mg/dl")  # type: ignore[misc]
    assert rr["low"] == q(125, "mg/dl", "mg/dL") and rr["high"]["value"] == 200
    assert first("reference_range", "<5")[1] == {"text": "<5", "high": {"value": 5}}  # type: ignore[index]
    assert first("reference_range", "normal") == ("ReferenceRange", {"text": "normal"})


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("bid", {"frequency": 2, "period": 1, "periodUnit": "d"}),
        ("b.i.d.", {"frequency": 2, "period": 1, "periodUnit": "d"}),
        ("twice a day", {"frequency": 2, "period": 1, "periodUnit": "d"}),
        ("3 times a day", {"frequency": 3, "period": 1, "periodUnit": "d"}),
        ("q6h", {"frequency": 1, "period": 6, "periodUnit": "h"}),
        ("every four hours", {"frequency": 1, "period": 4, "periodUnit": "h"}),
        ("q.4-6 h", {"frequency": 1, "period": 4, "periodMax": 6, "periodUnit": "h"}),
        ("Q.H.S.", {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["HS"]}),
    ],
)
def test_frequency_to_timing_repeat(text: str, want: dict[str, Any]) -> None:
    assert first("frequency", text) == ("TimingRepeat", {"repeat": want, "as_needed": False})


def test_prn_is_as_needed() -> None:
    assert first("frequency", "p.r.n.") == ("TimingRepeat", {"repeat": {}, "as_needed": True})
    assert first("frequency", "q6h prn") == (
        "TimingRepeat",
        {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}, "as_needed": True},
    )
    assert first("frequency", "with each meal") is None


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("17aug2011", "dateTime", "2011-08-17"),
        ("01/27/09", "dateTime", "2009-01-27"),
        ("6/14/2009", "dateTime", "2009-06-14"),
        ("2006", "dateTime", "2006"),
        ("June 2009", "dateTime", "2009-06"),
        ("March 3, 2010", "dateTime", "2010-03-03"),
        ("01/01/2009 to 02/02/2009", "Period", {"start": "2009-01-01", "end": "2009-02-02"}),
        ("at age 45", "Age", {"value": 45, "unit": "years", "system": UCUM, "code": "a"}),
        ("recent", "string", "recent"),
        ("13/45/2009", "string", "13/45/2009"),
    ],
)
def test_temporal(text: str, kind: str, value: Any) -> None:
    assert first("temporal", text) == (kind, value)


def test_strength_dose_duration() -> None:
    one = {"value": 1, "system": UCUM, "code": "1", "unit": "1"}
    assert first("strength", "40 mg") == (
        "Ratio",
        {"numerator": q(40, "mg", "mg"), "denominator": one},
    )
    assert first("strength", "10 mEq per 1000 mL") == (
        "Ratio",
        {"numerator": q(10, "mEq", "meq"), "denominator": q(1000, "mL", "mL")},
    )
    assert first("strength", "5/500 mg") is None
    assert first("dose", "one") == ("Quantity", {"value": 1})
    assert first("dose", "2 puffs") == ("Quantity", q(2, "puffs", "{puff}"))
    assert first("dose", "one to two") == ("Range", {"low": {"value": 1}, "high": {"value": 2}})
    assert first("dose", "sliding scale") is None
    assert first("duration", "for five days") == ("Duration", q(5, "days", "d"))
    assert first("duration", "x2 weeks") == ("Duration", q(2, "weeks", "wk"))
    assert first("duration", "for 4 more days") == ("Duration", q(4, "days", "d"))


def test_coded_tables() -> None:
    _, cc = first("coded", "P.O.", "route")  # type: ignore[misc]
    assert cc == {
        "text": "P.O.",
        "coding": [
            {"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral route"}
        ],
    }
    _, rel = first("coded", "his brothers", "relationship")  # type: ignore[misc]
    assert rel["coding"][0]["code"] == "BRO" and rel["text"] == "his brothers"
    assert first("coded", "left lower lobe", "body_site") == (
        "CodeableConcept",
        {"text": "left lower lobe"},
    )


def test_ucum_check() -> None:
    assert check_ucum("mg/dL") and check_ucum("mm[Hg]") and check_ucum("10*3/uL")
    assert not check_ucum("gm/dL") and not check_ucum("mcg") and not check_ucum("")
