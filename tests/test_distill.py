"""Distillation from an ensemble of teachers (``train --distill-teachers``)."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra")
pytest.importorskip("transformers", reason="needs the train extra")

import torch

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.extractors.decode import MAIN_TAGS, MOD_TAGS
from kiwi_fhir.extractors.onnx import default_model_dir
from kiwi_fhir.extractors.pipeline import BertPipeline
from kiwi_fhir.training import distill, loop
from kiwi_fhir.training.dataset import note_samples
from kiwi_fhir.training.distill import MeanProbRunner, average, labelled, load_teachers

NOTES = {
    "u9001": "HISTORY: Hypertension, on lisinopril 10 mg daily. No chest pain.\n",
    "u9002": "ASSESSMENT: Pneumonia. CBC and chest x-ray today. Start azithromycin.\n",
    "u9003": "Denies fever. Mild cough for 3 days.\n",
}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    out: np.ndarray = e / e.sum(-1, keepdims=True)
    return out


def test_average_is_the_elementwise_mean_of_the_distributions() -> None:
    a = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    b = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    c = np.array([[0.1, 0.0, 0.9], [0.4, 0.2, 0.4]], dtype=np.float32)
    got = average([a, b, c])
    assert np.allclose(got, [[0.5, 0.2, 0.3], [0.2, 0.5, 0.3]])
    assert np.allclose(got.sum(-1), 1.0)


class _Fake:
    """A runner with fixed logits; ``relate`` records what it was given."""

    def __init__(self, main: np.ndarray, hidden: float, rel: float) -> None:
        self.main, self.hidden, self.rel = main, hidden, rel
        self.seen: Any = None

    def tag(self, ids: np.ndarray, mask: np.ndarray, feats: np.ndarray) -> Any:
        shape = (*ids.shape, 2)
        return self.main, np.zeros((*ids.shape, 3), np.float32), np.full(shape, self.hidden)

    def relate(self, span_repr: np.ndarray, feats: np.ndarray) -> np.ndarray:
        self.seen = span_repr
        return np.full(len(span_repr), self.rel, np.float32)


def test_ensemble_runner_averages_probabilities_not_logits() -> None:
    rng = np.random.default_rng(0)
    logits = [rng.normal(0, 3, (1, 4, 5)).astype(np.float32) for _ in range(3)]
    rels = (2.0, -1.0, 0.0)
    runners = [_Fake(m, float(i), r) for i, (m, r) in enumerate(zip(logits, rels, strict=True))]
    ens = MeanProbRunner(runners)
    ids = np.zeros((1, 4), np.int64)
    main, _, hidden = ens.tag(ids, ids, ids)
    want = np.mean([_softmax(m) for m in logits], axis=0)
    assert np.allclose(_softmax(main), want, atol=1e-6)
    assert not np.allclose(_softmax(main), _softmax(np.mean(logits, axis=0)), atol=1e-3)
    # hidden states side by side; relate hands each teacher back its own slice
    assert hidden.shape == (1, 4, 6)
    reprs = np.concatenate([hidden[0, p] for p in (0, 1, 2, 3)])[None]  # the pipeline's layout
    logit = ens.relate(reprs.astype(np.float32), np.zeros((1, 7), np.int64))
    for i, r in enumerate(runners):
        assert r.seen.shape == (1, 8) and np.all(r.seen == i)
    sig = 1 / (1 + np.exp(-np.array([2.0, -1.0, 0.0])))
    assert np.isclose(1 / (1 + np.exp(-logit[0])), sig.mean(), atol=1e-6)


def test_soft_loss_is_cross_entropy_when_the_target_is_one_hot() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, len(MAIN_TAGS))
    tags = np.array([0, 3, 1, 0, 2, 5])
    onehot = torch.from_numpy(loop._target(None, tags, len(MAIN_TAGS)))
    keep = torch.ones(6, dtype=torch.bool)
    hard = torch.nn.functional.cross_entropy(logits, torch.from_numpy(tags))
    assert torch.isclose(loop.soft_ce(logits, onehot, keep), hard)
    keep[1] = False  # an IGNOREd word leaves the mean
    part = torch.nn.functional.cross_entropy(logits[keep], torch.from_numpy(tags)[keep])
    assert torch.isclose(loop.soft_ce(logits, onehot, keep), part)
    # a soft target: the expected cross-entropy under it, not the hard one
    soft = torch.softmax(torch.randn(6, len(MAIN_TAGS)), -1)
    want = -(soft * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert torch.isclose(loop.soft_ce(logits, soft, torch.ones(6, dtype=torch.bool)), want)


def _gold(doc_id: str, text: str) -> Extraction:
    a = text.index("Hypertension")
    m = text.index("No")
    b = text.index("chest pain")
    return Extraction(
        document=Document(doc_id, text),
        entities=(
            Entity("T1", "problem", a, a + 12, "Hypertension"),
            Entity("T2", "problem", b, b + 10, "chest pain"),
        ),
        modifiers=(Modifier("T3", "negation", m, m + 2, "No"),),
        relations=(Relation("T2", "T3"),),
    )


def test_teachers_label_notes_and_a_student_stage_trains_on_them(
    tmp_path: Path,
    tiny_encoder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = default_model_dir()
    docs = [Document(i, t) for i, t in NOTES.items()]
    where = tmp_path / "labels"
    exs, soft, conf = labelled([model, model], docs, where)
    assert (where / "soft.npz").is_file() and (where / "labels.json").is_file()
    single = load_teachers([model])
    for ex in exs:
        note = single.pipe.encode(ex.document.text)
        main, mod = soft[ex.document.id].main, soft[ex.document.id].mod
        assert main.dtype == np.float16 and main.shape == (note.n_words, len(MAIN_TAGS))
        assert mod.shape == (note.n_words, len(MOD_TAGS))
        # a teacher averaged with itself is that teacher
        one, p_main, _, links = distill.label_note(single, ex.document)
        assert np.allclose(main, p_main, atol=2e-3)
        assert [(e.label, e.span) for e in ex.entities] == [(e.label, e.span) for e in one.entities]
        assert 0.0 < conf[ex.document.id] <= 1.0
        # every decoded link is a scored pair, at the probability it was decoded with
        got = soft[ex.document.id].links
        for r in ex.relations:
            assert r.confidence is not None
            assert got[(r.entity_id, r.modifier_id)] == pytest.approx(r.confidence, abs=2e-3)
        assert got == pytest.approx(links, abs=2e-3)
        ids = {e.id for e in ex.entities}, {m.id for m in ex.modifiers}
        assert all(e in ids[0] and m in ids[1] and 0 <= p <= 1 for (e, m), p in got.items())
    assert sum(len(ex.entities) for ex in exs) > 0
    # the pairs below the link threshold are kept too: the soft targets' point
    scored = [p for ex in exs for p in soft[ex.document.id].links.values()]
    assert sum(len(ex.relations) for ex in exs) > 0 and any(p < 0.5 for p in scored)
    capsys.readouterr()
    again, soft2, _ = labelled([model, model], docs, where)  # reused, not relabelled
    assert "already holds these notes' labels" in capsys.readouterr().err
    assert [(e.label, e.span) for e in again[0].entities] == [
        (e.label, e.span) for e in exs[0].entities
    ]
    assert np.array_equal(soft2["u9002"].main, soft["u9002"].main)
    assert soft2["u9001"].links == soft["u9001"].links
    # a folder of another labels format (one without link scores) is relabelled
    monkeypatch.setattr(distill, "LABELS_FORMAT", distill.LABELS_FORMAT + 1)
    labelled([model, model], docs[:1], where)
    assert "already holds" not in capsys.readouterr().err
    monkeypatch.undo()

    # the student stage: gold + soft-labelled notes, soft CE on the pseudo words
    from kiwi_fhir.extractors.encoding import load_tokenizer
    from kiwi_fhir.training.selftrain import selftrain

    pipe = BertPipeline(load_tokenizer(tiny_encoder / "tokenizer.json"))
    samples = note_samples(pipe, exs[0], soft=soft["u9001"])
    assert samples[0].soft_main is not None and len(samples[0].soft_main) == len(
        samples[0].word_pos
    )
    # relation targets: the link probabilities, or 0/1 decoded links without them
    soft_pairs = np.concatenate([w.pair_labels for w in samples])
    hard = note_samples(pipe, exs[0], soft=soft["u9001"].hard_links())
    hard_pairs = np.concatenate([w.pair_labels for w in hard])
    assert len(soft_pairs) == len(hard_pairs) > 0
    assert set(hard_pairs.tolist()) <= {0.0, 1.0}
    assert sorted(soft_pairs.tolist()) == pytest.approx(sorted(soft["u9001"].links.values()))
    # (no link of these notes is dropped by the same-clause rule)
    threshold = single.pipe.cfg.relation_threshold
    assert np.array_equal(soft_pairs >= threshold, hard_pairs == 1.0)
    with pytest.raises(ValueError, match="do not match"):
        note_samples(pipe, exs[0], soft=soft["u9002"])
    gold = [_gold("g1", NOTES["u9001"])]
    calls: list[int] = []
    real = loop.soft_ce

    def spy(*a: Any) -> Any:
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(loop, "soft_ce", spy)

    def fit_encoder(ds: Any, ck: Any) -> Any:
        tagger, _ = loop.fit(pipe, tiny_encoder, ds, [], epochs=1, seed=0, soft=soft, checkpoint=ck)
        assert ck.path.is_file()  # saved after the epoch; gone once the encoder is
        return tagger

    out = selftrain(fit_encoder, tiny_encoder, gold, exs, tmp_path / "enc", {"soft": "k"})
    assert calls and (out / "selftrain.json").is_file() and (out / "config.json").is_file()
    assert not (out / "fit-checkpoint.pt").exists()
    assert json.loads((out / "selftrain.json").read_text())["pseudo_notes"] == 3


def test_distill_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kiwi_fhir.cli import main
    from kiwi_fhir.corpus import default_data_dir

    data = default_data_dir()
    if data is None:
        pytest.skip("shared corpus not available")
    (tmp_path / "notes").mkdir()
    teacher = str(default_model_dir())
    base = ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--max-notes", "2",
            "--pseudo-data", str(tmp_path / "notes"), "--distill-teachers", teacher]  # fmt: skip
    assert main([*base, "--min-confidence", "1.5"]) == 2
    assert "--min-confidence 1.5: must be in [0, 1]" in capsys.readouterr().err
    no_teachers = [a for a in base if a not in ("--distill-teachers", teacher)]
    assert main([*no_teachers, "--soft-relations"]) == 2
    assert "--soft-relations: needs --distill-teachers" in capsys.readouterr().err
    assert main(base) == 2  # no .txt notes to label
    assert "no .txt notes" in capsys.readouterr().err


@pytest.mark.parametrize("soft_relations", [False, True])
def test_the_distill_stage_hands_the_student_link_scores_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, soft_relations: bool
) -> None:
    import argparse

    from kiwi_fhir.training import stages

    notes = tmp_path / "unlabeled"
    notes.mkdir()
    for i, text in NOTES.items():
        (notes / f"{i}.txt").write_text(text, encoding="utf-8")
    args = argparse.Namespace(
        min_confidence=0.0, replace_prob=0.0, distill_teachers=str(default_model_dir()),
        pseudo_data=str(notes), pseudo_notes=None, distill_labels=str(tmp_path / "labels"),
        selftrain_dir=None, soft_relations=soft_relations,
    )  # fmt: skip
    got: dict[str, Any] = {}

    def capture(*a: Any, soft: Any, labels_key: str) -> Path:
        got.update(soft=soft, key=labels_key)
        return tmp_path

    monkeypatch.setattr(stages, "_encoder_stage", capture)
    stages.distill_stage(args, Any, Path(), [], [], tmp_path / "m", {})  # type: ignore[arg-type]
    links = [s.links for s in got["soft"].values()]
    assert set(got["soft"]) == set(NOTES)
    # soft: the scored pairs travel; hard: none, so the pairs train on 0/1 links
    assert any(links) if soft_relations else not any(links)
    digest = json.loads((tmp_path / "labels" / "labels.json").read_text())["digest"]
    # the two students' encoder stages never reuse each other (the key differs)
    assert got["key"] == (f"{digest}:soft-relations" if soft_relations else digest)
