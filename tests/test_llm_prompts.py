"""The Kiwi templates must match the reference the models were tuned on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiwi_fhir.extractors.llm_prompts import (
    NER_PROMPT,
    RE_CLASSES,
    RE_PROMPTS,
    flatten,
    mark,
    ner_prompt,
    re_prompt,
)
from kiwi_fhir.schema import ENTITY_TYPES

DOC = Path(__file__).resolve().parents[1].parent / "shared" / "docs" / "kiwi-prompts.md"


def test_templates_equal_the_reference_document() -> None:
    if not DOC.is_file():
        pytest.skip(f"{DOC} not found")
    blocks = dict(re.findall(r"## (\w+)\n\n```\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S))
    assert blocks.pop("NER_prompt") == NER_PROMPT
    assert {k.removesuffix("_prompt"): v for k, v in blocks.items()} == RE_PROMPTS


def test_every_class_a_relation_prompt_names_is_allowed_for_its_type() -> None:
    assert set(RE_PROMPTS) == set(ENTITY_TYPES)
    for label, prompt in RE_PROMPTS.items():
        assert set(re.findall(r'<span class="(\w+)">', prompt)) == RE_CLASSES[label]


def test_prompt_filling() -> None:
    p = ner_prompt("Chest pain\nsince\tMonday.")
    assert p.endswith("### Input Text: Chest pain since Monday. <EOS>\n### Output Text:")
    marked = mark("No chest\npain.", 3, 13, "problem")
    assert marked == 'No <span class="problem">chest pain</span>.'
    assert re_prompt("problem", marked).startswith("### Task:\nYour task is to mark up modifier")
    assert len(flatten("a\r\nb")) == 4
