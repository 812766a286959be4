"""``kiwi-fhir extract``: files in, one output file per document out.

Inputs: ``.txt`` notes, FHIR ``.json`` (DocumentReference or Bundle) and
``.hl7`` files (one or many messages); stdin (``-``) is sniffed the same way.
A document that fails is reported on stderr in one line (file, where,
reason -- never note text) and the others are still written; the exit
status is then 1. So is a part of a document we could not use (an image or
PDF ED beside the narrative), named in a ``warning:`` line, and an input
that holds nothing to extract (an empty note, a folder without notes).

Everything that can be known before the model runs is checked first
(``--out``, output names that would collide, brat for several documents
on stdout), so a mistake costs seconds, not a whole extraction.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from kiwi_fhir.brat import ParseReport, format_ann, parse_ann, read_text
from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.errors import InputError, KiwiError, MissingExtraError
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.extractors.onnx import OnnxExtractor
from kiwi_fhir.extractors.pipeline import PipelineConfig
from kiwi_fhir.extractors.segments import by_segments
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.inputs import formats, load_documents_lenient, parse_lenient
from kiwi_fhir.inputs.formats import Fetcher
from kiwi_fhir.serialize import to_dict
from kiwi_fhir.terminology import CodingOptions
from kiwi_fhir.terminology.extractor import CodingExtractor

if TYPE_CHECKING:
    from kiwi_fhir.service.fhir_fetch import FhirFetcher

CHUNK = 8  # documents per extractor call: keeps batches full, memory flat
# Notes longer than this run segment by segment with a progress bar (the
# pipeline's own segment size, so results equal a plain extract()).
LONG_NOTE = PipelineConfig().segment_chars
EXT = {"json": ".json", "brat": ".ann", "fhir": ".bundle.json"}


def expand(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Input files, and one problem per folder that holds none."""
    out: list[Path] = []
    problems: list[str] = []
    known = formats.suffixes()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in known and q.is_file())
            if not found:
                problems.append(f"{p}: no input files ({', '.join(known)}) in this folder")
            out.extend(found)
        else:
            out.append(p)
    return out, problems


def given_entities(doc: Document, txt_path: Path) -> tuple[Entity, ...]:
    ann = txt_path.with_suffix(".ann")
    if not ann.is_file():
        raise InputError(f"{txt_path}: --given-entities needs {ann.name} beside it")
    gold = parse_ann(read_text(ann), doc, path=str(ann), strict=False, report=ParseReport())
    return gold.entities


def render(ex: Extraction, fmt: str, bundle_type: str = "transaction", model_id: str = "") -> Any:
    """brat text, or the JSON value of the result (written pretty or as one line)."""
    if fmt == "brat":
        return format_ann(ex)
    if fmt == "fhir":
        return to_bundle(ex, bundle_type=bundle_type, model_id=model_id, backend=ex.backend)
    return to_dict(ex)


@dataclass(frozen=True)
class Job:
    """One input's readable documents and the problems found in it."""

    path: Path | None  # None = stdin
    docs: list[Document]
    given: list[tuple[Entity, ...] | None]
    errors: tuple[str, ...] = ()


@dataclass
class Outputs:
    """Where each result goes: a file under ``--out`` (keeping the inputs'
    folders below their common parent), or stdout -- one pretty JSON value
    for one result, JSON Lines for several."""

    directory: Path | None
    ext: str
    subdir: dict[Path, Path] = field(default_factory=dict)
    jsonl: bool = False
    written: dict[Path, str] = field(default_factory=dict)

    def target(self, job: Job, doc: Document) -> Path | None:
        if self.directory is None or job.path is None:
            return None
        return self.directory / self.subdir.get(job.path, Path()) / f"{doc.id}{self.ext}"

    def write(self, job: Job, doc: Document, value: Any, stdout: TextIO) -> str | None:
        """Write one result; a problem line instead when it would overwrite another."""
        path = self.target(job, doc)
        if isinstance(value, str):
            text = value
        elif path is None and self.jsonl:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
        if path is None:
            stdout.write(text)
            return None
        where = f"{job.path}: {doc.id}"
        if path in self.written:
            return f"{where}: not written: {path} already holds {self.written[path]}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            return f"{where}: cannot write {path} ({exc.strerror})"
        self.written[path] = where
        return None


def plan_outputs(files: list[Path], stdin: bool, fmt: str, out: str | None) -> Outputs:
    """Check ``--out`` and the output names before any work is done."""
    ext = EXT[fmt]
    if out is None:
        if fmt == "brat" and len(files) + stdin > 1:
            raise InputError("--format brat writes one .ann per document: give --out DIR")
        return Outputs(None, ext, jsonl=len(files) + stdin > 1)
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--out {directory}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {directory}: cannot create ({exc.strerror})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"--out {directory}: not writable")
    parents = [f.resolve().parent for f in files]
    root = Path(os.path.commonpath(parents)) if parents else Path()
    subdir = {f: p.relative_to(root) for f, p in zip(files, parents, strict=True)}
    seen: dict[Path, Path] = {}
    for f in files:
        name = subdir[f] / f"{f.stem}{ext}"
        if name in seen and seen[name] != f:
            raise InputError(
                f"{seen[name]} and {f} would both write {directory / name}; "
                "rename one or run them separately"
            )
        seen[name] = f
    return Outputs(directory, ext, subdir)


def _jobs(
    files: list[Path], stdin: bool, given: bool, fetcher: Fetcher | None = None
) -> Iterator[Job]:
    if stdin:
        raw = sys.stdin.buffer.read()
        docs, errs = parse_lenient(raw, source="stdin", stem="stdin", fetcher=fetcher)
        yield _job(None, docs, [str(e) for e in errs], given)
    for f in files:
        try:
            docs, errs = load_documents_lenient(f, fetcher=fetcher)
        except Exception as exc:  # a parser bug must cost this file only, not the run
            yield Job(f, [], [], (f"{f}: could not be read ({type(exc).__name__})",))
            continue
        yield _job(f, docs, [str(e) if str(f) in str(e) else f"{f}: {e}" for e in errs], given)


def _job(path: Path | None, docs: list[Document], problems: list[str], given: bool) -> Job:
    where = path if path is not None else "stdin"
    ents: list[tuple[Entity, ...] | None] = []
    kept: list[Document] = []
    for d in docs:
        if not d.text.strip() and not d.source.results:  # results alone still make a Bundle
            label = f"{where}: {d.id}" if len(docs) > 1 else str(where)
            problems.append(f"{label}: empty note, nothing to extract")
            continue
        try:
            ents.append(given_entities(d, path) if given and path is not None else None)
            kept.append(d)
        except KiwiError as exc:
            problems.append(str(exc))
    return Job(path, kept, ents, tuple(problems))


def _extract(
    extractor: Extractor,
    docs: list[Document],
    given: list[tuple[Entity, ...] | None] | None,
    progress: bool | None,
) -> Iterator[Extraction]:
    """Results in input order; a long note one segment at a time with a bar."""
    short: list[int] = [i for i, d in enumerate(docs) if len(d.text) <= LONG_NOTE]
    results: dict[int, Extraction] = {}
    for c in range(0, len(short), CHUNK):
        idx = short[c : c + CHUNK]
        batch_given = [given[i] for i in idx] if given is not None else None
        batch = extractor.extract([docs[i] for i in idx], batch_given)
        results.update(zip(idx, batch, strict=True))
    for i, doc in enumerate(docs):
        if i not in results:
            yield _extract_long(extractor, doc, given[i] if given is not None else None, progress)
        else:
            yield results.pop(i)


def _extract_long(
    extractor: Extractor, doc: Document, given: tuple[Entity, ...] | None, progress: bool | None
) -> Extraction:
    bar = tqdm(
        total=len(doc.text),
        unit="char",
        unit_scale=True,
        desc=doc.id,
        file=sys.stderr,
        disable=not progress if progress is not None else not sys.stderr.isatty(),
        leave=False,
    )

    def one(seg: Document, seg_given: Any) -> Extraction:
        ex = extractor.extract([seg], None if seg_given is None else [seg_given])[0]
        bar.update(len(seg.text))
        return ex

    try:
        return by_segments(doc, LONG_NOTE, given, one)
    finally:
        bar.close()


def _fhir_fetcher(args: argparse.Namespace) -> FhirFetcher | None:
    """``attachment.url`` reader for ``--fhir-base``: the service's FHIR client,
    with its auth from ``--fhir-config`` or the ``KIWI_FHIR_FHIR_*`` variables."""
    base: str | None = getattr(args, "fhir_base", None)
    if base is None:
        return None
    try:
        from kiwi_fhir.service.fhir_fetch import FhirFetcher
        from kiwi_fhir.service.settings import load_settings
    except ImportError as exc:
        raise MissingExtraError("kiwi-fhir extract --fhir-base", "serve") from exc
    config = getattr(args, "fhir_config", None)
    settings = load_settings(Path(config) if config else None, fhir_base_url=base)
    return FhirFetcher(settings)


def run_extract(args: argparse.Namespace) -> int:
    stdin = "-" in args.paths
    files, empty_dirs = expand([p for p in args.paths if p != "-"])
    if args.given_entities and stdin:
        raise InputError("--given-entities needs files (NAME.txt with NAME.ann), not stdin")
    outputs = plan_outputs(files, stdin, args.format, args.out)
    for problem in empty_dirs:
        print(f"kiwi-fhir: {problem}", file=sys.stderr)
    if not files and not stdin:
        return 1
    fetcher = _fhir_fetcher(args)
    try:
        return _run(args, files, stdin, outputs, len(empty_dirs), fetcher)
    finally:
        if fetcher is not None:
            fetcher.close()


def _run(
    args: argparse.Namespace,
    files: list[Path],
    stdin: bool,
    outputs: Outputs,
    failed: int,
    fetcher: Fetcher | None,
) -> int:
    onnx = OnnxExtractor(
        Path(args.model) if args.model else None, threads=args.threads, batch_size=args.batch_size
    )
    coding = CodingOptions(getattr(args, "code_embedding", False),
                           getattr(args, "code_candidates", 1))  # fmt: skip
    extractor: Extractor = onnx
    if not getattr(args, "no_codes", False):
        extractor = CodingExtractor(onnx, coding)
    extractor.load()
    progress: bool | None = getattr(args, "progress", None)  # None: when stderr is a terminal
    bar = tqdm(
        total=len(files) + stdin,
        unit="file",
        file=sys.stderr,
        disable=len(files) + stdin < 2
        or not (progress if progress is not None else sys.stderr.isatty()),
    )

    def report(line: str) -> None:
        nonlocal failed
        bar.write(f"kiwi-fhir: {line}", file=sys.stderr)
        failed += 1

    for job in _jobs(files, stdin, args.given_entities, fetcher):
        bar.update(1)
        where = job.path if job.path is not None else "stdin"
        for problem in job.errors:
            report(problem)
        for d in job.docs:  # parts of a document we could not use (an image ED...)
            for warning in formats.warnings_of(d.source):
                report(f"{where}: {d.id}: warning: {warning}")
        if outputs.directory is None or job.path is None:
            if args.format == "brat" and len(job.docs) > 1:
                report(f"{where}: {len(job.docs)} documents: brat to stdout takes one; give --out")
                continue
            outputs.jsonl = outputs.jsonl or len(job.docs) > 1
        given = job.given if args.given_entities else None
        for ex in _extract(extractor, job.docs, given, progress):
            try:
                value = render(ex, args.format, args.bundle_type, extractor.model_id)
            except KiwiError as exc:  # e.g. a resource failing R4B validation: the others go on
                report(f"{where}: {ex.document.id}: {exc}")
                continue
            not_written = outputs.write(job, ex.document, value, sys.stdout)
            if not_written is not None:
                report(not_written)
    bar.close()
    return 1 if failed else 0
