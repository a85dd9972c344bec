"""torch custom ops `hivtp::score` / `hivtp::select`: the hivtp TensorRT plugins as seen by the exporter.

Eager, they run the reference (`hivtp.plugins.reference`), so the exported module computes exactly what
the torch backend computes. Their fake implementations give static output shapes (Kmax from
`selection_geometry`), so `torch.export` and the ONNX graph keep `[B, Kmax, D]` with only B dynamic.

ONNX: each op becomes one node in domain "hivtp" with op_type = plugin name ("Score" / "Select"), one
attribute per plugin field (`hivtp.plugins.plugin_fields`, INT / INTS / FLOAT only: the ONNX parser
rejects INT64 tensor attributes) and the STRING attribute `plugin_namespace` = "hivtp". The parser's
fallback importer (onnx-tensorrt `onnxOpImporters.cpp` @dd0a3a9f) looks the creator up by (op_type,
`plugin_version` attribute or "1", `plugin_namespace` attribute or "") and only when that finds
nothing retries with the node's domain: without the attribute, any library's `Score` / `Select`
registered in the empty namespace would be picked before ours. We use the dynamo exporter (`torch.onnx.export(dynamo=True,
custom_translation_table=...)`) because it writes every value's shape from the fake tensors, custom
nodes included; the TorchScript exporter would need a hand-written `setType` per output. The op
schemas are registered with `onnx.defs` so that onnxscript can build the nodes and `onnx.checker`
validates their attributes.

The op signatures are generated from the same field list, so op argument = ONNX attribute = plugin field.
Legend: L score layers, B images (crops for NeXT), H heads, N = 1 + P tokens, d head dim, D feature width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx
import onnxscript
import torch
from onnx import helper

from hivtp.config import HIVTPConfig
from hivtp.plugins.geometry import selection_layout
from hivtp.plugins.plugin_fields import PLUGIN_NAMESPACE, SCORE, SELECT, encode, fields_of

NAMESPACE_ATTRIBUTE = "plugin_namespace"  # read by the parser's fallback importer, not a plugin field
from hivtp.plugins.reference import gather_kept, importance_scores_from_qk, select_tokens

OPSET_VERSION = 1  # the "hivtp" ONNX domain's version (plugin version "1" is the parser's default)
FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
_TORCH_ARG_TYPES = {"INT": "int", "INTS": "int[]", "FLOAT": "float"}
_TENSOR_INPUTS = {SCORE: ("queries", "keys"), SELECT: ("scores", "features")}
_TENSOR_OUTPUTS = {SCORE: ("scores",), SELECT: ("selected", "counts", "indices")}


def field_names(plugin: str) -> list[str]:
    return [f.name for f in fields_of(plugin)]


def _torch_schema(plugin: str) -> str:
    """'(Tensor queries, Tensor keys, int[] score_layers) -> Tensor' from the plugin field list."""
    args = [f"Tensor {name}" for name in _TENSOR_INPUTS[plugin]]
    args += [f"{_TORCH_ARG_TYPES[f.onnx_type]} {f.name}" for f in fields_of(plugin)]
    outputs = ", ".join("Tensor" for _ in _TENSOR_OUTPUTS[plugin])
    return f"({', '.join(args)}) -> " + (f"({outputs})" if len(_TENSOR_OUTPUTS[plugin]) > 1 else outputs)


def selection_config(regions: list[int], global_ratio: float, window: int, budget: int) -> HIVTPConfig:
    """Select's attributes back to a HIVTPConfig (budget 0 encodes paper mode; score layers are Score's)."""
    return HIVTPConfig(regions=tuple(regions), global_ratio=global_ratio, window=window, budget=budget or None)


torch.library.define("hivtp::score", _torch_schema(SCORE))
torch.library.define("hivtp::select", _torch_schema(SELECT))


@torch.library.impl("hivtp::score", "default")
def _score(queries: torch.Tensor, keys: torch.Tensor, score_layers: list[int]) -> torch.Tensor:
    """queries, keys [L, B, H, N, d] -> scores [B, P] fp32."""
    if queries.shape[0] != len(score_layers):
        raise ValueError(f"Score: queries stack {queries.shape[0]} layers, score_layers names {len(score_layers)}")
    return importance_scores_from_qk(queries, keys)


@torch.library.register_fake("hivtp::score")
def _score_fake(queries: torch.Tensor, keys: torch.Tensor, score_layers: list[int]) -> torch.Tensor:
    L, B, H, N, d = queries.shape
    return queries.new_empty((B, N - 1), dtype=torch.float32)  # [B, P]


@torch.library.impl("hivtp::select", "default")
def _select(
    scores: torch.Tensor, features: torch.Tensor, regions: list[int], global_ratio: float, window: int,
    budget: int, grid_h: int, grid_w: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scores [B, P], features [B, P, D] -> selected [B, Kmax, D], counts [B] int32, indices [B, Kmax] int32."""
    config = selection_config(regions, global_ratio, window, budget)
    indices, counts = select_tokens(scores, (grid_h, grid_w), config)  # [B, Kmax], [B] int64
    return gather_kept(features, indices), counts.to(torch.int32), indices.to(torch.int32)


@torch.library.register_fake("hivtp::select")
def _select_fake(
    scores: torch.Tensor, features: torch.Tensor, regions: list[int], global_ratio: float, window: int,
    budget: int, grid_h: int, grid_w: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    config = selection_config(regions, global_ratio, window, budget)
    kmax = selection_layout((grid_h, grid_w), config).kmax  # plain Python: no tensors under FakeTensorMode
    B, P, D = features.shape
    selected = features.new_empty((B, kmax, D))  # [B, Kmax, D]
    return selected, scores.new_empty((B,), dtype=torch.int32), scores.new_empty((B, kmax), dtype=torch.int32)


def score(queries: torch.Tensor, keys: torch.Tensor, config: HIVTPConfig) -> torch.Tensor:
    """hivtp::score with the config's plugin attributes: [L, B, H, N, d] x 2 -> [B, P] fp32."""
    return torch.ops.hivtp.score(queries, keys, **encode(config)[SCORE])


def select(
    scores: torch.Tensor, features: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hivtp::select with the config's plugin attributes -> (selected, counts, indices)."""
    return torch.ops.hivtp.select(scores, features, **encode(config, grid)[SELECT])


# ---- ONNX ------------------------------------------------------------------------------------------


def _onnx_schema(plugin: str, doc: str) -> onnx.defs.OpSchema:
    param = onnx.defs.OpSchema.FormalParameter
    io_type = {"queries": "T", "keys": "T", "features": "T", "selected": "T", "scores": "tensor(float)"}
    attributes = [
        onnx.defs.OpSchema.Attribute(
            f.name, helper.make_attribute(f.name, list(f.default) if isinstance(f.default, tuple) else f.default),
            f.description,
        )
        for f in fields_of(plugin)
    ]
    attributes.append(onnx.defs.OpSchema.Attribute(
        NAMESPACE_ATTRIBUTE, helper.make_attribute(NAMESPACE_ATTRIBUTE, PLUGIN_NAMESPACE),
        "TensorRT plugin namespace the ONNX parser looks the creator up in",
    ))
    return onnx.defs.OpSchema(
        plugin, PLUGIN_NAMESPACE, OPSET_VERSION, doc,
        inputs=[param(name, io_type[name]) for name in _TENSOR_INPUTS[plugin]],
        outputs=[param(name, io_type.get(name, "tensor(int32)")) for name in _TENSOR_OUTPUTS[plugin]],
        type_constraints=[("T", FLOAT_TYPES, "queries / keys / features element type")],
        attributes=attributes,
    )


def register_onnx_schemas() -> None:
    """Make onnx (checker, onnxscript) know hivtp::Score / hivtp::Select; idempotent."""
    for plugin, doc in ((SCORE, "HIVTP importance scores from the score layers' Q and K"),
                        (SELECT, "HIVTP hierarchical selection of the kept patch features")):
        if not onnx.defs.has(plugin, OPSET_VERSION, PLUGIN_NAMESPACE):
            onnx.defs.register_schema(_onnx_schema(plugin, doc))


def _translation(plugin: str) -> Callable[..., Any]:
    """onnxscript translation: the torch op's non-tensor arguments become the node's attributes."""
    opset = onnxscript.values.Opset(PLUGIN_NAMESPACE, OPSET_VERSION)
    names = field_names(plugin)
    num_outputs = len(_TENSOR_OUTPUTS[plugin])

    def translate(first: Any, second: Any, *values: Any, **named: Any) -> Any:
        attributes = dict(zip(names, values)) | named | {NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE}
        return getattr(opset, plugin)(first, second, **attributes, _num_outputs=num_outputs)

    return translate


def translation_table() -> dict[Callable[..., Any], Callable[..., Any]]:
    """`custom_translation_table` for torch.onnx.export(dynamo=True)."""
    register_onnx_schemas()
    return {
        torch.ops.hivtp.score.default: _translation(SCORE),
        torch.ops.hivtp.select.default: _translation(SELECT),
    }
