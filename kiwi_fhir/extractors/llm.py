"""The vLLM extractor: the Kiwi two-stage prompting over an HTTP server.

Stage one asks the NER prompt for every sentence; stage two asks, for each
entity found (or given), the relation prompt of its type with that entity
tagged in its sentence, and reads the tagged modifiers as its ``hasAttr``
relations. This is how the instruction-tuned Kiwi LLaMA weights were trained
and evaluated, so they work unchanged behind a vLLM OpenAI server.

Many sentences go in one request (the completions API takes a list of
prompts) and at most ``max_concurrency`` requests are in flight, shared by
all callers of one extractor. With ``guided=True`` each prompt carries a
grammar (vLLM structured outputs, :mod:`llm_guided`) that only lets the
model copy its input and insert well-formed tags, so every answer aligns;
that needs one request per prompt. Alignment failures and refused prompts are dropped and counted
(:meth:`LlmExtractor.stats`), never guessed at.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.errors import BackendError, BackendRejectedError, ConfigError, ModelError
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.extractors.llm_client import BACKEND, CompletionsClient
from kiwi_fhir.extractors.llm_guided import copy_grammar
from kiwi_fhir.extractors.llm_parse import ParseStats, parse_tagged
from kiwi_fhir.extractors.llm_prompts import (
    MAX_TOKENS,
    RE_CLASSES,
    STOPS,
    flatten,
    mark,
    ner_prompt,
    re_prompt,
)
from kiwi_fhir.schema import ENTITY_TYPES
from kiwi_fhir.segment import sentences

log = logging.getLogger(__name__)

__all__ = ["LlmExtractor"]


@dataclass(frozen=True)
class _Job:
    """One prompt: which document and sentence it reads, and what it may tag."""

    doc: int
    start: int  # sentence offset in the note
    sentence: str
    prompt: str
    classes: frozenset[str]  # classes to keep from the answer
    entity: int = -1  # index of the entity an RE prompt asks about
    label: str = ""  # and its type, tagged in the prompt (copied back, not kept)


class LlmExtractor(Extractor):
    name = BACKEND

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "kiwi-llama",
        *,
        timeout_s: float = 120.0,
        max_concurrency: int = 4,
        guided: bool = False,
        batch_size: int = 16,
        max_tokens: int = MAX_TOKENS,
        retries: int = 3,
        backoff_s: float = 0.5,
        api_key: str | None = None,
        transport: Any = None,
    ) -> None:
        if max_concurrency < 1 or batch_size < 1 or max_tokens < 1:
            raise ConfigError("LLM max_concurrency, batch_size and max_tokens must be >= 1")
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.guided = guided
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.retries = retries
        self.backoff_s = backoff_s
        self._api_key = api_key
        self._transport = transport
        self._client: CompletionsClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._stats = ParseStats()
        self._failed_prompts = 0

    # -- lifecycle -------------------------------------------------------------

    def load(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            client = CompletionsClient(
                self.base_url, self.model, timeout_s=self.timeout_s, retries=self.retries,
                backoff_s=self.backoff_s, max_connections=self.max_concurrency,
                api_key=self._api_key, transport=self._transport,
            )  # fmt: skip
            try:
                served = client.models()
            except BackendError as exc:
                client.close()
                raise ModelError(f"vLLM server at {client.url} is not usable: {exc}") from exc
            if self.model not in served:
                client.close()
                raise ModelError(f"vLLM server at {client.url} does not serve {self.model!r}")
            self._client = client
            self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="kiwi-llm")

    def health(self) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            return self.model in client.models(retries=0, timeout_s=min(5.0, self.timeout_s))
        except BackendError:
            return False

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._client is not None:
                self._client.close()
            self._client, self._pool = None, None

    @property
    def model_id(self) -> str:
        return self.model

    def stats(self) -> dict[str, int]:
        """Parser and request counters since start (for metrics; no text)."""
        with self._lock:
            return {**self._stats.as_dict(), "failed_prompts": self._failed_prompts}

    # -- extraction ------------------------------------------------------------

    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        if self._client is None:
            self.load()
        given = list(given_entities) if given_entities is not None else [None] * len(documents)
        if len(given) != len(documents):
            raise ValueError("given_entities must have one entry per document")
        sents = [sentences(d.text) for d in documents]
        ner_jobs = [
            _Job(i, s, doc.text[s:e], ner_prompt(doc.text[s:e]), frozenset(ENTITY_TYPES))
            for i, doc in enumerate(documents) if given[i] is None
            for s, e in sents[i]
        ]  # fmt: skip
        found: list[list[Entity]] = [list(g) if g is not None else [] for g in given]
        spans: list[set[tuple[str, int, int]]] = [set() for _ in documents]
        for job, out in zip(ner_jobs, self._run(ner_jobs), strict=True):
            for t in self._parse(job, out):
                spans[job.doc].add((t[0], t[1], t[2]))
        for i, doc in enumerate(documents):
            if given[i] is None:
                found[i] = [
                    Entity(f"T{n + 1}", lab, s, e, doc.text[s:e], source=BACKEND)
                    for n, (lab, s, e) in enumerate(sorted(spans[i], key=lambda x: (x[1], x[2])))
                ]
        re_jobs = [
            self._re_job(i, n, ent, doc.text, sents[i])
            for i, doc in enumerate(documents)
            for n, ent in enumerate(found[i]) if ent.label in RE_CLASSES
        ]  # fmt: skip
        links: list[list[tuple[int, str, int, int]]] = [[] for _ in documents]
        for job, out in zip(re_jobs, self._run(re_jobs), strict=True):
            for lab, s, e in self._parse(job, out):
                links[job.doc].append((job.entity, lab, s, e))
        return [self._build(doc, found[i], links[i]) for i, doc in enumerate(documents)]

    def _re_job(
        self, doc: int, n: int, ent: Entity, text: str, sents: list[tuple[int, int]]
    ) -> _Job:
        """The entity's sentence (or the sentences it spans) with it tagged."""
        inside = [(s, e) for s, e in sents if s < ent.end and ent.start < e]
        s = min([ent.start, *(a for a, _ in inside)])
        e = max([ent.end, *(b for _, b in inside)])
        marked = mark(text[s:e], ent.start - s, ent.end - s, ent.label)
        classes = RE_CLASSES[ent.label]
        return _Job(doc, s, text[s:e], re_prompt(ent.label, marked), classes, n, ent.label)

    def _parse(self, job: _Job, output: str) -> list[tuple[str, int, int]]:
        found, stats = parse_tagged(job.sentence, output, job.classes, ignore=(job.label,))
        with self._lock:
            self._stats.add(stats)
        return [(t.label, job.start + t.start, job.start + t.end) for t in found]

    def _build(
        self, doc: Document, ents: list[Entity], links: list[tuple[int, str, int, int]]
    ) -> Extraction:
        used = {e.id for e in ents}
        mods: dict[tuple[str, int, int], Modifier] = {}
        rels: list[Relation] = []
        for ent_idx, lab, s, e in sorted(links, key=lambda x: (x[2], x[3], x[1], x[0])):
            key = (lab, s, e)
            if key not in mods:
                n = len(used) + 1
                while f"T{n}" in used:
                    n += 1
                used.add(f"T{n}")
                mods[key] = Modifier(f"T{n}", lab, s, e, doc.text[s:e], source=BACKEND)
            rel = Relation(ents[ent_idx].id, mods[key].id, None, f"R{len(rels) + 1}")
            if all((r.entity_id, r.modifier_id) != (rel.entity_id, rel.modifier_id) for r in rels):
                rels.append(rel)
        return Extraction(
            document=doc, entities=tuple(ents), modifiers=tuple(mods.values()),
            relations=tuple(rels), model=self.model_id, backend=self.name,
        )  # fmt: skip

    # -- requests --------------------------------------------------------------

    def _run(self, jobs: Sequence[_Job]) -> list[str]:
        """Completions for ``jobs`` in order; a refused prompt answers ""."""
        if not jobs:
            return []
        assert self._pool is not None
        size = 1 if self.guided else self.batch_size
        batches = [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]
        outs: list[str] = []
        for part in self._pool.map(self._request, batches):
            outs.extend(part)
        return outs

    def _request(self, batch: list[_Job]) -> list[str]:
        client = self._client
        assert client is not None
        # A tagged copy of the sentence is its tokens plus a few per tag; the
        # cap stops a model that never writes <EOS> from running to 512. A
        # guided answer ends with its grammar, and may hold many tags.
        budget = self.max_tokens
        grammar = None
        if self.guided:
            job = batch[0]
            # RE answers carry the entity's own tag too, with modifiers nested in it.
            grammar = copy_grammar(flatten(job.sentence), job.classes | {job.label} - {""})
        else:
            budget = min(self.max_tokens, 32 + max(len(j.sentence) for j in batch))
        try:
            return client.complete(
                [j.prompt for j in batch], max_tokens=budget, stop=STOPS, grammar=grammar
            )
        except BackendRejectedError as exc:
            if len(batch) > 1:  # find the one prompt the server refuses
                return [out for j in batch for out in self._request([j])]
            log.warning("vLLM refused one prompt (%s); its sentence yields nothing", exc.kind)
            with self._lock:
                self._failed_prompts += 1
            return [""]
