"""Dev-split scoring the way the paper reports it.

Two RE figures: end-to-end (predicted entities) and given gold main
entities (the paper's RE setting); NER and modifiers come from the
end-to-end run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kiwi_fhir.core import Extraction
from kiwi_fhir.evaluation import evaluate
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.extractors.pipeline import BertPipeline, Runner


def summarize(e2e: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    return {
        "end_to_end": e2e,
        "given_entities": given,
        "headline": {
            "ner": e2e["ner"]["exact"],
            "ner_relaxed": e2e["ner"]["relaxed"],
            "modifier": e2e["modifier"]["exact"],
            "re_end_to_end": e2e["re"]["exact"],
            "re_given_entities": given["re"]["exact"],
        },
    }


def dev_metrics_with(
    pipe: BertPipeline, runner: Runner, dev: Sequence[Extraction], *, bootstrap: bool = True
) -> dict[str, Any]:
    docs = [g.document for g in dev]
    n = 1000 if bootstrap else 1
    e2e = evaluate(dev, pipe.run(runner, docs), resamples=n)
    given = evaluate(dev, pipe.run(runner, docs, [g.entities for g in dev]), resamples=n)
    return summarize(e2e, given)


def dev_metrics(extractor: Extractor, dev: Sequence[Extraction]) -> dict[str, Any]:
    docs = [g.document for g in dev]
    e2e = evaluate(dev, extractor.extract(docs))
    given = evaluate(dev, extractor.extract(docs, [g.entities for g in dev]))
    return summarize(e2e, given)
