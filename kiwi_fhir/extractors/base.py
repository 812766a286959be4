"""The extractor plug-in interface.

One abstract base, several implementations chosen by configuration: the
in-process ONNX extractor (default, CPU), and remote ones (Triton, vLLM)
that live in their own modules and need their own extras.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from kiwi_fhir.core import Document, Entity, Extraction


class Extractor(abc.ABC):
    """Load once, then extract many batches; implementations are thread-safe."""

    name: str = "extractor"

    @abc.abstractmethod
    def load(self) -> None:
        """Acquire the model or connection; raise ``ModelError`` if impossible."""

    @abc.abstractmethod
    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        """Extractions in input order.

        ``given_entities[i]`` (when not None) fixes the main entities of
        document ``i``: only modifiers and relations are predicted, which is
        how the Kiwi paper scores relation extraction.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default has none."""

    def health(self) -> bool:
        """Whether ``extract`` is expected to work right now."""
        return True

    @property
    def model_id(self) -> str:
        return self.name
