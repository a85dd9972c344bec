"""The vision path of a HF LLaVA / LLaVA-NeXT model as one exportable module, and its ONNX export.

`VisionPath` owns the model's CLIP tower and projector (composition: nothing is patched) and runs
tower -> Q/K of the score layers -> scoring -> selection on the feature layer's patch tokens ->
projector. With `select_impl="plugin"` (the default) scoring and selection are hivtp::score /
hivtp::select, so the ONNX graph holds exactly two plugin nodes between stock layers; with "onnx" they
are standard ONNX ops (`standard_ops.py`): no plugin, same outputs. For LLaVA-NeXT the
crops are the batch dimension; the unpad / image_newline layout stays on the host (it depends on each
image's size, not on the pixels), as in `hivtp.runtime.hf`.

Legend: B images (crops for NeXT), N = 1 + P tokens, P patches, Kmax kept slots, Dv vision width,
D text hidden, L score layers, H heads, d head dim.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from hivtp.build import ops
from hivtp.build.standard_ops import SELECT_IMPLS, StandardSelection, attention_scores
from hivtp.config import HIVTPConfig
from hivtp.plugins.geometry import selection_layout
from hivtp.runtime.hf import check_model, clip_core, patch_grid, tower_qk

ONNX_OPSET = 18  # the dynamo exporter's own opset (17 would be down-converted); TensorRT 10.14 parses it
INPUT_NAMES = ["pixel_values"]
OUTPUT_NAMES = ["features", "counts", "indices"]
EXTERNAL_DATA_BYTES = 1 << 30  # above this, weights go to `<name>.data` (protobuf stops at 2 GiB)


class VisionPath(torch.nn.Module):
    """pixel_values [B, 3, S, S] -> features [B, Kmax, D], counts [B] int32, indices [B, Kmax] int32.

    Rows past counts[b] are the projector applied to zeros: read only the first counts[b] rows.
    Indices are int32 (the plugin's type), ascending, -1 padded.
    """

    def __init__(self, model: Any, config: HIVTPConfig, select_impl: str = "plugin") -> None:
        super().__init__()
        if select_impl not in SELECT_IMPLS:
            raise ValueError(f"select_impl must be one of {SELECT_IMPLS}, got {select_impl!r}")
        check_model(model)
        vision_config = model.config.vision_config
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        self.grid = patch_grid(vision_config)
        self.image_size = vision_config.image_size
        self.feature_layer = config.resolve_feature_layer(
            model.config.vision_feature_layer, vision_config.num_hidden_layers + 1
        )
        # explicit score layers: the export and the manifest record the layers the engine scores with
        self.hivtp_config = config.for_tower(len(clip_core(self.tower).encoder.layers), self.feature_layer)
        self.select_impl = select_impl
        self.selection = StandardSelection(self.grid, self.hivtp_config) if select_impl == "onnx" else None

    @property
    def kmax(self) -> int:
        return selection_layout(self.grid, self.hivtp_config).kmax

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        queries, keys, features = tower_qk(self.tower, pixel_values, self.hivtp_config, self.feature_layer)
        if self.selection is not None:  # standard ONNX ops
            selected, counts, indices = self.selection(attention_scores(queries, keys), features)  # [B, Kmax, Dv]
        else:  # the hivtp plugins
            scores = ops.score(queries, keys, self.hivtp_config)  # [B, P] fp32
            selected, counts, indices = ops.select(scores, features, self.grid, self.hivtp_config)  # [B, Kmax, Dv]
        return self.projector(selected), counts, indices  # [B, Kmax, D], [B], [B, Kmax]


class Fp32PatchConv(torch.nn.Module):
    """A bf16 tower's patch convolution, run in fp32 between two casts: ONNX opset 18 has no bf16 Conv.

    Everything else of a bf16 export is bf16, so the engine is strongly typed bf16 with one fp32 island
    (one conv, well under 1% of the tower's FLOPs). CLIPVisionEmbeddings casts pixel_values to
    `patch_embedding.weight.dtype` before the call, hence the fp32 `weight` seen from outside.
    """

    def __init__(self, conv: torch.nn.Conv2d, out_dtype: torch.dtype) -> None:
        super().__init__()
        self.conv = conv.float()
        self.out_dtype = out_dtype

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # [B, 3, S, S] -> [B, Dv, S/p, S/p]
        return self.conv(pixel_values.float()).to(self.out_dtype)


@dataclass(frozen=True)
class ExportedVision:
    path: Path  # the .onnx file (weights beside it in `<name>.data` when large)
    kmax: int
    grid: tuple[int, int]
    image_size: int  # crop side S of pixel_values [B, 3, S, S]
    hidden_size: int  # D of the projected features
    dtype: torch.dtype
    select_impl: str  # "plugin" (hivtp::Score / Select nodes) or "onnx" (standard ops only)
    config: HIVTPConfig  # with the score layers resolved for this tower


def export_vision(
    model: Any, config: HIVTPConfig, path: str | Path, max_batch: int = 8, dtype: torch.dtype | None = torch.float32,
    select_impl: str = "plugin",
) -> ExportedVision:
    """Export `VisionPath(model, config, select_impl)` to ONNX at `path` (dynamic batch up to max_batch) and check it.

    dtype: the ONNX's weight and activation type (None: the model's), which is the engine's precision:
    `hivtp build` exports in its --dtype and TensorRT builds a strongly typed network from it. Scores
    are fp32 in every dtype; bf16 runs its patch conv in fp32 (`Fp32PatchConv`). The model itself is
    not changed (a cast works on a copy).
    """
    path = Path(path)
    module = VisionPath(model, config, select_impl).eval()
    own = next(module.parameters()).dtype
    dtype = own if dtype is None else dtype
    if dtype != own or dtype == torch.bfloat16:  # bf16: Fp32PatchConv below changes the copy's conv
        module = copy.deepcopy(module).to(dtype)
    if dtype == torch.bfloat16:
        embeddings = clip_core(module.tower).embeddings
        embeddings.patch_embedding = Fp32PatchConv(embeddings.patch_embedding, dtype)
    side = module.image_size
    # batch 2 in the example: torch.export specialises a dimension whose example size is 1
    example = torch.zeros(2, 3, side, side, dtype=dtype, device=next(module.parameters()).device)
    batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
    with torch.no_grad():
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=ONNX_OPSET, input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES, dynamic_shapes=({0: batch},),
            custom_translation_table=ops.translation_table(), verbose=False,
        )
    info = ExportedVision(path, module.kmax, module.grid, side, model.config.text_config.hidden_size, dtype, select_impl,
                          module.hivtp_config)
    program.model.metadata_props.update({
        "hivtp.config": json.dumps(info.config.to_dict()), "hivtp.grid": json.dumps(list(info.grid)),
        "hivtp.kmax": str(info.kmax), "hivtp.select_impl": select_impl,
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    program.save(path, external_data=weight_bytes > EXTERNAL_DATA_BYTES)
    check_onnx(path)
    return info


def read_onnx(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    """An ONNX file's graph; a file that is not one (a PNG, a truncated export) is one ValueError."""
    from google.protobuf.message import DecodeError

    from hivtp.outputs import check_not_special

    check_not_special(path, "ONNX file")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, onnx.checker.ValidationError, ValueError) as err:
        raise ValueError(f"cannot read the ONNX file {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    except OSError as err:
        raise ValueError(f"cannot read the ONNX file {path}: {err.strerror or err}") from None


def exported_config(path: str | Path) -> HIVTPConfig:
    """The HIVTPConfig an exported file was built with (its `hivtp.config` metadata)."""
    metadata = {p.key: p.value for p in read_onnx(path, load_external_data=False).metadata_props}
    if "hivtp.config" not in metadata:
        raise ValueError(f"{path} is not a hivtp vision export: no hivtp.config metadata")
    return HIVTPConfig.from_dict(json.loads(metadata["hivtp.config"]))


def check_onnx(path: str | Path) -> None:
    """onnx.checker with the hivtp schemas registered (so plugin attributes are validated too)."""
    ops.register_onnx_schemas()
    onnx.checker.check_model(str(path), full_check=True)
