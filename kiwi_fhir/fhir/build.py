"""One extracted entity (with its modifiers) to one FHIR resource, as JSON.

All decisions about *where* things go come from the mapping tables; this
module only runs the rules in table order. A modifier that cannot be placed
(unparseable, a second value for a single element, or an element already
asserted by a stronger rule -- negation before uncertainty) is kept in the
``extracted-modifier`` extension instead of being dropped.

Offsets in the derivation-reference extension count Unicode code points in
``Document.text``: the decoded note, after HTML/RTF conversion. The
DocumentReference it points at holds exactly that text (docs/fhir-mapping.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kiwi_fhir.core import Entity, Extraction, Modifier
from kiwi_fhir.fhir.context import Context
from kiwi_fhir.fhir.paths import choice_name, get, put
from kiwi_fhir.fhir.tables import EntityMapping, FhirMapping, Rule
from kiwi_fhir.fhir.values import parse


@dataclass(frozen=True)
class Targets:
    """What every resource of one document points at."""

    patient: dict[str, Any]
    encounter: dict[str, Any] | None
    document: dict[str, Any]  # Reference to the DocumentReference the offsets index
    attachment_path: str  # FHIRPath of that attachment, e.g. DocumentReference.content[0]...
    key: str  # stable document key: source identity + text hash


NO_CONTEXT = Context()


def mention_identifier(key: str, entity: Entity) -> str:
    """Stable per document and span, so a re-run maps to the same resource."""
    return f"{key}.{entity.start}-{entity.end}.{entity.label}"


def entity_mapping(
    extraction: Extraction, entity: Entity, mapping: FhirMapping, context: Context = NO_CONTEXT
) -> EntityMapping:
    """The mapping for this entity, after any ``route`` (a relative's problem)
    and, for a planned mention, the entity's ``planned`` mapping."""
    em = mapping.entities[entity.label]
    for mod in (*extraction.modifiers_of(entity.id), *context.modifiers):
        rule = em.rule(mod.label)
        if rule is not None and rule.kind == "route":
            return mapping.entities[rule.target]
    if context.planned and em.planned:
        return mapping.entities[em.planned]
    return em


def build_resource(
    extraction: Extraction,
    entity: Entity,
    mapping: FhirMapping,
    source: Targets,
    context: Context = NO_CONTEXT,
) -> dict[str, Any]:
    em = entity_mapping(extraction, entity, mapping, context)
    res: dict[str, Any] = {"resourceType": em.resource}
    put(res, em.code, concept(entity, mapping))
    put(res, em.subject, copy.deepcopy(source.patient))
    if em.encounter and source.encounter is not None:
        put(res, em.encounter, copy.deepcopy(source.encounter))
    state = _State(res, em, entity, mapping)
    mods = sorted(
        (*extraction.modifiers_of(entity.id), *context.modifiers),
        key=lambda m: (m.start, m.end, m.id),
    )
    for rule in em.rules:
        for mod in (m for m in mods if m.label == rule.modifier):
            if rule.kind != "route" and not state.apply(rule, mod):
                state.fallback(mod)
    for path, value in em.defaults.items():
        if get(res, path) is None:
            put(res, path, copy.deepcopy(value), fhir_type=_type_of(path, value))
    ident = {"system": mapping.identifier_system, "value": mention_identifier(source.key, entity)}
    res["identifier"] = [ident]
    exts = res.setdefault("extension", [])
    for start, end in entity.pieces():
        exts.append(derivation_reference(mapping, source, start, end - start))
    if entity.confidence is not None:
        exts.append(
            {
                "url": mapping.extensions["confidence"],
                "valueDecimal": round(float(entity.confidence), 4),
            }
        )
    return res


def concept(entity: Entity, mapping: FhirMapping) -> dict[str, Any]:
    """The entity's CodeableConcept: always its text, plus its codes with the
    match score and method in an extension, so receivers can threshold."""
    out: dict[str, Any] = {"text": entity.text}
    url = mapping.extensions.get("coding_match")
    codings = []
    seen: set[str] = set()
    for c in entity.codes:
        if c.system in seen:  # a ranked runner-up, not an equivalent coding
            continue
        seen.add(c.system)
        coding: dict[str, Any] = {"system": c.system, "code": c.code}
        if c.version:
            coding["version"] = c.version
        if c.display:
            coding["display"] = c.display
        if url:
            coding["extension"] = [
                {
                    "url": url,
                    "extension": [
                        {"url": "score", "valueDecimal": round(float(c.score), 4)},
                        {"url": "method", "valueCode": c.method},
                    ],
                }
            ]
        codings.append(coding)
    if codings:
        out["coding"] = codings
    return out


def derivation_reference(
    mapping: FhirMapping, source: Targets, offset: int, length: int
) -> dict[str, Any]:
    return {
        "url": mapping.extensions["derivation_reference"],
        "extension": [
            {"url": "reference", "valueReference": copy.deepcopy(source.document)},
            {"url": "path", "valueString": source.attachment_path},
            {"url": "offset", "valueInteger": offset},
            {"url": "length", "valueInteger": length},
        ],
    }


def _type_of(path: str, value: Any) -> str:
    return "CodeableConcept" if path.endswith("[x]") and isinstance(value, dict) else "string"


class _State:
    """The resource under construction and which paths a rule has asserted."""

    def __init__(
        self, res: dict[str, Any], em: EntityMapping, entity: Entity, mapping: FhirMapping
    ) -> None:
        self.res, self.em, self.entity, self.mapping = res, em, entity, mapping
        self.asserted: set[str] = set()

    def owner(self, path: str) -> tuple[dict[str, Any], str]:
        """The dict a path writes into: the resource or its contained Medication."""
        if not path.startswith("#"):
            return self.res, path
        c = self.em.contained
        assert c is not None  # guaranteed by mapping validation
        contained = self.res.setdefault("contained", [])
        if not contained:
            contained.append({"resourceType": c.resource, "id": "med"})
            put(contained[0], c.code, self.res.pop(self.em.code))
            put(self.res, c.reference, {"reference": "#med"})
        return contained[0], path.partition(".")[2]

    def apply(self, rule: Rule, mod: Modifier) -> bool:
        if rule.kind == "record":
            return False
        if rule.kind == "set":
            if rule.target in self.asserted:
                return False
            self.asserted.add(rule.target)
            return put(
                self.res,
                rule.target,
                copy.deepcopy(rule.value),
                fhir_type=rule.value_type,
                overwrite=True,
            )
        cands = [
            c
            for c in parse(rule.parse, mod.text, self.mapping.codes, rule.table)
            if c[0] in rule.types
        ]
        if not cands:
            return False
        ftype, value = cands[0]
        if rule.kind == "extension":
            node = get(self.res, rule.on) if rule.on else self.res
            if not isinstance(node, dict):
                return False
            node.setdefault("extension", []).append(
                {"url": rule.target, choice_name("value", ftype): value}
            )
            return True
        if rule.target in self.asserted:
            return False
        root, path = self.owner(rule.target)
        if ftype == "Components":
            ok = put(self.res, rule.components, value)
        elif ftype == "TimingRepeat":
            ok = not value["repeat"] or put(root, path, value["repeat"], merge=True)
            if ok and value["as_needed"] and rule.as_needed:
                ok = put(self.res, rule.as_needed, True, fhir_type="boolean")
        else:
            ok = put(root, path, value, fhir_type=ftype)
        if ok:
            for extra, template in rule.also.items():
                r2, p2 = self.owner(extra)
                if get(r2, p2) is None:
                    put(
                        r2,
                        p2,
                        {"text": self.entity.text}
                        if template == "$entity"
                        else copy.deepcopy(template),
                    )
        return ok

    def fallback(self, mod: Modifier) -> None:
        self.res.setdefault("extension", []).append(
            {
                "url": self.mapping.extensions["modifier"],
                "extension": [
                    {"url": "type", "valueCode": mod.label},
                    {"url": "text", "valueString": mod.text},
                ],
            }
        )
