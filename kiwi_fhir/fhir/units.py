"""Numbers with units to FHIR ``Quantity`` (UCUM where we can prove it).

A unit is coded in UCUM only if the table maps it or the text itself parses
as UCUM (ucumvert's grammar); otherwise the Quantity keeps the unit text
with no ``system``/``code``, which FHIR allows and which never claims a
wrong unit. ``gm/dL`` is not UCUM, the table turns it into ``g/dL``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final

from kiwi_fhir.fhir.tables import Codes

NUM: Final[str] = r"(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)"
_QTY_RE = re.compile(rf"^\s*(<=|>=|<|>)?\s*({NUM})\s*(.*?)\s*$")


@lru_cache(maxsize=1)
def _parser() -> Any:
    from ucumvert import get_ucum_parser

    return get_ucum_parser()


@lru_cache(maxsize=1024)
def check_ucum(code: str) -> bool:
    """Whether ``code`` is a valid UCUM expression (case-sensitive, as UCUM is)."""
    if not code or code.strip() != code:
        return False
    try:
        _parser().parse(code)
    except Exception:
        return False
    return True


def number(text: str) -> int | float:
    """``'1,200'`` -> 1200, ``'10.60'`` -> 10.6 (JSON numbers; FHIR decimals)."""
    clean = text.replace(",", "")
    return float(clean) if "." in clean else int(clean)


def norm_unit(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace(".", "")).strip()


def ucum_code(unit: str, codes: Codes) -> str | None:
    """The UCUM code for a unit text, or None when we cannot be sure."""
    key = norm_unit(unit)
    if key in codes.units:
        return codes.units[key]
    if key in codes.time_units:
        return codes.time_units[key]
    # A bare word ("m", "a", "in") is valid UCUM by accident far too often: only
    # compound units are taken as written, plain words must be in the table.
    compound = any(ch in unit for ch in "/[%.*0123456789")
    return unit if compound and check_ucum(unit) else None


def quantity(value: int | float, unit: str, codes: Codes) -> dict[str, Any]:
    """A FHIR Quantity; ``system``/``code`` only when the unit is known UCUM."""
    q: dict[str, Any] = {"value": value}
    if unit:
        q["unit"] = unit
        code = ucum_code(unit, codes)
        if code is not None:
            q["system"] = codes.ucum
            q["code"] = code
    return q


def parse_quantity(text: str, codes: Codes) -> dict[str, Any] | None:
    """``'10.6 gm/dL'``, ``'98%'``, ``'< 5 mg'`` -> Quantity; None if not a number+unit."""
    m = _QTY_RE.match(text)
    if not m:
        return None
    comparator, num, unit = m.groups()
    unit = unit.strip().rstrip(".,;")
    if re.match(r"^/\s*\d", unit):  # "5/500 mg" is a combination product, not 5 units
        return None
    if unit and not re.fullmatch(r"[A-Za-z%/\[\]{}0-9*^.\- ]{1,25}", unit):
        return None
    if unit and ucum_code(unit, codes) is None and len(unit.split()) > 2:
        return None
    q = quantity(number(num), unit, codes)
    if comparator:
        q["comparator"] = comparator
    return q
