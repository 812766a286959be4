"""The compact code tables shipped in the wheel, and reading them.

Each table is ``data/<name>.tsv.gz``: ``#`` header lines (``# system: URI``,
``# version: ...``, ``# source: package version (licence)``), then one row
per normalised key: ``key<TAB>code<TAB>display<TAB>name`` where ``name`` is
the source term the key came from (to tell an exact hit from a normalised
one). ``python -m kiwi_fhir.terminology.build`` (``make terminology``)
writes them from the pinned packages; the product reads them only, so it
needs none of those packages at run time.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kiwi_fhir.errors import ConfigError


@dataclass(frozen=True)
class Row:
    code: str
    display: str
    name: str


@dataclass(frozen=True)
class Table:
    name: str
    system: str
    version: str
    source: str
    rows: dict[str, str]  # key -> "code<TAB>display<TAB>name": a third of the memory of Rows

    def get(self, key: str) -> Row | None:
        raw = self.rows.get(key)
        return None if raw is None else Row(*raw.split("\t"))

    def __len__(self) -> int:
        return len(self.rows)


def table_path(name: str) -> Path:
    return Path(str(resources.files("kiwi_fhir.terminology") / "data" / f"{name}.tsv.gz"))


def write_table(
    path: Path, *, system: str, version: str, source: str, rows: dict[str, Row]
) -> None:
    """Sorted, so a rebuild from the same packages is byte-identical (mtime 0)."""
    lines = [f"# system: {system}", f"# version: {version}", f"# source: {source}"]

    def clean(v: str) -> str:  # a source term with a tab or line break in it
        return " ".join(v.split())

    lines += [
        "\t".join(clean(v) for v in (k, r.code, r.display, r.name)) for k, r in sorted(rows.items())
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)


def read_table(name: str, path: Path | None = None) -> Table:
    where = path if path is not None else table_path(name)
    try:
        text = gzip.decompress(where.read_bytes()).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"terminology table {where}: cannot read ({exc})") from exc
    head: dict[str, str] = {}
    rows: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            head[key.strip()] = value.strip()
            continue
        key, _, rest = line.partition("\t")
        if rest.count("\t") != 2:
            raise ConfigError(f"terminology table {where}: line {n}: expected 4 columns")
        rows[key] = rest
    for required in ("system", "version", "source"):
        if required not in head:
            raise ConfigError(f"terminology table {where}: no '# {required}:' header")
    return Table(name, head["system"], head["version"], head["source"], rows)
