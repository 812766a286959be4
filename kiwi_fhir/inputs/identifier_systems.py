"""Which FHIR ``Identifier.system`` an HL7 v2 assigning authority stands for.

PID-3 and PV1-19 name who assigned an identifier in an HD
(``namespace&universal id&universal id type``). A system is what makes an
identifier searchable (``Patient?identifier=system|value``); without one the
FHIR layer can only say whom the note is about, not find or create the
Patient. The HD's own universal ID wins (ISO OID to ``urn:oid:``, UUID to
``urn:uuid:``, URI as is); a bare namespace is looked up in a site table,
``mappings/identifier_systems.yaml``, or the file named by
``KIWI_FHIR_IDENTIFIER_SYSTEMS`` (an explicit file that cannot be read is a
``ConfigError``, never a silent fallback to the default table).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Final

import yaml

from kiwi_fhir.errors import ConfigError

ENV: Final = "KIWI_FHIR_IDENTIFIER_SYSTEMS"
FILE: Final = "identifier_systems.yaml"
_OID_RE = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


def system_for(namespace: str, universal_id: str, id_type: str) -> str:
    """Identifier.system for an HD's parts, or "" when none is known."""
    kind = id_type.strip().upper()
    uid = universal_id.strip()
    if kind == "ISO" and _OID_RE.match(uid):
        return f"urn:oid:{uid}"
    if kind == "UUID" and _UUID_RE.match(uid):
        return f"urn:uuid:{uid.lower()}"
    if kind == "URI" and _URI_RE.match(uid):
        return uid
    return table().get(namespace.strip(), "") if namespace.strip() else ""


def table_path() -> Path | None:
    """The table in use: the env override, else the shipped one (None if absent)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    from kiwi_fhir.fhir.mapping import mappings_dir

    path = mappings_dir() / FILE
    return path if path.is_file() else None


def table() -> dict[str, str]:
    return _load(table_path())


@lru_cache(maxsize=4)
def _load(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML") from exc
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError(f"{path}: expected a mapping with 'version: 1'")
    systems = data.get("systems") or {}
    if not isinstance(systems, dict):
        raise ConfigError(f"{path}: systems: expected a mapping of authority to system URI")
    out: dict[str, str] = {}
    for name, uri in systems.items():
        if not isinstance(uri, str) or not _URI_RE.match(uri):
            raise ConfigError(f"{path}: systems: {name}: expected an absolute URI")
        out[str(name)] = uri
    return out
