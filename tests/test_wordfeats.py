import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from kiwi_fhir.errors import ModelError
from kiwi_fhir.extractors.encoding import encode_note, load_tokenizer, window_inputs
from kiwi_fhir.extractors.onnx import default_model_dir, pipeline_for, read_model_config
from kiwi_fhir.extractors.wordfeats import (
    N_SHAPES,
    N_WORD_FEATS,
    WordFeaturizer,
    icd_terms,
    shape,
)


def _words(text: str) -> np.ndarray:
    import re

    return np.asarray(
        [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)], dtype=np.int64
    ).reshape(-1, 2)


def test_shapes() -> None:
    assert [shape(w) for w in ["pain", "Lasix", "CHF", "pH", ",", "100", "B", "x3"]] == [
        1,
        2,
        3,
        4,
        5,
        5,
        2,
        1,
    ]


def test_lexicon_longest_match_case_and_spacing() -> None:
    fz = WordFeaturizer(["Acetylsalicylic  Acid", "levaquin", "co-trimoxazole", "mg"])
    assert "mg" not in fz.lexicon  # too short to trust
    text = "Gave LEVAQUIN and acetylsalicylic\nacid, not acetylsalicylic alone; co-trimoxazole."
    spans = _words(text)
    flags = fz.lexicon_hits(text, spans)
    hits = {text[a:b] for (a, b), h in zip(spans.tolist(), flags, strict=True) if h}
    assert hits == {"LEVAQUIN", "acetylsalicylic", "acid", "co", "-", "trimoxazole"}
    # Only the first "acetylsalicylic" is part of a full entry.
    first = [i for i, (a, b) in enumerate(spans.tolist()) if text[a:b] == "acetylsalicylic"]
    assert flags[first[0]] and not flags[first[1]]
    ids = fz.word_ids(text, spans)
    assert ids[1] == 3 + N_SHAPES and ids[0] == 2  # "LEVAQUIN": UPPER + drug; "Gave": Title
    assert ids.max() < N_WORD_FEATS


def test_save_load_round_trip_is_byte_stable(tmp_path: Path) -> None:
    fz = WordFeaturizer(["zyrtec", "Warfarin", "insulin glargine"])
    fz.save(tmp_path / "a.gz")
    WordFeaturizer.load(tmp_path / "a.gz").save(tmp_path / "b.gz")
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert WordFeaturizer.load(tmp_path / "a.gz").lexicon == fz.lexicon
    with gzip.open(tmp_path / "a.gz", "rt") as fh:
        assert fh.read().splitlines() == ["insulin glargine", "warfarin", "zyrtec"]


def test_icd_titles_become_note_like_terms() -> None:
    titles = [
        "Other specified acute gastritis, without bleeding",
        "Pneumonia, unspecified organism",
        "Sprain of unspecified ligament of left ankle, initial encounter",
        "Staining of teeth NOS",
        "Nondisplaced fracture of triquetrum [cuneiform] bone, right wrist",
        "Chronic obstructive pulmonary disease with (acute) exacerbation",
    ]
    terms = set(icd_terms(titles))
    assert {"specified acute gastritis", "Pneumonia", "Staining of teeth"} <= terms
    assert "obstructive pulmonary disease" in terms  # "Chronic" dropped from the front
    assert "Nondisplaced fracture of triquetrum bone" in terms  # brackets dropped
    assert {"initial encounter", "right wrist"} <= terms  # two-word tails stay
    # one-word tails are laterality/encounter words, not problems
    assert not {"bleeding", "exacerbation", "right", "organism"} & terms


def test_problem_lexicon_sets_its_own_bit(tmp_path: Path) -> None:
    drugs_only = WordFeaturizer(["lasix"])
    fz = WordFeaturizer(["lasix"], ["heart failure", "Lasix"])
    assert (drugs_only.n_feats, fz.n_feats) == (N_WORD_FEATS, 2 * N_WORD_FEATS)
    text = "Congestive heart failure on Lasix."
    spans = _words(text)
    ids = fz.word_ids(text, spans).tolist()
    assert ids == [2, 1 + 2 * N_SHAPES, 1 + 2 * N_SHAPES, 1, 2 + 3 * N_SHAPES, 5]
    # without a problem lexicon the ids are what older models were trained on
    assert drugs_only.word_ids(text, spans).tolist() == [2, 1, 1, 1, 2 + N_SHAPES, 5]
    fz.save(tmp_path / "d.gz", tmp_path / "p.gz")
    again = WordFeaturizer.load(tmp_path / "d.gz", tmp_path / "p.gz")
    assert (again.lexicon, again.problems) == (fz.lexicon, fz.problems)
    assert WordFeaturizer.load(tmp_path / "d.gz").problems is None


def test_problem_lexicon_from_the_packaged_icd_list() -> None:
    pytest.importorskip("simple_icd_10_cm")  # the train extra
    from kiwi_fhir.extractors.wordfeats import problem_lexicon_from_package

    terms = {t.lower() for t in problem_lexicon_from_package()}
    assert len(terms) > 20_000
    assert {"pneumonia", "essential hypertension", "chest pain", "asthma"} <= terms
    assert "right" not in terms


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = default_model_dir()
    if not (path / "config.json").is_file():
        pytest.skip("no packaged model")
    return path


def test_every_subtoken_carries_its_words_feature(model_dir: Path) -> None:
    tok = load_tokenizer(model_dir / "tokenizer.json")
    text = "Started Levaquin and doripenem for PE."
    fz = WordFeaturizer(["levaquin", "doripenem"])
    note = encode_note(tok, text, featurizer=fz)
    word_ids = fz.word_ids(text, note.word_spans)
    ends = [*note.word_first.tolist()[1:], len(note.ids)]
    for w, (a, b) in enumerate(zip(note.word_first.tolist(), ends, strict=True)):
        assert (note.feats[a:b] == word_ids[w]).all()
    assert max(b - a for a, b in zip(note.word_first.tolist(), ends, strict=True)) > 1
    assert word_ids.max() >= N_SHAPES  # the drug names were found
    ids, feats = window_inputs(note, 0, 101, 102)
    assert feats[0] == 0 and feats[-1] == 0 and ids.shape == feats.shape
    # Without a featurizer (e.g. learning boundary rules) features are all zero.
    assert not encode_note(tok, text).feats.any()


def test_packaged_model_ships_its_lexicon(model_dir: Path) -> None:
    cfg = read_model_config(model_dir)
    lexicon = cfg["word_features"]["lexicon"]
    assert (model_dir / lexicon).is_file()
    pipe = pipeline_for(model_dir, cfg, 16)
    assert len(pipe.featurizer.lexicon) == cfg["word_features"]["lexicon_entries"]
    assert "levaquin" in pipe.featurizer.lexicon


def test_old_model_format_is_refused_with_advice(model_dir: Path, tmp_path: Path) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["format"] = "kiwi-fhir-bert/1"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="retrain"):
        read_model_config(tmp_path)


def test_unreadable_lexicon_is_a_model_error(model_dir: Path, tmp_path: Path) -> None:
    cfg = read_model_config(model_dir)
    (tmp_path / "tokenizer.json").write_bytes((model_dir / cfg["tokenizer"]).read_bytes())
    (tmp_path / "lex.gz").write_bytes(b"not gzip")
    cfg["word_features"] = {"lexicon": "lex.gz"}
    with pytest.raises(ModelError, match="lexicon"):
        pipeline_for(tmp_path, cfg, 16)


def test_missing_problem_lexicon_is_a_model_error(model_dir: Path, tmp_path: Path) -> None:
    cfg = read_model_config(model_dir)
    (tmp_path / cfg["word_features"]["lexicon"]).write_bytes(
        (model_dir / cfg["word_features"]["lexicon"]).read_bytes()
    )
    cfg["word_features"]["problem_lexicon"] = "problem_lexicon.txt.gz"
    with pytest.raises(ModelError, match=r"problem_lexicon\.txt\.gz"):
        pipeline_for(tmp_path, cfg, 16)
