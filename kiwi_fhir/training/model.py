"""The two networks we train and export: a two-layer tagger and a pair scorer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn


class Tagger(nn.Module):
    """Encoder + one linear head per BIO layer; also returns hidden states
    so the relation scorer can reuse them without a second encoder pass.

    Word features (wordfeats.py) are embedded and added to the encoder's
    token embeddings. Their table starts at zero, so training starts from
    the pretrained encoder's exact behaviour and learns what case and the
    drug lexicon are worth."""

    def __init__(
        self, encoder_dir: Path, n_main: int, n_mod: int, n_feats: int, *, crf: bool = False
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        # .float(): transformers 5 loads weights in their stored dtype, and an
        # encoder saved in fp16 (to fit a GPU trip, scripts/gpu_pack.py) must
        # still train in fp32.
        self.encoder = AutoModel.from_pretrained(str(encoder_dir)).float()
        hidden = int(self.encoder.config.hidden_size)
        self.word_feats = nn.Embedding(n_feats, hidden)
        nn.init.zeros_(self.word_feats.weight)
        self.drop = nn.Dropout(0.1)
        self.main = nn.Linear(hidden, n_main)
        self.mod = nn.Linear(hidden, n_mod)
        # CRF transitions of the entity layer (crf.py); not part of the
        # exported graph: they travel in config.json.
        self.main_trans = nn.Parameter(torch.zeros(n_main, n_main)) if crf else None

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_feats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        emb = self.encoder.get_input_embeddings()(input_ids) + self.word_feats(word_feats)
        h = self.encoder(inputs_embeds=emb, attention_mask=attention_mask).last_hidden_state
        hd = self.drop(h)
        return self.main(hd), self.mod(hd), h


class RelationHead(nn.Module):
    """Scores (entity, modifier) pairs from their boundary states plus the
    categorical features a nearest-entity rule would use, so one modifier
    can link to many entities (one "no" negating a list)."""

    def __init__(
        self, hidden: int, feat_sizes: Sequence[int], emb: int = 16, width: int = 256
    ) -> None:
        super().__init__()
        self.embs = nn.ModuleList(nn.Embedding(n, emb) for n in feat_sizes)
        self.mlp = nn.Sequential(
            nn.Linear(4 * hidden + emb * len(feat_sizes), width),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(width, 1),
        )

    def forward(self, span_repr: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        parts = [span_repr] + [e(feats[:, i]) for i, e in enumerate(self.embs)]
        out: torch.Tensor = self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)
        return out


class TorchRunner:
    """:class:`~kiwi_fhir.extractors.pipeline.Runner` over the torch modules,
    so dev scores during training come from the exact inference path."""

    def __init__(self, tagger: Tagger, head: RelationHead) -> None:
        self.tagger, self.head = tagger, head

    @torch.no_grad()
    def tag(
        self, input_ids: NDArray[np.int64], mask: NDArray[np.int64], feats: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        self.tagger.eval()
        dev = next(self.tagger.parameters()).device  # a GPU during training, if used
        a, b, h = self.tagger(*(torch.from_numpy(x).to(dev) for x in (input_ids, mask, feats)))
        return a.cpu().numpy(), b.cpu().numpy(), h.cpu().numpy()

    @torch.no_grad()
    def relate(
        self, span_repr: NDArray[np.float32], feats: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        self.head.eval()
        dev = next(self.head.parameters()).device
        out: NDArray[np.float32] = (
            self.head(torch.from_numpy(span_repr).to(dev), torch.from_numpy(feats).to(dev))
            .cpu()
            .numpy()
        )
        return out
