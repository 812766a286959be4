from pathlib import Path

import pytest

from kiwi_fhir.brat import ParseReport, format_ann, parse_ann, read_pair, write_pair
from kiwi_fhir.core import Document
from kiwi_fhir.corpus import default_data_dir, load_corpus
from kiwi_fhir.errors import AnnotationFormatError, DocumentError

NOTE = "Pain in left knee.\r\nNo fever."


def doc() -> Document:
    return Document("n1", NOTE)


def test_t_and_r_lines_with_crlf_note() -> None:
    ann = (
        "T1\tproblem 0 17\tPain in left knee\r\n"
        "T2\tbodyloc 8 17\tleft knee\r\n"
        "T3\tproblem 23 28\tfever\r\n"
        "T4\tnegation 20 22\tNo\r\n"
        "R1\thasAttr Arg1:T1 Arg2:T2\r\n"
        "R2\thasAttr Arg1:T3 Arg2:T4\r\n"
        "#1\tAnnotatorNotes T1\tfree text\n"
    )
    ex = parse_ann(ann, doc())
    assert [e.text for e in ex.entities] == ["Pain in left knee", "fever"]
    assert {(r.entity_id, r.modifier_id) for r in ex.relations} == {("T1", "T2"), ("T3", "T4")}


def test_discontinuous_span_round_trip() -> None:
    ann = "T1\tproblem 0 4;13 17\tPain knee\n"
    ex = parse_ann(ann, doc())
    (e,) = ex.entities
    assert e.fragments == ((0, 4), (13, 17)) and (e.start, e.end) == (0, 17)
    assert format_ann(ex) == ann


def test_backwards_relation_is_normalised() -> None:
    ann = "T1\tproblem 23 28\tfever\nT2\tnegation 20 22\tNo\nR1\thasAttr Arg1:T2 Arg2:T1\n"
    (r,) = parse_ann(ann, doc()).relations
    assert (r.entity_id, r.modifier_id) == ("T1", "T2")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("T1\tproblem 0 x\tPain", "bad offsets"),
        ("T1\tproblem 0 99\tPain", "outside the note"),
        ("T1\tproblem 0 4\tPAIN", "does not match"),
        ("T1\tdisease 0 4\tPain", "unknown label"),
        ("R1\tcauses Arg1:T1 Arg2:T2", "expected"),
        ("garbage", "unrecognised"),
    ],
)
def test_malformed_lines_name_file_and_line(line: str, reason: str) -> None:
    ann = "T9\tproblem 23 28\tfever\n" + line + "\n"
    with pytest.raises(AnnotationFormatError, match=reason) as info:
        parse_ann(ann, doc(), path="x.ann")
    assert info.value.path == "x.ann" and info.value.line == 2
    assert str(info.value).startswith("x.ann:2:")


def test_lenient_mode_keeps_the_rest() -> None:
    report = ParseReport()
    ann = "T1\tproblem 23 28\tfever\nbogus\nT2\tnegation 20 22\tNo\n"
    ex = parse_ann(ann, doc(), strict=False, report=report)
    assert len(ex.entities) == 1 and len(ex.modifiers) == 1
    assert [p.line for p in report.problems] == [2]


def test_span_text_with_raw_newline_is_rejoined() -> None:
    # Regression: the shared corpus has a span whose text field carries a
    # raw line break ("140. \n5"), splitting one T line over two.
    note = "plt 140. \n5 more"
    ann = "T1\tlabvalue 4 11\t140. \n5\nT2\ttest 0 3\tplt\n"
    ex = parse_ann(ann, Document("d", note))
    assert [m.text for m in ex.modifiers] == ["140. \n5"]
    assert len(ex.entities) == 1


def test_read_write_pair(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(NOTE.encode())
    (tmp_path / "a.ann").write_text("T1\tproblem 23 28\tfever\n")
    ex = read_pair(tmp_path / "a.txt")
    assert ex.document.text == NOTE  # CRLF kept: offsets index the file as stored
    out = write_pair(ex, tmp_path / "out")
    assert read_pair(out.with_suffix(".txt")).entities == ex.entities


def test_non_utf8_note_is_a_document_error(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DocumentError, match="UTF-8"):
        read_pair(tmp_path / "b.txt")


def test_shared_corpus_round_trips(tmp_path: Path) -> None:
    data = default_data_dir()
    if data is None:
        pytest.skip("shared corpus not available")
    docs = load_corpus(data)
    assert len(docs) == 96
    for ex in docs:
        write_pair(ex, tmp_path)
        back = read_pair(tmp_path / f"{ex.document.id}.txt")

        def spans(e):  # type: ignore[no-untyped-def]
            lab = {m.id: (m.label, m.start, m.end) for m in (*e.entities, *e.modifiers)}
            rels = {(lab[r.entity_id], lab[r.modifier_id]) for r in e.relations}
            return set(lab.values()), rels

        assert spans(back) == spans(ex)
