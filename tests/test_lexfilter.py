import pytest
from tokenizers import Tokenizer

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.extractors.onnx import default_model_dir
from kiwi_fhir.extractors.wordfeats import WordFeaturizer
from kiwi_fhir.training.lexfilter import fit_problem_lexicon


def _doc(text: str, *entities: tuple[str, str]) -> Extraction:
    """``entities``: (label, substring), each at its first occurrence."""
    ents = []
    for n, (label, part) in enumerate(entities):
        start = text.index(part)
        ents.append(Entity(f"T{n}", label, start, start + len(part), part))
    return Extraction(Document("d", text), entities=tuple(ents))


@pytest.fixture()
def tok() -> Tokenizer:
    path = default_model_dir() / "tokenizer.json"
    if not path.is_file():
        pytest.skip("no packaged model")
    return load_tokenizer(path)


def test_terms_the_notes_show_outside_problems_are_dropped(tok: Tokenizer) -> None:
    fz = WordFeaturizer([], ["blood pressure", "hypertension", "abdomen", "sepsis"])
    docs = [
        _doc(
            "Blood pressure was high: hypertension.",
            ("test", "Blood pressure"),
            ("problem", "hypertension"),
        ),
        _doc("Abdomen soft. No hypertension.", ("problem", "hypertension")),
    ]
    fit = fit_problem_lexicon(fz, tok, docs, 0.5)
    # "sepsis" never occurs in the notes: kept, the lexicon is for what they don't show
    assert fit.dropped == ("abdomen", "blood pressure")
    assert fit.kept == ("hypertension", "sepsis")
    assert fit.matches == 4
    assert fit.precision_before == pytest.approx(0.5)
    assert fit.precision_after == pytest.approx(1.0)


def test_a_match_spanning_two_gold_problems_counts_as_a_problem(tok: Tokenizer) -> None:
    fz = WordFeaturizer([], ["nausea and vomiting"])
    doc = _doc("He had nausea and vomiting.", ("problem", "nausea"), ("problem", "vomiting"))
    assert fit_problem_lexicon(fz, tok, [doc], 0.5).dropped == ()
    # but not one whose last word lies outside any problem
    doc = _doc("He had nausea and vomiting.", ("problem", "nausea"))
    assert fit_problem_lexicon(fz, tok, [doc], 0.5).dropped == ("nausea and vomiting",)


def test_share_threshold_is_inclusive_and_zero_keeps_all(tok: Tokenizer) -> None:
    fz = WordFeaturizer([], ["pain"])
    docs = [_doc("pain", ("problem", "pain")), _doc("pain scale")]
    assert fit_problem_lexicon(fz, tok, docs, 0.5).dropped == ()
    assert fit_problem_lexicon(fz, tok, docs, 0.51).dropped == ("pain",)
    assert fit_problem_lexicon(fz, tok, docs, 0.0).dropped == ()
