"""Long notes run segment by segment (service hardening item 10): bounded memory, same offsets."""

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.extractors.onnx import OnnxExtractor
from kiwi_fhir.extractors.pipeline import BertPipeline
from kiwi_fhir.extractors.segments import by_segments, cuts

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "note.txt"


@given(
    st.text(alphabet=st.sampled_from("ab .\n\t"), max_size=3000),
    st.integers(min_value=2, max_value=400),
)
@settings(max_examples=200, deadline=None)
def test_cuts_cover_the_text_contiguously_within_the_limit(text: str, limit: int) -> None:
    segs = cuts(text, limit)
    assert segs[0][0] == 0 and segs[-1][1] == len(text)
    assert all(a < b or len(text) == 0 for a, b in segs)
    assert all(b1 == a2 for (_, b1), (a2, _) in itertools.pairwise(segs))
    assert all(b - a <= limit for a, b in segs)


def test_cuts_prefer_paragraph_then_line_breaks() -> None:
    text = "first line\nsecond line\n\nnext paragraph goes on and on"
    assert cuts(text, 40)[0] == (0, len("first line\nsecond line\n\n"))
    assert cuts("one line here\nand another line here", 25)[0] == (0, len("one line here\n"))


def test_cuts_never_split_a_kept_span() -> None:
    text = "x" * 100
    keep = [(40, 60)]
    for a, b in cuts(text, 50, keep):
        assert not any(s < a < e or s < b < e for s, e in keep)


def test_merge_shifts_offsets_and_renumbers_ids() -> None:
    text = "chest pain today.\n\nchest pain again.\n\nno chest pain."

    def fake(seg: Document, _given: object) -> Extraction:
        i = seg.text.find("chest pain")
        ent = Entity("T1", "problem", i, i + 10, seg.text[i : i + 10], 0.9, source="fake")
        return Extraction(seg, (ent,), model="m", backend="b")

    ex = by_segments(Document("d", text), 20, None, fake)
    assert [e.id for e in ex.entities] == ["T1", "T2", "T3"]
    assert all(text[e.start : e.end] == "chest pain" for e in ex.entities)
    assert [e.start for e in ex.entities] == [0, 19, 41]


@pytest.fixture(scope="module")
def extractor() -> OnnxExtractor:
    ex = OnnxExtractor(threads=2)
    ex.load()
    return ex


def test_long_note_runs_in_bounded_segments_with_exact_offsets(
    extractor: OnnxExtractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = extractor._pipe
    assert pipe is not None
    limit = 3000
    monkeypatch.setattr(pipe, "cfg", replace(pipe.cfg, segment_chars=limit))
    seen: list[int] = []
    inner = BertPipeline._run

    def spy(self: BertPipeline, runner, docs, given, model_id, backend):  # type: ignore[no-untyped-def]
        seen.extend(len(d.text) for d in docs)
        return inner(self, runner, docs, given, model_id, backend)

    monkeypatch.setattr(BertPipeline, "_run", spy)
    base = EXAMPLE.read_text(encoding="utf-8").strip()
    text = "\n\n".join([base] * (4 * limit // len(base) + 2))
    (ex,) = extractor.extract([Document("long", text)])
    assert len(seen) >= 4 and max(seen) <= limit and sum(seen) == len(text)
    for m in (*ex.entities, *ex.modifiers):
        assert text[m.start : m.end] == m.text
    ids = {m.id for m in (*ex.entities, *ex.modifiers)}
    assert len(ids) == len(ex.entities) + len(ex.modifiers)
    assert all(r.entity_id in ids and r.modifier_id in ids for r in ex.relations)
    # Each copy of the note yields about what the note alone does.
    (alone,) = extractor.extract([Document("one", base)])
    copies = text.count(base)
    assert abs(len(ex.entities) - copies * len(alone.entities)) <= copies
    # Given entities keep their ids across segments; modifiers avoid them.
    gold = [replace(e, id=f"G{n}", source=None) for n, e in enumerate(ex.entities)]
    (with_given,) = extractor.extract([Document("long", text)], [gold])
    assert [e.id for e in with_given.entities] == [e.id for e in gold]
    assert {r.entity_id for r in with_given.relations} <= {e.id for e in gold}


def test_a_short_note_is_one_piece(extractor: OnnxExtractor) -> None:
    pipe = extractor._pipe
    assert pipe is not None
    text = EXAMPLE.read_text(encoding="utf-8")
    assert len(text) <= pipe.cfg.segment_chars
    (a,) = extractor.extract([Document("n", text)])
    (b,) = pipe._run(extractor._runner, [Document("n", text)], None, a.model, a.backend)  # type: ignore[arg-type]
    assert a == b and a.entities == b.entities
