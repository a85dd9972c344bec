"""Run an exported vision ONNX in onnxruntime and compare it with the torch backend.

A plugin graph runs with its hivtp nodes implemented by the reference: this checks the graph around the
plugins (tower, Q/K wiring, feature layer, projector, attributes) on machines without TensorRT; the
plugins themselves are checked on a GPU. A plugin-free graph (`--select-impl onnx`) runs in a plain
onnxruntime session, no custom op registered: the whole graph, selection included, is checked.

onnxruntime-extensions (0.15) registers Python ops only in its own domain "ai.onnx.contrib" and only
with INT64 / FLOAT / STRING attributes, so the session gets a copy of the graph whose hivtp nodes are
moved to that domain and whose INTS attributes are written as "6,7,8" strings. The exported file is
never changed.

    python -m hivtp.build.ort_check --model DIR --onnx OUT/vision/model.onnx [--image FILE ...]

The HIVTPConfig comes from the export's own `hivtp.config` metadata. fp32 and fp16 graphs (an fp16
graph against the fp32 torch backend: indices and counts still exact, features to fp16's precision); bf16
graphs are refused (onnxruntime's CPU provider has no bf16 kernel for several of their ops).

Legend: B images (crops for NeXT), Kmax kept slots, D text hidden.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
from PIL import Image

from hivtp.build import ops  # noqa: F401  (registers the hivtp torch ops the ORT ops call)
from hivtp.build.export import exported_config, read_onnx
from hivtp.plugins.plugin_fields import PLUGIN_NAMESPACE, SCORE, SELECT, fields_of
from hivtp.runtime.hf import prune_inputs
from hivtp.runtime.prompt_table import pruned_layout

ORTX_DOMAIN = "ai.onnx.contrib"
_ORTX_ATTR = {"INT": PyCustomOpDef.dt_int64, "FLOAT": PyCustomOpDef.dt_float, "INTS": PyCustomOpDef.dt_string}
PROMPT = "USER: <image> describe ASSISTANT:"


def _decode(plugin: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """ortx attributes back to the torch op's arguments (INTS travel as "a,b,c")."""
    types = {f.name: f.onnx_type for f in fields_of(plugin)}
    return {k: [int(x) for x in v.split(",")] if types[k] == "INTS" else v for k, v in attrs.items()}


@cache
def register_reference_ops() -> None:
    """Score / Select as onnxruntime-extensions Python ops (fp32) that call the torch reference ops."""
    f32, i32 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32
    attrs_of = lambda plugin: {f.name: _ORTX_ATTR[f.onnx_type] for f in fields_of(plugin)}  # noqa: E731

    @onnx_op(op_type=SCORE, inputs=[f32, f32], outputs=[f32], attrs=attrs_of(SCORE))
    def _score(queries: np.ndarray, keys: np.ndarray, **attrs: Any) -> np.ndarray:
        return torch.ops.hivtp.score(torch.from_numpy(queries), torch.from_numpy(keys), **_decode(SCORE, attrs)).numpy()

    @onnx_op(op_type=SELECT, inputs=[f32, f32], outputs=[f32, i32, i32], attrs=attrs_of(SELECT))
    def _select(scores: np.ndarray, features: np.ndarray, **attrs: Any) -> tuple[np.ndarray, ...]:
        outputs = torch.ops.hivtp.select(torch.from_numpy(scores), torch.from_numpy(features), **_decode(SELECT, attrs))
        return tuple(t.numpy() for t in outputs)


def ort_graph(path: str | Path) -> onnx.ModelProto:
    """A copy of the exported graph with its hivtp nodes in onnxruntime-extensions' domain, run in fp32.

    The Python ops are declared fp32, so an fp16 graph's plugin nodes get Casts around them: to fp32 on every
    input, and Select's features back to the graph's dtype (exact: the reference scores in fp32 anyway).
    """
    model = read_onnx(path)
    graph_dtype = model.graph.input[0].type.tensor_type.elem_type
    nodes = []
    for node in model.graph.node:
        if node.domain != PLUGIN_NAMESPACE:
            nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            nodes.append(onnx.helper.make_node("Cast", [name], [f"{name}.fp32"], to=onnx.TensorProto.FLOAT))
            node.input[i] = f"{name}.fp32"
        nodes.append(node)
        if node.op_type == SELECT:  # outputs: features (the graph's dtype), counts, indices (int32)
            features = node.output[0]
            node.output[0] = f"{features}.fp32"
            nodes.append(onnx.helper.make_node("Cast", [node.output[0]], [features], to=graph_dtype))
        node.domain = ORTX_DOMAIN
        fields = {f.name for f in fields_of(node.op_type)}
        kept = [attr for attr in node.attribute if attr.name in fields]  # plugin_namespace is TensorRT's, not the op's
        del node.attribute[:]
        for attr in kept:
            if attr.type == onnx.AttributeProto.INTS:
                attr = onnx.helper.make_attribute(attr.name, ",".join(str(i) for i in attr.ints))
            node.attribute.append(attr)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.opset_import.append(onnx.helper.make_opsetid(ORTX_DOMAIN, 1))
    return model


def has_plugin_nodes(path: str | Path) -> bool:
    return _has_plugin_nodes(read_onnx(path, load_external_data=False).graph)


def _has_plugin_nodes(graph: onnx.GraphProto) -> bool:
    return any(n.domain == PLUGIN_NAMESPACE for n in graph.node)


def ort_session(path: str | Path) -> ort.InferenceSession:
    """A CPU session: plugin graphs with the reference custom ops, plugin-free graphs as they are."""
    graph = read_onnx(path, load_external_data=False).graph
    if graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16:
        raise ValueError(
            f"{path} is a bf16 graph, and onnxruntime's CPU provider has no bf16 kernel for several of its ops: "
            "check the fp16 export of the same checkpoint (hivtp build --dtype fp16 --onnx-only)"
        )
    if not _has_plugin_nodes(graph):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    register_reference_ops()
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(ort_graph(path).SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_vision(session: ort.InferenceSession, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """pixel_values [B, 3, S, S] -> features [B, Kmax, D] fp32, counts [B] int32, indices [B, Kmax] int32."""
    numpy_type = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    outputs = session.run(None, {"pixel_values": pixel_values.float().numpy().astype(numpy_type)})
    features, counts, indices = (torch.from_numpy(x) for x in outputs)
    return features.float(), counts, indices


@torch.inference_mode()
def compare(model: Any, processor: Any, onnx_path: str | Path, images: list[Image.Image]) -> float:
    """Max |ORT - torch| over the LLM's visual rows; AssertionError when indices, counts or features differ.

    The ORT outputs go through the TensorRT-LLM backend's host layout (`runtime.prompt_table.pruned_layout`:
    kept rows, and for LLaVA-NeXT unpad + image_newline) and must equal the torch backend's
    `prune_inputs(...)`: the same kept indices and counts per image / crop, the same rows in the same order.
    """
    inputs = processor(images=images, text=[PROMPT] * len(images), return_tensors="pt", padding=True)
    pruned = prune_inputs(
        model, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"], inputs.get("image_sizes"),
        exported_config(onnx_path),
    )
    session = ort_session(onnx_path)
    seen: list[tuple[torch.Tensor, ...]] = []

    def vision(pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen.append(run_vision(session, pixel_values))
        return seen[-1]

    newline = getattr(model.model, "image_newline", None)
    layout = pruned_layout(dict(inputs), model.config, vision, None if newline is None else newline.float())
    _, counts, indices = seen[0]
    assert torch.equal(counts.long(), pruned.counts), f"counts: ORT {counts.tolist()}, torch {pruned.counts.tolist()}"
    assert torch.equal(indices.long(), pruned.indices), "kept indices differ between ORT and torch"
    assert torch.equal(layout.kept_tokens, pruned.kept_tokens), "visual tokens per image differ"
    expected = pruned.features.float()
    if session.get_inputs()[0].type == "tensor(float16)":  # fp16 rounding in every layer: a tolerance on the features' scale
        torch.testing.assert_close(layout.features, expected, rtol=1e-2, atol=1e-2 * float(expected.abs().max()))
    else:
        torch.testing.assert_close(layout.features, expected, rtol=1e-4, atol=1e-4)
    return float((layout.features - expected).abs().max())


def main(argv: Sequence[str] | None = None) -> int:
    from hivtp.args import OneLineParser, path
    from hivtp.cli import one_line_errors
    from hivtp.demo import sample_image_path
    from hivtp.loading import load_image, load_llava

    parser = OneLineParser(prog="python -m hivtp.build.ort_check", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=path, help="the HF checkpoint the ONNX was exported from")
    parser.add_argument("--onnx", required=True, type=path, help="the exported vision ONNX (e.g. OUT/vision/model.onnx)")
    parser.add_argument("--image", action="append", type=path, help="image file(s) (default: the bundled sample image)")
    args = parser.parse_args(argv)

    def check() -> int:
        if not args.onnx.is_file():
            raise ValueError(f"ONNX file not found: {args.onnx}")
        read_onnx(args.onnx, load_external_data=False)  # not an ONNX: one line before the model loads
        images = [load_image(p) for p in args.image or [sample_image_path()]]
        model, processor = load_llava(args.model, dtype=torch.float32)
        try:
            error = compare(model, processor, args.onnx, images)
        except AssertionError as err:
            print(f"ORT graph differs from the torch backend: {str(err).splitlines()[0]}", file=sys.stderr)
            return 1
        print(f"ORT graph = torch backend: indices and counts equal, max |feature diff| {error:.2e}")
        return 0

    return one_line_errors(check)


if __name__ == "__main__":
    sys.exit(main())
