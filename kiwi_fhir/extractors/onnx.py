"""In-process extractor on onnxruntime: the embedded default, no torch.

A model directory holds ``config.json`` (tag sets, window sizes, file
names), the tokenizer, the int8 tagger, optionally its fp32 original, and
the relation scorer. The packaged default lives in
``kiwi_fhir/models/default``; ``make model`` rebuilds it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.errors import ModelError
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.extractors.boundary import BoundaryRules
from kiwi_fhir.extractors.decode import FEAT_SIZES, MAIN_TAGS, MOD_TAGS
from kiwi_fhir.extractors.encoding import load_tokenizer
from kiwi_fhir.extractors.pipeline import BertPipeline, PipelineConfig
from kiwi_fhir.extractors.wordfeats import WordFeaturizer

# /2: the tagger takes word features (wordfeats.py) as a third input.
FORMAT = "kiwi-fhir-bert/2"


def default_model_dir() -> Path:
    """``$KIWI_FHIR_MODEL`` if set (sites with their own model), else the packaged one."""
    env = os.environ.get("KIWI_FHIR_MODEL")
    if env:
        return Path(env)
    return Path(str(resources.files("kiwi_fhir") / "models" / "default"))


def read_model_config(model_dir: Path) -> dict[str, Any]:
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise ModelError(
            f"no model installed at {model_dir} (config.json missing); "
            "build one with 'make model' or pass --model DIR"
        )
    try:
        cfg: dict[str, Any] = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{cfg_path}: invalid JSON at line {exc.lineno}") from exc
    if cfg.get("format") != FORMAT:
        raise ModelError(
            f"{cfg_path}: model format {cfg.get('format')!r}, this kiwi-fhir reads {FORMAT!r}; "
            "retrain it with this version ('kiwi-fhir train')"
        )
    if (tuple(cfg["main_tags"]), tuple(cfg["mod_tags"]), tuple(cfg["feat_sizes"])) != (
        MAIN_TAGS,
        MOD_TAGS,
        FEAT_SIZES,
    ):
        raise ModelError(f"{cfg_path}: label set differs from this kiwi-fhir version")
    return cfg


def pipeline_for(model_dir: Path, cfg: dict[str, Any], batch_size: int) -> BertPipeline:
    """The pre/post-processing a model directory was trained for; every BERT
    backend (in-process, Triton) builds it here so their spans agree."""
    pc = PipelineConfig(
        max_len=int(cfg["max_len"]),
        stride=int(cfg["stride"]),
        batch_size=batch_size,
        relation_threshold=float(cfg.get("relation_threshold", 0.5)),
        span_threshold=float(cfg.get("span_threshold", 0.0)),
        main_rules=BoundaryRules.from_json(cfg.get("boundary_rules", {}).get("main")),
        mod_rules=BoundaryRules.from_json(cfg.get("boundary_rules", {}).get("mod")),
        main_transitions=_transitions(cfg, model_dir),
    )
    wf = cfg.get("word_features") or {}
    lexicon, problems = wf.get("lexicon"), wf.get("problem_lexicon")
    try:
        featurizer = WordFeaturizer.load(
            model_dir / lexicon if lexicon else None, model_dir / problems if problems else None
        )
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ModelError(f"{model_dir}: cannot read the word lexicons: {exc}") from exc
    return BertPipeline(load_tokenizer(model_dir / cfg["tokenizer"]), pc, featurizer)


def _transitions(cfg: dict[str, Any], model_dir: Path) -> tuple[tuple[float, ...], ...]:
    rows = cfg.get("main_transitions") or []
    n = len(MAIN_TAGS)
    try:
        out = tuple(tuple(float(x) for x in row) for row in rows)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{model_dir}/config.json: main_transitions is not numeric") from exc
    if out and (len(out) != n or any(len(r) != n for r in out)):
        raise ModelError(f"{model_dir}/config.json: main_transitions must be {n}x{n}")
    return out


class OrtRunner:
    """Two onnxruntime sessions; ``InferenceSession.run`` is thread-safe.

    ``threads`` windows run side by side, one core each, rather than one
    window on ``threads`` cores: a 192-token window is too small to keep two
    cores busy inside one matrix multiply.
    """

    def __init__(self, tagger: Path, relation: Path, threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - core dependency
            raise ModelError("onnxruntime is not installed") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads))
        providers = ["CPUExecutionProvider"]
        try:
            self.tagger = ort.InferenceSession(str(tagger), opts, providers=providers)
            self.relation = ort.InferenceSession(str(relation), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load ONNX model from {tagger.parent}: {exc}") from exc

    def tag(
        self, input_ids: NDArray[np.int64], mask: NDArray[np.int64], feats: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Run each window on its own, unpadded.

        Dynamic int8 quantization picks one activation scale per tensor, so
        in a padded batch every window's numbers depend on its neighbours:
        the same note would come out differently under different load.
        One window per run keeps results a function of the window alone,
        and on CPU it is not slower (measured: 16 single runs took 0.65x
        the time of one batch of 16 at 256 tokens, 2 threads).
        """
        lengths = mask.sum(axis=1).tolist()

        def one(i: int) -> list[NDArray[np.float32]]:
            n = lengths[i]
            feed = {
                "input_ids": input_ids[i : i + 1, :n],
                "attention_mask": mask[i : i + 1, :n],
                "word_feats": feats[i : i + 1, :n],
            }
            out: list[NDArray[np.float32]] = self.tagger.run(None, feed)
            return out

        outs = list(self._pool.map(one, range(len(lengths))))
        batch, width = input_ids.shape
        result = []
        for k in range(3):
            arr = np.zeros((batch, width, outs[0][k].shape[-1]), dtype=np.float32)
            for i, o in enumerate(outs):
                arr[i, : o[k].shape[1]] = o[k][0]
            result.append(arr)
        return result[0], result[1], result[2]

    def relate(
        self, span_repr: NDArray[np.float32], feats: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        (out,) = self.relation.run(None, {"span_repr": span_repr, "feats": feats})
        result: NDArray[np.float32] = out
        return result


class OnnxExtractor(Extractor):
    name = "onnx"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        threads: int = 2,
        batch_size: int = 16,
        precision: str = "int8",
        pipeline: PipelineConfig | None = None,
    ) -> None:
        self.model_dir = model_dir or default_model_dir()
        self.threads = threads
        self.batch_size = batch_size
        self.precision = precision
        self._pipeline_cfg = pipeline
        self._runner: OrtRunner | None = None
        self._pipe: BertPipeline | None = None
        self._cfg: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._notes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kiwi-note")

    def load(self) -> None:
        with self._lock:
            if self._runner is not None:
                return
            cfg = read_model_config(self.model_dir)
            key = "tagger" if self.precision == "int8" else "tagger_fp32"
            if not cfg.get(key) or not (self.model_dir / cfg[key]).is_file():
                raise ModelError(f"{self.model_dir}: no {self.precision} tagger in this model")
            self._pipe = pipeline_for(self.model_dir, cfg, self.batch_size)
            if self._pipeline_cfg is not None:
                self._pipe.cfg = self._pipeline_cfg
            self._runner = OrtRunner(
                self.model_dir / cfg[key], self.model_dir / cfg["relation"], self.threads
            )
            self._cfg = cfg

    @property
    def model_id(self) -> str:
        return str(self._cfg.get("model_id", "unloaded"))

    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        if self._runner is None or self._pipe is None:
            self.load()
        assert self._runner is not None and self._pipe is not None
        runner, pipe = self._runner, self._pipe
        backend = f"{self.name}-{self.precision}"
        if len(documents) < 2 or self.threads < 2:
            return pipe.run(
                runner, documents, given_entities, model_id=self.model_id, backend=backend
            )
        # One note per task, two tasks at a time: while one note's windows
        # are in onnxruntime (which releases the GIL), the other's are being
        # decoded in Python, so neither the cores nor the decoder sit idle.
        # Results do not depend on this: every window runs on its own.
        given = given_entities if given_entities is not None else [None] * len(documents)
        futures = [
            self._notes.submit(
                pipe.run,
                runner,
                [doc],
                None if given_entities is None else [g],
                model_id=self.model_id,
                backend=backend,
            )
            for doc, g in zip(documents, given, strict=True)
        ]
        return [f.result()[0] for f in futures]

    def health(self) -> bool:
        return self._runner is not None

    def close(self) -> None:
        with self._lock:
            self._runner = None
            self._pipe = None
