"""The in-process extractor and ``kiwi-fhir extract`` on the packaged model."""

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from kiwi_fhir.brat import parse_ann
from kiwi_fhir.cli import main
from kiwi_fhir.core import Document, Extraction
from kiwi_fhir.extractors.onnx import (
    OnnxExtractor,
    default_model_dir,
    pipeline_for,
    read_model_config,
)
from kiwi_fhir.schema import is_allowed

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "note.txt"


@pytest.fixture(scope="module")
def extractor() -> OnnxExtractor:
    ex = OnnxExtractor(threads=2)
    ex.load()
    return ex


def check_invariants(ex: Extraction) -> None:
    text = ex.document.text
    for m in (*ex.entities, *ex.modifiers):
        assert text[m.start : m.end] == m.text
        if m.source is not None:  # predicted, not given
            assert m.confidence is not None and 0.0 <= m.confidence <= 1.0
    labels = {m.id: m.label for m in (*ex.entities, *ex.modifiers)}
    for r in ex.relations:
        assert is_allowed(labels[r.entity_id], labels[r.modifier_id])


def test_example_note_finds_real_entities(extractor: OnnxExtractor) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    (ex,) = extractor.extract([Document("ex", text)])
    check_invariants(ex)
    found = {(e.label, e.text.lower()) for e in ex.entities}
    assert ("drug", "lisinopril") in found or ("drug", "metformin") in found
    assert any(label == "problem" for label, _ in found)
    assert any(m.label == "negation" for m in ex.modifiers)
    assert ex.relations, "a trained model links some modifier to its entity"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t  ",
        "....;;;,,,!!!???---",
        "\x00\x01\x02 control \x07 chars \x1b[0m",
        "Patiënt ñoño: fièvre 39°C, douleur thoracique ✓ 患者 🙂",
        "x" * 5000,
    ],
)
def test_robust_inputs(extractor: OnnxExtractor, text: str) -> None:
    (ex,) = extractor.extract([Document("r", text)])
    check_invariants(ex)


def test_200kb_note(extractor: OnnxExtractor) -> None:
    block = EXAMPLE.read_text(encoding="utf-8")
    text = (block * (200_000 // len(block) + 1))[:200_000]
    (ex,) = extractor.extract([Document("big", text)])
    check_invariants(ex)
    # entities are found all along the note, not just in the first window
    assert max(e.start for e in ex.entities) > 190_000


def test_batching_does_not_change_results(extractor: OnnxExtractor) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    docs = [Document("a", text), Document("b", text[:300]), Document("c", text * 3)]
    together = extractor.extract(docs)
    alone = [extractor.extract([d])[0] for d in docs]
    for x, y in zip(together, alone, strict=True):
        assert [(e.label, e.span) for e in x.entities] == [(e.label, e.span) for e in y.entities]
        assert len(x.relations) == len(y.relations)


def test_concurrent_callers_get_identical_results(extractor: OnnxExtractor) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    expected = extractor.extract([Document("a", text)])[0]
    results: list[Extraction] = []

    def work() -> None:
        results.append(extractor.extract([Document("a", text)])[0])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert all(r.entities == expected.entities for r in results)


def test_given_entities_are_kept(extractor: OnnxExtractor) -> None:
    text = "No fever. Aspirin 81 mg daily."
    doc = Document("g", text)
    gold = parse_ann("T1\tproblem 3 8\tfever\nT2\tdrug 10 17\tAspirin\n", doc)
    (ex,) = extractor.extract([doc], [gold.entities])
    assert ex.entities == gold.entities
    check_invariants(ex)


def test_given_entities_for_several_notes_stay_with_their_note(
    extractor: OnnxExtractor,
) -> None:
    # Notes run as separate tasks when several come at once: each note's
    # given entities must come back on that note, in input order.
    texts = ["No fever. Aspirin 81 mg daily.", "Denies chest pain.", "Aspirin 81 mg."]
    docs = [Document(f"n{i}", t) for i, t in enumerate(texts)]
    given = [
        parse_ann("T1\tproblem 3 8\tfever\n", docs[0]).entities,
        None,
        parse_ann("T1\tdrug 0 7\tAspirin\n", docs[2]).entities,
    ]
    out = extractor.extract(docs, given)
    assert [x.document.id for x in out] == ["n0", "n1", "n2"]
    assert out[0].entities == given[0] and out[2].entities == given[2]
    assert out[1].entities == extractor.extract([docs[1]])[0].entities
    for x in out:
        check_invariants(x)


def test_span_threshold_drops_unsure_spans() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    model = default_model_dir()
    base = pipeline_for(model, read_model_config(model), 16).cfg
    (plain,) = OnnxExtractor(pipeline=replace(base, span_threshold=0.0)).extract(
        [Document("t", text)]
    )
    (strict,) = OnnxExtractor(pipeline=replace(base, span_threshold=0.9)).extract(
        [Document("t", text)]
    )
    kept = {(m.label, m.span) for m in (*plain.entities, *plain.modifiers) if m.confidence >= 0.9}
    assert {(m.label, m.span) for m in (*strict.entities, *strict.modifiers)} == kept
    assert len(kept) < len(plain.entities) + len(plain.modifiers)


def test_cli_json_and_brat(tmp_path: Path) -> None:
    assert main(["extract", str(EXAMPLE), "--format", "json", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "note.json").read_text())
    text = EXAMPLE.read_text(encoding="utf-8")
    assert data["entities"] and all(
        text[e["start"] : e["end"]] == e["text"] for e in data["entities"] + data["modifiers"]
    )
    assert main(["extract", str(EXAMPLE), "--format", "brat", "--out", str(tmp_path)]) == 0
    ann = (tmp_path / "note.ann").read_text()
    back = parse_ann(ann, Document("note", text))  # strict: every line must parse
    assert len(back.entities) == len(data["entities"])


def test_cli_stdin_to_stdout() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "kiwi_fhir.cli", "extract", "-"],
        input="Patient denies chest pain. Started on metformin 500 mg daily.",
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["document"]["id"] == "stdin"


def test_cli_bad_file_does_not_stop_the_batch(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("No fever.")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"SECRET-NOTE-TEXT \xff\xfe")
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "kiwi_fhir.cli", "extract", str(bad), str(good), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert (out / "good.json").is_file() and not (out / "bad.json").exists()
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.txt" in lines[0] and "UTF-8" in lines[0]
    assert "SECRET" not in res.stderr


def test_given_entities_cli(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("No fever. Aspirin 81 mg daily.")
    (tmp_path / "n.ann").write_text("T1\tproblem 3 8\tfever\nT2\tdrug 10 17\tAspirin\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "extract",
                str(tmp_path / "n.txt"),
                "--given-entities",
                "--format",
                "brat",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ann = (out / "n.ann").read_text()
    assert "problem 3 8\tfever" in ann and "drug 10 17\tAspirin" in ann


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(EXAMPLE), "--model", str(tmp_path)]) == 2
    assert "no model installed" in capsys.readouterr().err


DATA = Path(__file__).resolve().parent / "data"


def test_cli_fhir_bundles_for_hl7_and_fhir_inputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(
        [
            "extract",
            str(DATA / "batch_two_messages.hl7"),
            str(DATA / "docref_plain.json"),
            "--format",
            "fhir",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "batch_two_messages.1.bundle.json",
        "batch_two_messages.2.bundle.json",
        "docref_plain.bundle.json",
    ]
    bundle = json.loads((out / "docref_plain.bundle.json").read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert "Provenance" in kinds


def test_cli_bad_inputs_are_reported_and_the_rest_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiwi_fhir.cli",
            "extract",
            str(DATA / "bad_base64.json"),
            str(DATA / "bad_no_msh.hl7"),
            str(DATA / "oru_radiology.hl7"),
            "--format",
            "fhir",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert (out / "oru_radiology.bundle.json").is_file()
    errs = res.stderr.strip().splitlines()
    assert len(errs) == 2 and "Traceback" not in res.stderr
    assert "bad_base64.json" in errs[0] and "bad_no_msh.hl7" in errs[1]
