"""ONNX export and int8 dynamic quantization of the trained networks."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from kiwi_fhir.extractors.decode import N_FEATS
from kiwi_fhir.training.model import RelationHead, Tagger


def export_tagger(tagger: Tagger, path: Path) -> None:
    tagger.eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    # A padded row is essential: traced with an all-ones mask, transformers
    # drops the mask and the graph would let windows attend to padding.
    mask[1, 10:] = 0
    torch.onnx.export(
        tagger,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["main_logits", "mod_logits", "hidden"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "main_logits": {0: "batch", 1: "seq"},
            "mod_logits": {0: "batch", 1: "seq"},
            "hidden": {0: "batch", 1: "seq"},
        },
        opset_version=17,
        dynamo=False,
    )


def export_relation(head: RelationHead, hidden: int, path: Path) -> None:
    head.eval()
    reprs = torch.zeros((3, 4 * hidden), dtype=torch.float32)
    feats = torch.zeros((3, N_FEATS), dtype=torch.long)
    torch.onnx.export(
        head,
        (reprs, feats),
        str(path),
        input_names=["span_repr", "feats"],
        output_names=["logits"],
        dynamic_axes={"span_repr": {0: "pairs"}, "feats": {0: "pairs"}, "logits": {0: "pairs"}},
        opset_version=17,
        dynamo=False,
    )


def fp32_nodes(model_path: Path) -> list[str]:
    """MatMuls kept in fp32: the two tag heads, both FFN projections of the
    first third of the layers and the FFN output projection of the second
    third; the rest is int8.

    Quantization error made early is carried through every later layer, so
    precision is spent early. Measured on the dev split (36-epoch model,
    shipped decoding), NER / modifiers / RE end-to-end / RE given entities:
    fp32 0.810 / 0.692 / 0.623 / 0.699; this policy 0.808 / 0.695 / 0.621 /
    0.702; the previous one (heads + all six FFN output projections, same
    size and speed) 0.803 / 0.689 / 0.617 / 0.696; all FFN input
    projections in fp32 as well: within 0.2 but 44 MB and 25% slower.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul"]
    layers = sorted({int(m.group(1)) for n in matmuls if (m := _LAYER.search(n))})
    third = max(1, len(layers) // 3)
    keep = [n for n in matmuls if n in ("/main/MatMul", "/mod/MatMul")]
    for n in matmuls:
        m = _LAYER.search(n)
        if m is None or "/attention/" in n:
            continue
        rank = layers.index(int(m.group(1)))
        ffn_in, ffn_out = "/intermediate/dense/" in n, "/output/dense/" in n
        if (rank < third and (ffn_in or ffn_out)) or (rank < 2 * third and ffn_out):
            keep.append(n)
    return keep


_LAYER = re.compile(r"/layer\.(\d+)/")


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8, per channel: default settings drift to cosine 0.92 of
    fp32 on MiniLM, per-channel keeps 0.99."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=fp32_nodes(src),
    )
