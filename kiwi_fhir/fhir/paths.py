"""The small element-path language of ``mappings/resources.yaml``.

``dosage[0].doseAndRate[0].dose[x]``: dotted FHIR element names; ``[n]``
picks a list item (created on demand), ``[+]`` appends one, ``[x]`` is a
choice element completed with the value's type. We *write* JSON dicts, which
FHIRPath (a query language) does not do, hence this instead of fhirpathpy.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_SEG_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(\[(?:\d+|\+|x)\])?$")


def _segments(path: str) -> list[tuple[str, str]]:
    if not path:
        raise ValueError("empty path")
    out = []
    for part in path.split("."):
        m = _SEG_RE.match(part)
        if not m:
            raise ValueError(f"bad path segment {part!r} in {path!r}")
        out.append((m.group(1), (m.group(2) or "")[1:-1]))
    return out


@lru_cache(maxsize=64)
def _fields(resource: str) -> frozenset[str]:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(resource)
    except (KeyError, ValueError, AttributeError, ImportError) as exc:
        raise ValueError(f"unknown FHIR R4B resource type {resource!r}") from exc
    return frozenset(model.model_fields)


def check_path(resource: str, path: str) -> None:
    """ValueError unless ``path`` parses and its first element exists on ``resource``."""
    segs = _segments(path)
    name, index = segs[0]
    fields = _fields(resource)
    if index == "x":
        ok = any(f.startswith(name) and f[len(name) : len(name) + 1].isupper() for f in fields)
    else:
        ok = name in fields
    if not ok:
        raise ValueError(f"{resource} has no element {name!r}{'[x]' if index == 'x' else ''}")


def choice_name(name: str, fhir_type: str) -> str:
    """``onset`` + ``dateTime`` -> ``onsetDateTime``."""
    return name + fhir_type[0].upper() + fhir_type[1:]


def put(
    root: dict[str, Any],
    path: str,
    value: Any,
    *,
    fhir_type: str = "",
    merge: bool = False,
    overwrite: bool = False,
) -> bool:
    """Write ``value`` at ``path``; False when a single element is already taken.

    ``merge`` folds a dict into an existing dict (Timing.repeat built from
    frequency and duration); it fails only on a key both already have.
    """
    segs = _segments(path)
    node: Any = root
    for name, index in segs[:-1]:
        node = _child(node, name, index)
    name, index = segs[-1]
    if index == "x":
        if not fhir_type:
            raise ValueError(f"{path}: a choice element needs a type")
        taken = [k for k in node if k.startswith(name) and k[len(name) : len(name) + 1].isupper()]
        if taken and not overwrite:
            return False
        for k in taken:
            del node[k]
        node[choice_name(name, fhir_type)] = value
        return True
    if index == "+":
        node.setdefault(name, []).append(value)
        return True
    if index:
        items = node.setdefault(name, [])
        pos = int(index)
        while len(items) <= pos:
            items.append({})
        if items[pos] and not overwrite:
            return _merge(items[pos], value) if merge else False
        items[pos] = value
        return True
    if name in node and not overwrite:
        return _merge(node[name], value) if merge else False
    node[name] = value
    return True


def _merge(old: Any, new: Any) -> bool:
    if not isinstance(old, dict) or not isinstance(new, dict) or set(old) & set(new):
        return False
    old.update(new)
    return True


def _child(node: dict[str, Any], name: str, index: str) -> dict[str, Any]:
    if index == "+":
        node.setdefault(name, []).append({})
        child: dict[str, Any] = node[name][-1]
        return child
    if index:
        items = node.setdefault(name, [])
        pos = int(index)
        while len(items) <= pos:
            items.append({})
        item: dict[str, Any] = items[pos]
        return item
    sub: dict[str, Any] = node.setdefault(name, {})
    return sub


def get(root: dict[str, Any], path: str) -> Any:
    """The value at ``path`` or None (no creation); ``[x]`` matches any type."""
    node: Any = root
    for name, index in _segments(path):
        if not isinstance(node, dict):
            return None
        if index == "x":
            keys = [
                k for k in node if k.startswith(name) and k[len(name) : len(name) + 1].isupper()
            ]
            node = node[keys[0]] if keys else None
        else:
            node = node.get(name)
            if index and index != "+":
                node = (
                    node[int(index)] if isinstance(node, list) and len(node) > int(index) else None
                )
    return node
