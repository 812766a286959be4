"""The optional ``embedding`` match: MiniLM cosine between a mention and code titles.

Off by default (``terminology_embedding`` / ``--code-embedding``): it finds
codes for mentions no table spells ("a brief period of dyspnea" → R06.00),
but measured on the gold table it is right about half the time at the
default threshold, where the table methods are right 100 % of the time
(docs/terminology.md). It only runs for a mention the table methods left
uncoded, so turning it on never changes a code they give; its ``score`` is
the cosine, so receivers can threshold it apart from the table scores.

The encoder is the pretrained all-MiniLM-L6-v2 as an int8 ONNX graph in the
wheel (:mod:`.embed_build`). The title vectors are computed on first use
(about a minute on 2 cores for ICD-10-CM) and cached under
``$KIWI_FHIR_CACHE_DIR`` (default ``~/.cache/kiwi-fhir``), keyed by table
version and encoder; an unwritable cache only costs the minute again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kiwi_fhir.core import Code
from kiwi_fhir.errors import ConfigError
from kiwi_fhir.terminology.coders import TableCoder
from kiwi_fhir.terminology.normalize import LEADING_WORDS
from kiwi_fhir.terminology.tables import Table

log = logging.getLogger(__name__)

ENCODER_FILE = "minilm.int8.onnx"
TOKENIZER_FILE = "minilm.tokenizer.json"
_MAX_PIECES = 32  # titles and mentions are short; longer ones are cut
_NEAR = 0.02  # within this of the best, an "unspecified" title wins (ICD-10-CM default code)


def data_dir() -> Path:
    return Path(str(resources.files("kiwi_fhir.terminology") / "data"))


def cache_dir() -> Path:
    env = os.environ.get("KIWI_FHIR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "kiwi-fhir"


class SentenceEncoder:
    """Mean-pooled, unit-length MiniLM vectors (as sentence-transformers pools it)."""

    def __init__(self, directory: Path | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        where = directory or data_dir()
        model, vocab = where / ENCODER_FILE, where / TOKENIZER_FILE
        if not model.is_file() or not vocab.is_file():
            raise ConfigError(f"embedding match: {model} not found; run `make terminology`")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(vocab))
        self.tokenizer.enable_truncation(_MAX_PIECES)
        self.tokenizer.enable_padding()
        self.digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]

    def encode(self, texts: Sequence[str], batch: int = 256) -> NDArray[np.float32]:
        out = []
        for i in range(0, len(texts), batch):
            enc = self.tokenizer.encode_batch(list(texts[i : i + batch]))
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            (hidden,) = self.session.run(["hidden"], {"input_ids": ids, "attention_mask": mask})
            pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9))
        if not out:
            return np.zeros((0, 384), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class TitleIndex:
    """Code titles and their vectors: float16 on disk (half the size, same
    ranking), float32 in memory, since numpy has no fast float16 matmul (a
    float16 index made coding 800 times slower)."""

    titles: tuple[str, ...]
    codes: tuple[str, ...]
    vectors: NDArray[np.float32]


def index_titles(table: Table, titles: str, max_words: int) -> list[tuple[str, str]]:
    """(title, code) pairs to embed: each code's display (``titles: display``,
    ICD-10-CM) or each source name (``titles: name``, the LOINC table's lab
    names), sorted so the index is the same on every machine."""
    pairs: set[tuple[str, str]] = set()
    for key in table.rows:
        row = table.get(key)
        assert row is not None
        title = row.display if titles == "display" else row.name
        if len(title.split()) <= max_words:
            pairs.add((title, row.code))
    return sorted(pairs)


def load_index(
    table: Table, encoder: SentenceEncoder, titles: str, max_words: int
) -> TitleIndex:
    key = hashlib.sha256(
        f"{table.name}|{table.version}|{len(table)}|{titles}|{max_words}|{encoder.digest}".encode()
    ).hexdigest()[:20]
    path = cache_dir() / "terminology" / f"{table.name}-{key}.npz"
    pairs = index_titles(table, titles, max_words)
    try:
        with np.load(path) as saved:
            vectors = saved["vectors"]
        if vectors.shape[0] == len(pairs):
            return TitleIndex(tuple(t for t, _ in pairs), tuple(c for _, c in pairs),
                              vectors.astype(np.float32))  # fmt: skip
    except (OSError, KeyError, ValueError):
        pass
    log.info("embedding %d %s titles (first use; cached in %s)", len(pairs), table.name, path)
    vectors = encoder.encode([t for t, _ in pairs]).astype(np.float16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=vectors)
        tmp.replace(path)
    except OSError as exc:
        log.warning("embedding index for %s not cached (%s)", table.name, type(exc).__name__)
    return TitleIndex(tuple(t for t, _ in pairs), tuple(c for _, c in pairs),
                      vectors.astype(np.float32))  # fmt: skip


def _query(text: str) -> str:
    """The mention as a title would say it: lower case, without a leading
    article or possessive (which no title has and which pull the vector)."""
    words = text.lower().split()
    while len(words) > 1 and words[0] in LEADING_WORDS:
        words = words[1:]
    return " ".join(words)


@dataclass
class EmbeddingCoder:
    """A :class:`TableCoder` plus the embedding match for what it leaves uncoded."""

    inner: TableCoder
    titles: str = "display"
    max_words: int = 8
    threshold: float = 0.8
    _encoder: SentenceEncoder | None = field(default=None, init=False, repr=False)
    _index: TitleIndex | None = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def system(self) -> str:
        return self.inner.system

    def _ready(self) -> tuple[SentenceEncoder, TitleIndex]:
        if self._encoder is None:
            self._encoder = SentenceEncoder()
        if self._index is None:
            self._index = load_index(self.inner.table, self._encoder, self.titles, self.max_words)
        return self._encoder, self._index

    def candidates(self, text: str, limit: int = 1) -> list[Code]:
        return self.candidates_many([text], limit)[0]

    def candidates_many(self, texts: Sequence[str], limit: int = 1) -> list[list[Code]]:
        found = self.inner.candidates_many(texts, limit)
        todo = [i for i, codes in enumerate(found) if not codes and _query(texts[i])]
        if not todo:
            return found
        encoder, index = self._ready()
        queries = encoder.encode([_query(texts[i]) for i in todo])
        sims = queries @ index.vectors.T
        for row, i in zip(sims, todo, strict=True):
            found[i] = self._ranked(row, index, limit)
        return found

    def _ranked(self, sims: NDArray[np.float32], index: TitleIndex, limit: int) -> list[Code]:
        k = min(max(limit, 1) + 20, len(sims))
        if not k:
            return []
        part = np.argpartition(-sims, k - 1)[:k]  # the k best without sorting 27k
        top = part[np.lexsort((part, -sims[part]))]  # by cosine, ties by index: stable
        if sims[top[0]] < self.threshold:
            return []
        best = float(sims[top[0]])
        near = [j for j in top if sims[j] >= best - _NEAR]
        unspecified = [j for j in near if "unspecified" in index.titles[j].lower()]
        order = [*unspecified[:1], *(j for j in top if j not in unspecified[:1])]
        codes: list[Code] = []
        for j in order:
            if sims[j] < self.threshold or len(codes) >= limit:
                break
            code = index.codes[j]
            if any(c.code == code for c in codes):
                continue
            row = self.inner.row_for_code(code)
            display = row.display if row is not None else index.titles[j]
            codes.append(Code(self.system, code, display, round(float(sims[j]), 3), "embedding",
                              self.inner.table.version))  # fmt: skip
        return codes


def embedding_settings(config: dict[str, Any], name: str) -> dict[str, Any] | None:
    """``embedding.tables.<name>`` of terminology.yaml with the shared threshold."""
    section = config.get("embedding") or {}
    tables = section.get("tables") or {}
    if name not in tables:
        return None
    entry = dict(tables[name] or {})
    entry.setdefault("threshold", section.get("threshold", 0.8))
    return entry
