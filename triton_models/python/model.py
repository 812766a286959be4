"""Triton Python-backend model: one ONNX graph on onnxruntime (CPU hosts).

Copied as ``<model>/1/model.py`` next to ``model.onnx`` by
``kiwi_fhir.extractors.triton_repo``. It needs numpy and onnxruntime in the
Python the backend stub runs (the Triton image: ``pip install onnxruntime``).
Each request is run on its own (see config.pbtxt for why). A failing
request answers with onnxruntime's message (shapes and names, never tensor
values: those derive from clinical notes).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads") or 1)
        opts.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                feed = {
                    name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                    for name in self.inputs
                }
                results = self.session.run(self.outputs, feed)
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value))
                    for name, value in zip(self.outputs, results, strict=True)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one bad request must not take the model down
                error = pb_utils.TritonError(f"{type(exc).__name__}: {str(exc)[:300]}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses

    def finalize(self) -> None:
        self.session = None
