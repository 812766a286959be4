"""The tagged-output parser on hand-written answers, well-formed and not."""

from __future__ import annotations

import pytest

from kiwi_fhir.extractors.llm_parse import parse_tagged
from kiwi_fhir.schema import ALLOWED_MODIFIERS, ENTITY_TYPES


def t(cls: str, text: str) -> str:
    return f'<span class="{cls}">{text}</span>'


SRC = "Patient denies chest  pain and\nfever, takes aspirin 81 mg p.o. b.i.d. daily."


def spans(src: str, out: str, allowed: frozenset[str] | tuple[str, ...] = ENTITY_TYPES,
          **kw: object) -> list[tuple[str, str]]:  # fmt: skip
    found, _ = parse_tagged(src, out, allowed, **kw)  # type: ignore[arg-type]
    for t in found:
        assert src[t.start : t.end]  # offsets index the source
    return [(t.label, src[t.start : t.end]) for t in found]


def test_exact_copy_maps_every_span() -> None:
    out = (
        ' Patient denies <span class="problem">chest  pain</span> and\nfever, takes '
        '<span class="drug">aspirin</span> 81 mg p.o. b.i.d. daily.'
    )
    found, stats = parse_tagged(SRC, out, ENTITY_TYPES)
    assert [(t.label, SRC[t.start : t.end]) for t in found] == [
        ("problem", "chest  pain"),
        ("drug", "aspirin"),
    ]
    assert stats.rewritten == 0 and stats.spans == 2 and stats.unaligned == 0


def test_whitespace_and_case_changes_are_free() -> None:
    out = 'patient denies <span class="problem">Chest Pain</span> and fever, takes aspirin'
    found, stats = parse_tagged(SRC, out, ENTITY_TYPES)
    assert [(t.label, SRC[t.start : t.end]) for t in found] == [("problem", "chest  pain")]
    # the answer stops early: text differs, the span still aligns
    assert stats.rewritten == 1 and stats.unaligned == 0


def test_span_across_a_line_break_maps_to_the_original_break() -> None:
    out = 'Patient denies chest pain <span class="problem">and fever</span>, takes'
    assert spans(SRC, out) == [("problem", "and\nfever")]


def test_unknown_and_missing_classes_are_dropped_and_counted() -> None:
    out = (
        '<span class="medication">aspirin</span> <span>fever</span> '
        '<span class="drug extra">aspirin</span>'
    )
    found, stats = parse_tagged(SRC, out, ENTITY_TYPES)
    assert [(t.label, SRC[t.start : t.end]) for t in found] == [("drug", "aspirin")]
    assert stats.unknown_class == 2


def test_ignored_class_is_not_unknown() -> None:
    out = '<span class="drug">aspirin</span> <span class="strength">81 mg</span>'
    found, stats = parse_tagged(SRC, out, ALLOWED_MODIFIERS["drug"], ignore=("drug",))
    assert [(t.label, SRC[t.start : t.end]) for t in found] == [("strength", "81 mg")]
    assert stats.unknown_class == 0


def test_unclosed_tag_closes_at_the_next_tag() -> None:
    out = 'denies <span class="problem">chest pain and <span class="problem">fever</span>, takes'
    found, stats = parse_tagged(SRC, out, ENTITY_TYPES)
    assert [SRC[t.start : t.end] for t in found] == ["chest  pain and", "fever"]
    assert stats.unclosed == 1


def test_unclosed_tag_at_the_end_runs_to_the_end() -> None:
    assert spans(SRC, 'takes <span class="drug">aspirin') == [("drug", "aspirin")]


def test_stray_close_tags_are_counted() -> None:
    out = '<span class="problem">fever</span></span> takes aspirin</span>'
    found, stats = parse_tagged(SRC, out, ENTITY_TYPES)
    assert [SRC[t.start : t.end] for t in found] == ["fever"]
    assert stats.stray_close == 2


def test_nested_tags_give_both_spans() -> None:
    src = "severe left knee pain"
    out = '<span class="problem"><span class="severity">severe</span> left knee pain</span>'
    assert spans(src, out, ("problem", "severity")) == [
        ("severity", "severe"),
        ("problem", "severe left knee pain"),
    ]


def test_rewritten_text_keeps_spans_copied_verbatim() -> None:
    out = f"The patient has {t('problem', 'fever')} and uses {t('drug', 'aspirin')}."
    found, stats = parse_tagged(SRC, out, ENTITY_TYPES)
    assert [SRC[t.start : t.end] for t in found] == ["fever", "aspirin"]
    assert stats.rewritten == 1


def test_invented_text_is_dropped_and_counted() -> None:
    out = f"Patient has {t('problem', 'headache')} and {t('drug', 'ibuprofen')}"
    found, stats = parse_tagged(SRC, out, ENTITY_TYPES)
    assert found == [] and stats.unaligned == 2


def test_repeated_text_is_placed_at_the_copied_occurrence() -> None:
    src = "pain in arm. no pain in leg."
    out = 'pain in arm. no <span class="problem">pain</span> in leg.'
    found, _ = parse_tagged(src, out, ENTITY_TYPES)
    assert [(t.start, t.end) for t in found] == [(16, 20)]


def test_html_escapes_other_tags_and_trailing_prompt_text() -> None:
    src = "BP 120/80 & HR 70 <normal>"
    out = (
        '<b>BP</b> <span class="test">BP</span> 120/80 &amp; <span class="test">HR</span> 70 '
        "&lt;normal&gt; <EOS>\n### Input Text: more"
    )
    assert spans(src, out) == [("test", "BP"), ("test", "HR")]


def test_sentence_period_is_trimmed_but_abbreviations_keep_theirs() -> None:
    out = f"takes aspirin 81 mg p.o. {t('frequency', 'b.i.d.')} {t('frequency', 'daily.')}"
    got = spans(SRC, out, ALLOWED_MODIFIERS["drug"])
    assert got == [("frequency", "b.i.d."), ("frequency", "daily")]


def test_tags_around_nothing_are_counted_as_empty() -> None:
    out = f"Patient {t('problem', ' ')}denies{t('problem', ', ')}"
    found, stats = parse_tagged(SRC, out, ENTITY_TYPES)
    assert found == [] and stats.empty == 2 and stats.unaligned == 0


@pytest.mark.parametrize("out", ["", "   ", "<span class=", "</span></span>", "<EOS>"])
def test_degenerate_answers_give_nothing(out: str) -> None:
    found, _ = parse_tagged(SRC, out, ENTITY_TYPES)
    assert found == []


def test_duplicates_are_merged_and_results_sorted() -> None:
    out = f"{t('drug', 'aspirin')} {t('problem', 'fever')} {t('drug', 'aspirin')}"
    assert spans(SRC, out) == [("problem", "fever"), ("drug", "aspirin")]
