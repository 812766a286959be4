"""Remote extractor: the two networks run on a Triton server over gRPC.

Only the networks move: tokenization, windows, constrained decoding and
pairing stay in :class:`~kiwi_fhir.extractors.pipeline.BertPipeline` on the
client, so a Triton deployment gives the same spans as the in-process
extractor for the same logits (the integration test checks exactly that).
The client therefore needs the model dir too, for ``config.json`` and the
tokenizer; the server's ``kiwi_model_id`` parameter must match it.

The service must stay up while Triton is down: ``load`` does not insist on
reaching the server, ``health`` probes it, and ``extract`` retries
UNAVAILABLE with exponential backoff and then raises
``BackendUnavailableError`` (which the service answers as UNAVAILABLE and
re-queues). Extra ``triton``: ``pip install 'kiwi-fhir[triton]'``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    MissingExtraError,
    ModelError,
)
from kiwi_fhir.extractors.base import Extractor
from kiwi_fhir.extractors.onnx import default_model_dir, pipeline_for, read_model_config
from kiwi_fhir.extractors.pipeline import BertPipeline, FloatArray

log = logging.getLogger(__name__)
_RETRYABLE = {"StatusCode.UNAVAILABLE": False, "StatusCode.DEADLINE_EXCEEDED": True}
_TAG_OUTPUTS = ("main_logits", "mod_logits", "hidden")


def _grpcclient() -> Any:
    """``tritonclient.grpc``, or the install command when the extra is missing."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise MissingExtraError("the Triton backend", "triton") from exc
    return grpcclient


class TritonRunner:
    """A :class:`~kiwi_fhir.extractors.pipeline.Runner` whose networks live on Triton.

    One gRPC client per thread: the extractor promises thread safety and the
    tritonclient objects do not.
    """

    def __init__(
        self,
        url: str,
        *,
        tagger: str = "kiwi_tagger",
        relation: str = "kiwi_relation",
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        relation_max_batch: int = 0,
        ssl: bool = False,
        root_certificates: str | None = None,
        per_window: bool = True,
    ) -> None:
        self.url = url
        self.per_window = per_window
        #: TLS towards Triton (its --grpc-use-ssl); the CA file, else the system's roots.
        self._tls: dict[str, Any] = {"ssl": ssl, "root_certificates": root_certificates}
        self.tagger = tagger
        self.relation = relation
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        #: Pairs per relation request; 0 = all in one (the server batches nothing).
        self.relation_max_batch = relation_max_batch
        self._mod = _grpcclient()
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._mod.InferenceServerClient(self.url, **self._tls)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)`` on this thread's client, with retries; the one translation point."""
        from tritonclient.utils import InferenceServerException

        for attempt in range(self.retries + 1):
            try:
                return fn(self.client(), *args, **kwargs)
            except InferenceServerException as exc:
                status = str(exc.status() or "")
                if status not in _RETRYABLE:
                    raise BackendError(
                        f"triton {what} failed ({status or 'error'}): {str(exc.message())[:300]}"
                    ) from exc
                if attempt == self.retries:
                    kind = BackendTimeoutError if _RETRYABLE[status] else BackendUnavailableError
                    raise kind(
                        "triton", self.url, f"{what}: {status} after {attempt + 1} attempt(s)"
                    ) from exc
                delay = self.backoff_s * 2**attempt
                time.sleep(delay * (0.5 + random.random()))  # jitter: no thundering herd
        raise AssertionError("unreachable")  # pragma: no cover

    def _infer(
        self, model: str, inputs: dict[str, NDArray[Any]], outputs: Sequence[str]
    ) -> list[NDArray[Any]]:
        from tritonclient.utils import np_to_triton_dtype

        req = []
        for name, arr in inputs.items():
            t = self._mod.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            t.set_data_from_numpy(np.ascontiguousarray(arr))
            req.append(t)
        want = [self._mod.InferRequestedOutput(n) for n in outputs]

        def run(c: Any) -> Any:
            return c.infer(model, req, outputs=want, client_timeout=self.timeout_s)

        result = self.call(f"infer {model}", run)
        try:
            got = [result.as_numpy(n) for n in outputs]
        except ValueError as exc:  # byte count does not fit the shape: a broken server side
            raise BackendError(f"triton model {model} sent a malformed tensor: {exc}") from exc
        if any(g is None for g in got):
            raise BackendError(f"triton model {model} did not return {list(outputs)}")
        return got

    def tag(
        self, input_ids: NDArray[np.int64], mask: NDArray[np.int64], feats: NDArray[np.int64]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Each window unpadded in its own request, unless ``per_window`` is off.

        As in :class:`~kiwi_fhir.extractors.onnx.OrtRunner`: the int8 tagger
        picks one activation scale per call, so a window's numbers would
        depend on its batch neighbours. An fp32 tagger on a GPU does not need
        this and batches better without it (``per_window=False``).
        """
        if not self.per_window:
            a, b, h = self._infer(
                self.tagger,
                {"input_ids": input_ids, "attention_mask": mask, "word_feats": feats},
                _TAG_OUTPUTS,
            )
            return a, b, h
        outs = [
            self._infer(
                self.tagger,
                {
                    "input_ids": input_ids[i : i + 1, :n],
                    "attention_mask": mask[i : i + 1, :n],
                    "word_feats": feats[i : i + 1, :n],
                },
                _TAG_OUTPUTS,
            )
            for i, n in enumerate(mask.sum(axis=1).tolist())
        ]
        padded = []
        for k in range(len(_TAG_OUTPUTS)):
            arr = np.zeros((*input_ids.shape, outs[0][k].shape[-1]), dtype=np.float32)
            for i, o in enumerate(outs):
                arr[i, : o[k].shape[1]] = o[k][0]
            padded.append(arr)
        return padded[0], padded[1], padded[2]

    def relate(self, span_repr: FloatArray, feats: NDArray[np.int64]) -> FloatArray:
        step = self.relation_max_batch or len(span_repr) or 1
        parts = [
            self._infer(
                self.relation,
                {"span_repr": span_repr[i : i + step], "feats": feats[i : i + step]},
                ("logits",),
            )[0]
            for i in range(0, len(span_repr), step)
        ]
        out: FloatArray = np.concatenate(parts).reshape(-1).astype(np.float32)
        return out

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()
        self._local = threading.local()


class TritonExtractor(Extractor):
    name = "triton"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        url: str = "127.0.0.1:8001",
        tagger_model: str = "kiwi_tagger",
        relation_model: str = "kiwi_relation",
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        batch_size: int = 16,
        health_timeout_s: float = 2.0,
        ssl: bool = False,
        root_certificates: str | None = None,
        per_window: bool = True,
    ) -> None:
        _grpcclient()  # fail at start-up, not at the first request, when the extra is absent
        self.model_dir = model_dir or default_model_dir()
        self.url = url
        self.models = (tagger_model, relation_model)
        self.batch_size = batch_size
        self.health_timeout_s = health_timeout_s
        self._runner_args: dict[str, Any] = {
            "tagger": tagger_model,
            "relation": relation_model,
            "timeout_s": timeout_s,
            "retries": retries,
            "backoff_s": backoff_s,
            "ssl": ssl,
            "root_certificates": root_certificates,
            "per_window": per_window,
        }
        self._cfg: dict[str, Any] = {}
        self._pipe: BertPipeline | None = None
        self._runner: TritonRunner | None = None
        self._verified = False
        self._lock = threading.Lock()

    def load(self) -> None:
        """Local files must be right; the server may come up later (logged, not fatal)."""
        with self._lock:
            if self._runner is not None:
                return
            cfg = read_model_config(self.model_dir)
            self._pipe = pipeline_for(self.model_dir, cfg, self.batch_size)
            self._cfg = cfg
            self._runner = TritonRunner(self.url, **self._runner_args)
        try:
            self._verify()
        except BackendUnavailableError as exc:
            log.warning("%s; requests answer UNAVAILABLE until it is up", exc)

    def _verify(self) -> None:
        """Same model on the server as our tokenizer expects; learn its batch limits."""
        assert self._runner is not None
        runner = self._runner
        for model in self.models:
            got = runner.call(
                f"config {model}",
                lambda c, m=model: c.get_model_config(
                    m, as_json=True, client_timeout=self.health_timeout_s
                ),
            )
            conf = got.get("config", got)
            served = conf.get("parameters", {}).get("kiwi_model_id", {}).get("string_value")
            if served != self._cfg.get("model_id"):
                raise ModelError(
                    f"triton at {self.url} serves model {model} as {served!r}, "
                    f"but {self.model_dir} is {self._cfg.get('model_id')!r}"
                )
            max_batch = int(conf.get("max_batch_size", 0))
            if model == self.models[1]:
                runner.relation_max_batch = max_batch
            elif max_batch and max_batch < self.batch_size and self._pipe is not None:
                self._pipe.cfg = dataclasses.replace(self._pipe.cfg, batch_size=max_batch)
        self._verified = True

    @property
    def model_id(self) -> str:
        return str(self._cfg.get("model_id", "unloaded"))

    def extract(
        self,
        documents: Sequence[Document],
        given_entities: Sequence[Sequence[Entity] | None] | None = None,
    ) -> list[Extraction]:
        if self._runner is None:
            self.load()
        if not self._verified:
            self._verify()
        assert self._runner is not None and self._pipe is not None
        return self._pipe.run(
            self._runner, documents, given_entities, model_id=self.model_id, backend=self.name
        )

    def health(self) -> bool:
        """Server and both models ready now, and serving *our* model (checked once)."""
        runner = self._runner
        if runner is None:
            return False
        try:
            c = runner.client()
            ready = bool(c.is_server_ready(client_timeout=self.health_timeout_s)) and all(
                c.is_model_ready(m, client_timeout=self.health_timeout_s) for m in self.models
            )
            if ready and not self._verified:
                self._verify()
            return ready
        except Exception:  # any failure to answer is "not healthy", never an error
            return False

    def close(self) -> None:
        with self._lock:
            runner, self._runner = self._runner, None
            self._verified = False
        if runner is not None:
            runner.close()
