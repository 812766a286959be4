"""Modifier text to FHIR datatype values, one parser per ``parse:`` name.

Each parser returns candidates ``[(fhir_type, value), ...]`` in order of
preference (a dateTime before the plain string); the builder takes the first
type the target element allows. An empty list means "cannot parse": the
builder then records the text in the extracted-modifier extension. Parsers
are deliberately conservative -- a wrong structured value in an EHR is worse
than a string -- and US date order (MM/DD) is assumed, as in the corpus.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any, Final

from kiwi_fhir.fhir.tables import Codes
from kiwi_fhir.fhir.units import NUM, number, parse_quantity, quantity

Candidates = list[tuple[str, Any]]

_MONTHS: Final[dict[str, int]] = {
    m: i
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ],
        start=1,
    )
    for m in names
}
_MON = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DATE_RES: Final[tuple[re.Pattern[str], ...]] = (
    re.compile(r"^(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4}|\d{2})$"),
    re.compile(r"^(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})$"),
    re.compile(rf"^(?P<d>\d{{1,2}})\s*(?P<mon>{_MON})\.?\s*(?P<y>\d{{4}})$"),
    re.compile(rf"^(?P<mon>{_MON})\.?\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y>\d{{4}})$"),
    re.compile(rf"^(?:in\s+|on\s+)?(?P<mon>{_MON})\.?,?\s+(?P<y>\d{{4}})$"),
    re.compile(r"^(?P<m>\d{1,2})/(?P<y>\d{4})$"),
    re.compile(r"^(?:in\s+|since\s+)?(?P<y>(?:19|20)\d{2})$"),
)
_AGE_RE = re.compile(
    r"^(?:at\s+)?(?:the\s+)?(?:age\s+(?:of\s+)?(?P<a>\d{1,3})|(?P<b>\d{1,3})\s*"
    r"(?:years?|y/?o)(?:\s+old)?|(?:age|aged)\s+(?P<c>\d{1,3}))$"
)


def _norm(text: str) -> str:
    return re.sub(r"[\s\-]+", " ", text.lower().replace(".", "")).strip(" ,;:")


def _num(token: str, codes: Codes) -> int | float | None:
    token = token.strip().lower()
    if re.fullmatch(NUM, token):
        return number(token)
    return codes.number_words.get(token)


def coded(text: str, codes: Codes, table: str) -> Candidates:
    key = _norm(text)
    rows = codes.coded.get(table, {})
    if table == "relationship":
        for prefix in sorted(codes.relationship_prefixes, key=len, reverse=True):
            if key.startswith(prefix + " "):
                key = key[len(prefix) + 1 :]
                break
        if key not in rows and key.endswith("s"):
            key = key[:-1]
    row = rows.get(key)
    cc: dict[str, Any] = {"text": text}
    if row is not None:
        cc["coding"] = [{"system": row.system, "code": row.code, "display": row.display}]
    return [("CodeableConcept", cc)]


def _date(text: str) -> str | None:
    t = text.strip().lower().rstrip(".,")
    for pattern in _DATE_RES:
        m = pattern.match(t)
        if not m:
            continue
        g = m.groupdict()
        year = int(g["y"])
        if year < 100:  # two-digit years: 00-30 -> 2000s, else 1900s
            year += 2000 if year <= 30 else 1900
        month = _MONTHS[g["mon"]] if g.get("mon") else (int(g["m"]) if g.get("m") else None)
        if month is None:
            return f"{year:04d}"
        if not g.get("d"):
            return f"{year:04d}-{month:02d}" if 1 <= month <= 12 else None
        try:
            return date(year, month, int(g["d"])).isoformat()
        except ValueError:
            return None
    return None


def temporal(text: str, codes: Codes, table: str) -> Candidates:
    out: Candidates = []
    if (d := _date(text)) is not None:
        out.append(("dateTime", d))
    m = re.match(r"^(?:from\s+)?(.+?)\s+(?:to|through|until|-)\s+(.+)$", text.strip(), re.I)
    if m and (start := _date(m.group(1))) and (end := _date(m.group(2))) and start <= end:
        out.append(("Period", {"start": start, "end": end}))
    a = _AGE_RE.match(_norm(text).replace("year old", "years old"))
    if a:
        years = int(a.group("a") or a.group("b") or a.group("c"))
        out.append(("Age", {"value": years, "unit": "years", "system": codes.ucum, "code": "a"}))
    out.append(("string", text))
    return out


def text_value(text: str, codes: Codes, table: str) -> Candidates:
    return [("string", text)]


def flag(text: str, codes: Codes, table: str) -> Candidates:
    return [("boolean", True)]


def labvalue(text: str, codes: Codes, table: str) -> Candidates:
    bp = re.match(r"^\s*(\d{2,3})\s*/\s*(\d{2,3})\s*(mm\s*hg|mmhg)\.?\s*$", text, re.I)
    if bp:
        comps = []
        for key, value in (("systolic", bp.group(1)), ("diastolic", bp.group(2))):
            c = codes.blood_pressure[key]
            comps.append(
                {
                    "code": {
                        "coding": [{"system": c.system, "code": c.code, "display": c.display}]
                    },
                    "valueQuantity": quantity(int(value), bp.group(3), codes),
                }
            )
        return [("Components", comps), ("string", text)]
    q = parse_quantity(text, codes)
    return [("Quantity", q), ("string", text)] if q is not None else [("string", text)]


def reference_range(text: str, codes: Codes, table: str) -> Candidates:
    rr: dict[str, Any] = {"text": text}
    t = text.strip()
    m = re.match(rf"^({NUM})\s*(?:-|to|\u2013)\s*({NUM})\s*(.*?)\s*$", t)
    if m:
        rr["low"] = quantity(number(m.group(1)), m.group(3), codes)
        rr["high"] = quantity(number(m.group(2)), m.group(3), codes)
    elif (q := parse_quantity(t, codes)) is not None and q.get("comparator"):
        side = "high" if q.pop("comparator").startswith("<") else "low"
        rr[side] = q
    return [("ReferenceRange", rr)]


def strength(text: str, codes: Codes, table: str) -> Candidates:
    m = re.match(rf"^\s*({NUM})\s*([A-Za-z%]+)\s*(?:/|per)\s*({NUM})?\s*([A-Za-z]+)\s*$", text)
    if m:
        num = quantity(number(m.group(1)), m.group(2), codes)
        den = quantity(number(m.group(3)) if m.group(3) else 1, m.group(4), codes)
        return [("Ratio", {"numerator": num, "denominator": den})]
    q = parse_quantity(text, codes)
    if q is None or "comparator" in q or "unit" not in q:
        return []
    return [
        (
            "Ratio",
            {
                "numerator": q,
                "denominator": {"value": 1, "system": codes.ucum, "code": "1", "unit": "1"},
            },
        )
    ]


def dose(text: str, codes: Codes, table: str) -> Candidates:
    words = _norm(text).split()
    rng = re.match(r"^(\S+)\s*(?:to|-|or)\s*(\S+)(?:\s+(.+))?$", _norm(text))
    if (
        rng
        and (lo := _num(rng.group(1), codes)) is not None
        and (hi := _num(rng.group(2), codes)) is not None
    ):
        unit = rng.group(3) or ""
        return [("Range", {"low": quantity(lo, unit, codes), "high": quantity(hi, unit, codes)})]
    if words and (n := _num(words[0], codes)) is not None and len(words) <= 2:
        return [("Quantity", quantity(n, " ".join(words[1:]), codes))]
    q = parse_quantity(text, codes)
    return [("Quantity", q)] if q is not None and "comparator" not in q else []


def frequency(text: str, codes: Codes, table: str) -> Candidates:
    key = _norm(text)
    as_needed = False
    for prn in ("as needed", "prn", "as necessary"):
        if re.search(rf"\b{prn}\b", key):
            as_needed = True
            key = re.sub(rf"\s*\b{prn}\b\s*", " ", key).strip()
    repeat: dict[str, Any] = {}
    if key:
        row = codes.frequency.get(key)
        if row is not None:
            as_needed = as_needed or bool(row.get("as_needed"))
            repeat = {k: v for k, v in row.items() if k != "as_needed"}
        elif (parsed := _frequency_pattern(key, codes)) is not None:
            repeat = parsed
        else:
            return []
    return [("TimingRepeat", {"repeat": repeat, "as_needed": as_needed})]


def _frequency_pattern(key: str, codes: Codes) -> dict[str, Any] | None:
    m = re.match(
        r"^(?:q|every)\s*(?:(\d+|[a-z]+(?= ))\s*(?:(?:-|to|\s)\s*(\d+))?)?\s*([a-z]+)$", key
    )
    if m:
        unit = codes.time_units.get(m.group(3))
        period = _num(m.group(1), codes) if m.group(1) else 1
        if unit in ("s", "min", "h", "d", "wk", "mo", "a") and period is not None:
            out: dict[str, Any] = {"frequency": 1, "period": period, "periodUnit": unit}
            if m.group(2) and (hi := _num(m.group(2), codes)) is not None:
                out["periodMax"] = hi
            return out
    m = re.match(r"^(\w+)\s*(?:times|x)\s*(?:a|per|/)?\s*(day|daily|week|weekly)$", key)
    if m and (n := _num(m.group(1), codes)) is not None and isinstance(n, int):
        return {"frequency": n, "period": 1, "periodUnit": "wk" if "week" in m.group(2) else "d"}
    return None


def duration(text: str, codes: Codes, table: str) -> Candidates:
    key = _norm(text)
    m = re.match(
        r"^(?:for\s+|x\s*)?(?:(?:the\s+)?(?:next|another)\s+)?(\S+)\s+(?:more\s+)?"
        r"([a-z]+)$",
        key,
    )
    if not m:
        m = re.match(r"^x\s*(\d+)\s*([a-z]+)$", key)
    if m and (n := _num(m.group(1), codes)) is not None and m.group(2) in codes.time_units:
        return [
            (
                "Duration",
                {
                    "value": n,
                    "unit": m.group(2),
                    "system": codes.ucum,
                    "code": codes.time_units[m.group(2)],
                },
            )
        ]
    return []


PARSERS: Final[dict[str, Callable[[str, Codes, str], Candidates]]] = {
    "coded": coded,
    "text": text_value,
    "flag": flag,
    "temporal": temporal,
    "labvalue": labvalue,
    "reference_range": reference_range,
    "strength": strength,
    "dose": dose,
    "frequency": frequency,
    "duration": duration,
}


def parse(parser: str, text: str, codes: Codes, table: str = "") -> Candidates:
    return PARSERS[parser](text, codes, table)
