"""Training options: [MASK] augmentation, weight EMA, layer-wise learning rates."""

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the train extra")
pytest.importorskip("transformers", reason="needs the train extra")

import torch

from kiwi_fhir.extractors.decode import MAIN_TAGS, MOD_TAGS
from kiwi_fhir.training.dataset import WindowSample
from kiwi_fhir.training.loop import (
    IGNORE,
    _collate,
    _drop_masked_labels,
    _Ema,
    _encoder_groups,
    _mask_ids,
)
from kiwi_fhir.training.model import RelationHead, Tagger


class _Pipe:
    cls_id, sep_id = 101, 102


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=120, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("enc")
    BertModel(cfg).save_pretrained(out)
    return out


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[101, 7, 8, 9, 102, 0], [101, 10, 11, 12, 13, 102]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    in_mod = torch.zeros_like(ids, dtype=torch.bool)
    in_mod[1, 2:4] = True  # word pieces of a gold modifier
    in_ent = torch.zeros_like(ids, dtype=torch.bool)
    in_ent[0, 2:4] = True  # a gold entity
    in_ent[1, 1:4] = True  # a gold entity holding that modifier
    return {"ids": ids, "mask": mask, "in_mod": in_mod, "in_ent": in_ent}


def test_mask_ids_spares_special_tokens_padding_and_gold_modifiers() -> None:
    b = _batch()
    gen = torch.Generator().manual_seed(0)
    got = _mask_ids(b, 1.0, gen, _Pipe(), 103, "non-modifier")  # type: ignore[arg-type]
    assert got.tolist() == [[101, 103, 103, 103, 102, 0], [101, 103, 11, 12, 103, 102]]
    got = _mask_ids(b, 1.0, gen, _Pipe(), 103, "all")  # type: ignore[arg-type]
    assert got[1].tolist() == [101, 103, 103, 103, 103, 102]
    assert b["ids"][0, 1] == 7  # the batch itself is not modified
    assert _mask_ids(b, 0.0, gen, _Pipe(), 103, "all").equal(b["ids"])  # type: ignore[arg-type]


def test_mask_ids_entity_scope_masks_only_entity_pieces_outside_modifiers() -> None:
    b = _batch()
    got = _mask_ids(b, 1.0, torch.Generator(), _Pipe(), 103, "entity")  # type: ignore[arg-type]
    assert got.tolist() == [[101, 7, 103, 103, 102, 0], [101, 103, 11, 12, 13, 102]]


def test_mask_ids_is_reproducible_from_the_generator_seed() -> None:
    b = _batch()
    runs = [
        _mask_ids(b, 0.5, torch.Generator().manual_seed(5), _Pipe(), 103, "all")  # type: ignore[arg-type]
        for _ in range(2)
    ]
    assert runs[0].equal(runs[1])


def test_masked_words_lose_modifier_labels_and_their_modifiers_pairs() -> None:
    import numpy as np

    # [CLS] no chest pa ##in mild cough [SEP]: words at 1, 2, 3 (2 pieces), 5, 6
    ids = np.array([101, 20, 21, 22, 23, 24, 25, 102])
    mod = np.array([MOD_TAGS.index("B-negation"), 0, 0, MOD_TAGS.index("B-severity"), 0])
    sample = WindowSample(
        ids=ids,
        feats=np.zeros_like(ids),
        word_pos=np.array([1, 2, 3, 5, 6]),
        main_tags=np.zeros(5, dtype=np.int64),
        mod_tags=mod,
        # (entity first, last, modifier first, last): "no" → chest pain, "mild" → cough,
        # "no … mild" (a made-up long modifier) → cough
        pair_pos=np.array([[2, 3, 1, 1], [6, 6, 5, 5], [6, 6, 1, 5]]),
        pair_feats=np.zeros((3, 7), dtype=np.int64),
        pair_labels=np.array([1.0, 1.0, 0.0], dtype=np.float32),
    )
    sev = MOD_TAGS.index("B-severity")
    batch = _collate([sample], 0)
    hit = torch.zeros((1, 8), dtype=torch.bool)
    hit[0, 4] = True  # "##in": the word "pain" has a masked piece
    _drop_masked_labels(batch, hit)
    assert batch["mod"].tolist() == [mod[0], 0, IGNORE, sev, 0]
    # only the pair whose modifier spans "pain" is gone
    assert batch["ppos"].tolist() == [[2, 3, 1, 1], [6, 6, 5, 5]]
    batch = _collate([sample], 0)
    hit[0, 4], hit[0, 1] = False, True  # now only "no" is masked
    _drop_masked_labels(batch, hit)
    assert batch["mod"].tolist() == [IGNORE, 0, 0, sev, 0]
    assert batch["ppos"].tolist() == [[6, 6, 5, 5]]  # pairs whose modifier holds "no" are gone
    assert len(batch["prow"]) == len(batch["pfeat"]) == len(batch["plab"]) == 1


def test_layer_decay_scales_rates_by_depth_and_covers_every_parameter(
    tiny_encoder: Path,
) -> None:
    tagger = Tagger(tiny_encoder, len(MAIN_TAGS), len(MOD_TAGS), 12)
    (one,) = _encoder_groups(tagger, 1e-3, 1.0)
    assert one["lr"] == 1e-3
    groups = _encoder_groups(tagger, 1e-3, 0.5)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 / 8, 1e-3 / 4, 1e-3 / 2, 1e-3])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(tagger.encoder.parameters()))
    emb = {id(p) for p in tagger.encoder.embeddings.parameters()}
    assert {id(p) for p in groups[0]["params"]} == emb


def test_ema_warms_up_then_averages_with_the_given_decay(tiny_encoder: Path) -> None:
    tagger = Tagger(tiny_encoder, len(MAIN_TAGS), len(MOD_TAGS), 12)
    head = RelationHead(tagger.hidden_size, (3, 3))
    ema = _Ema(tagger, head, 0.9)
    w0 = tagger.main.weight.detach().clone()
    with torch.no_grad():
        tagger.main.weight.add_(1.0)
    ema.update(tagger, head)  # warm-up decay min(0.9, 2 / 11)
    d = 2 / 11
    assert torch.allclose(ema.modules[0].main.weight, d * w0 + (1 - d) * (w0 + 1), atol=1e-6)
    for _ in range(200):
        ema.update(tagger, head)
    assert torch.allclose(ema.modules[0].main.weight, w0 + 1, atol=1e-4)
    assert not any(p.requires_grad for p in ema.modules[0].parameters())
    assert ema.modules[0] is not tagger
