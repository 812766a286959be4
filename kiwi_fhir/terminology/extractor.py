"""Any extractor, its results coded: how the service and the CLI attach codes.

A wrapper rather than a step inside each backend, so ONNX, Triton, vLLM and
hybrid results are coded by the same tables, once, before they are stored
or rendered (JSON, gRPC and FHIR then agree).
"""

from __future__ import annotations

from collections.abc import Sequence

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.terminology import DEFAULT_CODING, CodingOptions, code_all


class CodingExtractor(Extractor):
    def __init__(self, inner: Extractor, options: CodingOptions = DEFAULT_CODING) -> None:
        self.inner = inner
        self.options = options
        self.name = inner.name

    def load(self) -> None:
        self.inner.load()

    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        return code_all(self.inner.extract(documents, given_entities), self.options)

    def close(self) -> None:
        self.inner.close()

    def health(self) -> bool:
        return self.inner.health()

    @property
    def model_id(self) -> str:
        return self.inner.model_id
