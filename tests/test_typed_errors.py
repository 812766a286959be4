"""Hostile and broken input gives typed errors, never tracebacks (service-hardening 11-13).

Regression tests for: JSON nested 100,000 deep and a 5,000-digit integer
(INTERNAL before), an OBX-1 of '²' (ValueError in ``_int``), error messages
that echoed 40 characters of sender-controlled fields, and the CLI stopping at
the first document that failed R4B validation. A hypothesis fuzz test mutates
the sample messages and documents: only ``KiwiError``s may come out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiwi_fhir.errors import FhirInputError, FhirOutputError, KiwiError, shown
from kiwi_fhir.inputs import jsonin, parse_hl7
from kiwi_fhir.inputs.docref import parse_document_reference_items
from kiwi_fhir.inputs.hl7 import parse_hl7_items
from kiwi_fhir.service import intake
from kiwi_fhir.service.status import outcome

DATA = Path(__file__).resolve().parent / "data"
SAMPLE_HL7 = sorted(DATA.glob("*.hl7"))
SAMPLE_JSON = sorted(DATA.glob("*.json"))


HUGE_INT = '{"resourceType": "DocumentReference", "n": ' + "9" * 5000 + "}"


@pytest.mark.parametrize("payload", ["[" * 100_000 + "]" * 100_000, HUGE_INT,
                                     '{"a":' * 70 + "1" + "}" * 70])  # fmt: skip
def test_hostile_json_is_a_typed_invalid_argument(payload: str) -> None:
    with pytest.raises(FhirInputError) as err:
        intake.docref_job(payload, "grpc")
    assert outcome(err.value).grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert outcome(err.value).http == 400
    (item,) = parse_document_reference_items(payload, source="x.json")
    assert isinstance(item, FhirInputError)


def test_json_depth_is_counted_without_recursion() -> None:
    assert jsonin.depth({"a": [1, {"b": []}]}) == 4  # dict, list, dict, list
    assert jsonin.depth(json.loads("[" * 500 + "]" * 500)) > jsonin.MAX_DEPTH


def test_a_non_ascii_digit_set_id_is_not_a_crash() -> None:
    msg = (DATA / "oru_radiology.hl7").read_bytes().replace(b"OBX|1|", "OBX|²|".encode(), 1)
    assert "OBX|²|".encode() in msg
    docs = parse_hl7(msg)
    assert docs and docs[0].text


def test_echoed_sender_values_are_capped_and_only_code_like() -> None:
    assert shown("8859/1") == "'8859/1'"
    assert shown(None) == "(missing)"
    secret = "Patient has HIV and depression"
    assert "HIV" not in shown(secret) and "30 characters" in shown(secret)
    assert "x" * 13 not in shown("x" * 40)
    obj = {"resourceType": secret, "id": "1"}
    (item,) = parse_document_reference_items(obj, source="x.json")
    assert isinstance(item, FhirInputError) and "HIV" not in str(item)
    bad = (DATA / "oru_radiology.hl7").read_bytes().split(b"\r", 1)
    header = bad[0].split(b"|")
    header[11] = b"2.5 but depression"  # MSH-12
    items = parse_hl7_items(b"|".join(header) + b"\r" + bad[1])
    assert items and all("depression" not in str(i) for i in items)


def _mutations() -> st.SearchStrategy[tuple[bytes, int, bytes, int]]:
    samples = [p.read_bytes() for p in SAMPLE_HL7 + SAMPLE_JSON]
    return st.tuples(st.sampled_from(samples), st.integers(0, 10_000),
                     st.binary(min_size=0, max_size=12), st.integers(0, 12))  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_fuzzed_hl7_and_fhir_give_typed_errors_only(case: tuple[bytes, int, bytes, int]) -> None:
    raw, at, insert, cut = case
    at %= len(raw) + 1
    mutated = raw[:at] + insert + raw[at + cut :]
    for parse in (lambda: parse_hl7_items(mutated),
                  lambda: intake.hl7_job(mutated, "mllp")):  # fmt: skip
        with contextlib.suppress(KiwiError):
            parse()
    text = mutated.decode("utf-8", errors="replace")
    with contextlib.suppress(KiwiError):
        intake.docref_job(text, "grpc")
    parse_document_reference_items(text, source="fuzz.json")


def test_cli_keeps_going_after_a_document_fails_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: the first R4B failure ended the run (exit 2); later files were lost."""
    pytest.importorskip("onnxruntime")
    from kiwi_fhir import extract_cli

    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text("Patient denies chest pain. Takes aspirin 81 mg.")
    real = extract_cli.to_bundle

    def flaky(ex, **kw):  # type: ignore[no-untyped-def]
        if ex.document.id == "a":
            raise FhirOutputError("Condition (Condition) fails R4B validation: code")
        return real(ex, **kw)

    monkeypatch.setattr(extract_cli, "to_bundle", flaky)
    args = argparse.Namespace(paths=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")],
                              given_entities=False, out=str(tmp_path / "out"), model=None,
                              threads=1, batch_size=16, format="fhir",
                              bundle_type="transaction")  # fmt: skip
    assert extract_cli.run_extract(args) == 1
    assert not (tmp_path / "out" / "a.bundle.json").exists()
    assert json.loads((tmp_path / "out" / "b.bundle.json").read_text())["resourceType"] == "Bundle"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a.txt: a: " in err[0] and "R4B" in err[0]
