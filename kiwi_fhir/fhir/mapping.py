"""The entity -> FHIR mapping tables (``mappings/*.yaml``): find, load, validate.

The tables are data so that a site can change a code system or where a
modifier lands without touching code; the price is that a typo must fail at
start-up, not as a half-built resource in production. Hence every rule is
checked here against the label schema, the parser registry, the tables and
the fhir.resources R4B models, and any fault is a ``ConfigError`` naming the
file and the key.

Where the tables live: a checkout keeps them in the top-level ``mappings/``
folder (also what an editable install sees); a wheel installs them as data
files under ``<prefix>/share/kiwi-fhir/mappings`` (pyproject
``[tool.setuptools.data-files]``), found relative to the installed package
or the interpreter prefix. ``KIWI_FHIR_MAPPINGS`` overrides all of these.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import yaml

from kiwi_fhir.errors import ConfigError
from kiwi_fhir.fhir.tables import (
    PARSER_TYPES,
    Codes,
    Coding,
    Contained,
    EntityMapping,
    FhirMapping,
    Rule,
)
from kiwi_fhir.schema import ALLOWED_MODIFIERS, ENTITY_TYPES

FILES: Final[tuple[str, ...]] = ("resources.yaml", "codes.yaml")

_RULE_KINDS: Final[tuple[str, ...]] = ("set", "path", "extension", "route", "record")


def mappings_dir() -> Path:
    """The folder holding the tables (env override, checkout, installed data files)."""
    env = os.environ.get("KIWI_FHIR_MAPPINGS")
    if env:  # an explicit choice never falls back silently to other tables
        if not all((Path(env) / name).is_file() for name in FILES):
            raise ConfigError(f"KIWI_FHIR_MAPPINGS={env}: needs {' and '.join(FILES)}")
        return Path(env)
    candidates: list[Path] = []
    here = Path(__file__).resolve().parents[2]  # checkout root, or site-packages
    candidates.append(here / "mappings")
    rel = Path("share") / "kiwi-fhir" / "mappings"
    # <prefix>/lib/pythonX.Y/site-packages -> <prefix>/share/...; also --target dirs
    candidates += [p / rel for p in (here, *here.parents[:3])]
    prefixes = [sysconfig.get_path("data"), sys.prefix, sys.base_prefix, site.getuserbase()]
    candidates += [Path(p) / rel for p in prefixes if p]
    for c in candidates:
        if all((c / name).is_file() for name in FILES):
            return c
    raise ConfigError(
        f"FHIR mapping tables not found (looked in {len(candidates)} places; "
        "set KIWI_FHIR_MAPPINGS to the folder holding resources.yaml)"
    )


@lru_cache(maxsize=4)
def load_mapping(directory: Path | None = None) -> FhirMapping:
    """The validated mapping (cached: one parse per process and folder)."""
    folder = directory if directory is not None else mappings_dir()
    raw = {name: _read_yaml(folder / name) for name in FILES}
    codes = _codes(raw["codes.yaml"], str(folder / "codes.yaml"))
    return _resources(raw["resources.yaml"], codes, str(folder / "resources.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML") from exc
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError(f"{path}: expected a mapping with 'version: 1'")
    return data


def _need(cond: bool, src: str, key: str, reason: str) -> None:
    if not cond:
        raise ConfigError(f"{src}: {key}: {reason}")


def _codes(data: Mapping[str, Any], src: str) -> Codes:
    from kiwi_fhir.fhir.units import check_ucum

    raw_systems = data.get("systems")
    if not isinstance(raw_systems, dict):
        raise ConfigError(f"{src}: systems: expected a mapping")
    systems: dict[str, str] = {str(k): str(v) for k, v in raw_systems.items()}

    def coding(v: Any, key: str) -> Coding:
        ok = isinstance(v, list) and len(v) == 3 and v[0] in systems
        _need(ok, src, key, "expected [system key, code, display] with a known system")
        return Coding(systems[v[0]], str(v[1]), str(v[2]))

    coded: dict[str, dict[str, Coding]] = {}
    for table, rows in (data.get("coded") or {}).items():
        _need(isinstance(rows, dict), src, f"coded.{table}", "expected a mapping")
        coded[table] = {str(k): coding(v, f"coded.{table}.{k}") for k, v in rows.items()}
    units = {str(k): str(v) for k, v in (data.get("units") or {}).items()}
    time_units = {str(k): str(v) for k, v in (data.get("time_units") or {}).items()}
    for key, code in [*units.items(), *time_units.items()]:
        _need(check_ucum(code), src, f"units.{key}", f"{code!r} is not a valid UCUM code")
    freq = data.get("frequency") or {}
    allowed = {"frequency", "period", "periodUnit", "periodMax", "when", "as_needed"}
    for key, rep in freq.items():
        ok = isinstance(rep, dict) and set(rep) <= allowed
        _need(ok, src, f"frequency.{key}", f"expected keys among {sorted(allowed)}")
    bp = data.get("blood_pressure") or {}
    _need(set(bp) == {"systolic", "diastolic"}, src, "blood_pressure", "needs systolic+diastolic")
    words = data.get("number_words") or {}
    _need(all(isinstance(v, int) for v in words.values()), src, "number_words", "ints only")
    _need("ucum" in systems, src, "systems.ucum", "missing")
    return Codes(
        coded=coded,
        relationship_prefixes=tuple(str(p) for p in data.get("relationship_prefixes") or ()),
        frequency=freq,
        units=units,
        time_units=time_units,
        blood_pressure={k: coding(v, f"blood_pressure.{k}") for k, v in bp.items()},
        number_words={str(k): int(v) for k, v in words.items()},
        ucum=str(systems["ucum"]),
    )


def _resources(data: Mapping[str, Any], codes: Codes, src: str) -> FhirMapping:
    from kiwi_fhir.fhir.paths import check_path

    exts = data.get("extensions") or {}
    _need(
        isinstance(exts, dict) and all(isinstance(v, str) for v in exts.values()),
        src,
        "extensions",
        "expected key -> url",
    )
    for required in ("derivation_reference", "confidence", "modifier"):
        _need(required in exts, src, f"extensions.{required}", "missing")
    entities_raw = data.get("entities") or {}
    _need(isinstance(entities_raw, dict), src, "entities", "expected a mapping")
    for etype in ENTITY_TYPES:
        _need(etype in entities_raw, src, f"entities.{etype}", "no mapping for this entity type")
    entities: dict[str, EntityMapping] = {}
    for key, spec in entities_raw.items():
        at = f"entities.{key}"
        _need(isinstance(spec, dict), src, at, "expected a mapping")
        resource = str(spec.get("resource", ""))
        contained = None
        if isinstance(spec.get("contained"), dict):
            c = spec["contained"]
            contained = Contained(
                str(c.get("resource")), str(c.get("reference")), str(c.get("code"))
            )
            _check(check_path, contained.resource, contained.code, src, f"{at}.contained.code")
            _check(check_path, resource, contained.reference, src, f"{at}.contained.reference")
        for name in ("code", "subject"):
            _check(check_path, resource, str(spec.get(name, "")), src, f"{at}.{name}")
        if spec.get("encounter"):
            _check(check_path, resource, str(spec["encounter"]), src, f"{at}.encounter")
        defaults = spec.get("defaults") or {}
        for path in defaults:
            _check(check_path, resource, str(path), src, f"{at}.defaults.{path}")
        rules = tuple(
            _rule(str(mod), r, resource, contained, exts, codes, src, f"{at}.modifiers.{mod}")
            for mod, r in (spec.get("modifiers") or {}).items()
        )
        etype = str(key) if key in ENTITY_TYPES else str(spec.get("for", "problem"))
        _need(etype in ENTITY_TYPES, src, f"{at}.for", f"unknown entity type {etype!r}")
        entities[str(key)] = EntityMapping(
            str(key),
            resource,
            str(spec["code"]),
            str(spec["subject"]),
            defaults,
            rules,
            contained,
            str(spec.get("encounter") or ""),
            planned=str(spec.get("planned") or ""),
            entity=etype,
        )
    for key, em in entities.items():
        missing = ALLOWED_MODIFIERS[em.entity] - {r.modifier for r in em.rules}
        if key in ENTITY_TYPES or missing != {"subject"}:
            _need(not missing, src, f"entities.{key}.modifiers", f"no rule for {sorted(missing)}")
        for r in em.rules:
            if r.kind == "route":
                _need(
                    r.target in entities,
                    src,
                    f"entities.{key}.modifiers.{r.modifier}",
                    f"routes to unknown mapping {r.target!r}",
                )
        if em.planned:
            target = entities.get(em.planned)
            _need(
                target is not None and target.entity == em.entity,
                src,
                f"entities.{key}.planned",
                f"needs a mapping `for: {em.entity}`, got {em.planned!r}",
            )
    return FhirMapping(
        extensions=exts,
        identifier_system=str(data.get("identifier_system") or "urn:kiwi-fhir:mention"),
        document_identifier_system=str(
            data.get("document_identifier_system") or "urn:kiwi-fhir:document"
        ),
        entities=entities,
        codes=codes,
        source=src,
    )


def _check(check_path: Any, resource: str, path: str, src: str, key: str) -> None:
    try:
        check_path(resource, path)
    except ValueError as exc:
        raise ConfigError(f"{src}: {key}: {exc}") from exc


def _rule(
    modifier: str,
    r: Any,
    resource: str,
    contained: Contained | None,
    exts: Mapping[str, str],
    codes: Codes,
    src: str,
    at: str,
) -> Rule:
    from kiwi_fhir.fhir.paths import check_path

    _need(isinstance(r, dict), src, at, "expected a mapping")
    kinds = [k for k in _RULE_KINDS if k in r]
    _need(len(kinds) == 1, src, at, f"needs exactly one of {list(_RULE_KINDS)}")
    kind = kinds[0]
    parse = str(r.get("parse", ""))
    if kind in ("path", "extension") or parse:
        _need(parse in PARSER_TYPES, src, f"{at}.parse", f"unknown parser {parse!r}")
    types = tuple(str(t) for t in r.get("types") or sorted(PARSER_TYPES.get(parse, ())))
    if parse:
        bad = sorted(set(types) - PARSER_TYPES[parse])
        _need(not bad, src, f"{at}.types", f"parser {parse!r} cannot produce {bad}")
    table = str(r.get("table", ""))
    if parse == "coded":
        _need(table in codes.coded, src, f"{at}.table", f"unknown table {table!r}")

    def owner(path: str) -> tuple[str, str]:
        if path.startswith("#"):
            name, _, rest = path[1:].partition(".")
            _need(
                contained is not None and contained.resource == name,
                src,
                at,
                f"{path!r} names no contained resource of this mapping",
            )
            return name, rest
        return resource, path

    target = str(r[kind]) if kind != "record" else ""
    if kind in ("set", "path"):
        _check(check_path, *owner(target), src, f"{at}.{kind}")
    elif kind == "extension":
        _need(target in exts, src, f"{at}.extension", f"unknown extension key {target!r}")
        if r.get("on"):
            _check(check_path, *owner(str(r["on"])), src, f"{at}.on")
        target = exts[target]
    for extra in ("components", "as_needed"):
        if r.get(extra):
            _check(check_path, *owner(str(r[extra])), src, f"{at}.{extra}")
    also = r.get("also") or {}
    for path in also:
        _check(check_path, *owner(str(path)), src, f"{at}.also")
    return Rule(
        modifier,
        kind,
        target,
        value=r.get("value"),
        value_type=str(r.get("type", "")),
        parse=parse,
        table=table,
        types=types,
        on=str(r.get("on", "")),
        components=str(r.get("components", "")),
        as_needed=str(r.get("as_needed", "")),
        also=also,
    )
