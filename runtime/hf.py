"""HIVTP on Hugging Face LLaVA-1.5 / LLaVA-NeXT: prune visual tokens, then run the stock model.

No library class is patched: `prune_inputs` reads the model's public submodules, runs the vision
tower once, takes the score layers' Q and K from that forward (hooks on the instances' q_proj /
k_proj, removed afterwards), scores tokens from them (streamed, SDPA untouched), selects,
projects only the kept tokens and rebuilds a shorter sequence. `apply` wraps a model so that
`forward` / `generate` feed the stock model `inputs_embeds`.

Legend: M images (crops for NeXT: C), N = 1 + P tokens, P patches, Kmax kept slots, Dv vision
hidden, D text hidden, B prompt rows, T pruned length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

from hivtp.checks import INTEGER, MASK, REAL, check_config, check_same_device, check_tensor, describe
from hivtp.config import HIVTPConfig
from hivtp.plugins.reference import gather_kept, importance_scores_from_qk, select_tokens
from hivtp.runtime.layout import (
    PrunedSequence,
    crops_per_image,
    flatten_crops,
    kept_mask,
    layout_offsets,
    next_features,
    next_layouts,
    original_position_ids,
    pad_id_of,
    prune_sequence,
    split_kept,
)


@dataclass(frozen=True)
class PrunedInputs:
    inputs_embeds: torch.Tensor  # [B, T, D]
    attention_mask: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    features: torch.Tensor  # [sum of kept tokens, D] projected, image after image (NeXT: newlines included)
    indices: torch.Tensor  # [M or C, Kmax] kept patch indices per image (per crop for NeXT), -1 padded
    counts: torch.Tensor  # [M or C] kept patches per image / crop
    kept_tokens: torch.Tensor  # [M] visual tokens each image contributes after pruning (NeXT: incl. newlines)
    full_tokens: torch.Tensor  # [M] visual tokens each image contributes without pruning
    sequence: PrunedSequence


def check_model(model: Any) -> None:
    if not isinstance(model, (LlavaForConditionalGeneration, LlavaNextForConditionalGeneration)):
        raise ValueError(f"HIVTP supports LLaVA-1.5 and LLaVA-NeXT models, got {type(model).__name__}")
    strategy = model.config.vision_feature_select_strategy
    if strategy != "default":
        raise ValueError(f"vision_feature_select_strategy={strategy!r} is not supported: HIVTP needs 'default' (CLS dropped)")
    tower = model.model.vision_tower
    if not hasattr(getattr(clip_core(tower), "embeddings", None), "class_embedding"):
        raise ValueError(f"HIVTP needs a CLIP-style vision tower with a CLS token, got {type(tower).__name__}")


def clip_core(tower: torch.nn.Module) -> torch.nn.Module:
    """The module holding `embeddings` and `encoder`: `.vision_model` in transformers 4.x, the tower itself in 5.x."""
    return getattr(tower, "vision_model", tower)


def patch_grid(vision_config: Any) -> tuple[int, int]:
    side = vision_config.image_size // vision_config.patch_size
    return side, side


QK_PROJECTIONS = ("q_proj", "k_proj")  # CLIPAttention's Linear submodules that output Q and K


@contextmanager
def captured_projections(tower: torch.nn.Module, layers: tuple[int, ...]) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Forward hooks on `layers`' q_proj / k_proj, removed on exit: their outputs [M, N, Dv], one dict per layer.

    The tower's own forward computes these projections for its attention; keeping them costs nothing.
    """
    encoder_layers = clip_core(tower).encoder.layers
    captured: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    handles = []

    def keeper(slot: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            slot[name] = output

        return hook

    try:
        for slot, layer in zip(captured, layers):
            attn = encoder_layers[layer].self_attn
            handles += [getattr(attn, name).register_forward_hook(keeper(slot, name)) for name in QK_PROJECTIONS]
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def tower_qk(
    tower: torch.nn.Module, pixel_values: torch.Tensor, config: HIVTPConfig, feature_layer: int | list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the CLIP tower once -> queries, keys [L, M, H, N, d] of the score layers, patch features [M, P, Dv'].

    Q/K are the score layers' own q_proj / k_proj outputs (before the d^-0.5 scale), taken from the
    forward by hooks: nothing is recomputed, SDPA stays on and no attention map is ever requested.
    Dv' = Dv * feature layers.
    """
    layers = config.for_tower(len(clip_core(tower).encoder.layers), feature_layer).layers  # 'relative' resolved, checked
    dtype = next(tower.parameters()).dtype
    with captured_projections(tower, layers) as captured:
        hidden = tower(pixel_values.to(dtype), output_hidden_states=True).hidden_states  # L+1 x [M, N, Dv]
    M, N, _ = hidden[0].shape
    attn = clip_core(tower).encoder.layers[layers[0]].self_attn
    split = (M, N, attn.num_heads, attn.head_dim)
    missing = [layer for layer, slot in zip(layers, captured) if set(slot) != set(QK_PROJECTIONS)]
    if missing:
        raise ValueError(f"the vision tower's forward did not run q_proj / k_proj of score layers {missing}")
    queries = torch.stack([slot["q_proj"].view(split).transpose(1, 2) for slot in captured])  # [L, M, H, N, d]
    keys = torch.stack([slot["k_proj"].view(split).transpose(1, 2) for slot in captured])  # [L, M, H, N, d]
    feature_layers = [feature_layer] if isinstance(feature_layer, int) else list(feature_layer)
    features = torch.cat([hidden[layer][:, 1:] for layer in feature_layers], dim=-1)  # [M, P, Dv']
    return queries, keys, features


def encode_and_score(
    tower: torch.nn.Module, pixel_values: torch.Tensor, config: HIVTPConfig, feature_layer: int | list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (scores [M, P] fp32, patch features [M, P, Dv'])."""
    queries, keys, features = tower_qk(tower, pixel_values, config, feature_layer)
    return importance_scores_from_qk(queries, keys), features


Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # queries, keys [L, M, H, N, d] -> [M, P]
Selector = Callable[[torch.Tensor, tuple[int, int], HIVTPConfig], tuple[torch.Tensor, ...]]  # -> indices, counts
VisionStep = Callable[..., tuple]  # (model, pixel_values, config, ops) -> select_and_project's four results


@dataclass(frozen=True)
class PruneOps:
    """The steps a caller may swap: the Triton kernels on CUDA, or a baseline selection (fidelity).

    vision_step runs `select_and_project` another way (e.g. replayed as a CUDA graph); None: eagerly.
    """

    score: Scorer = importance_scores_from_qk
    select: Selector = select_tokens
    vision_step: VisionStep | None = None


def check_ops(ops: Any) -> PruneOps | None:
    if ops is not None and not isinstance(ops, PruneOps):
        raise ValueError(f"ops must be a PruneOps or None (the default kernels), got {describe(ops)}")
    return ops


def default_ops(device: torch.device) -> PruneOps:
    """Triton kernels on CUDA (same indices as the reference, scores within 1e-5), the reference elsewhere."""
    if device.type != "cuda":
        return PruneOps()
    from hivtp.plugins.kernels import score, select

    return PruneOps(score=score.score, select=select.select)


def select_and_project(model: Any, pixel_values: torch.Tensor, config: HIVTPConfig, ops: PruneOps | None = None):
    """Score, select and project the kept tokens of a stack of images or crops [M, 3, S, S].

    -> grid, indices [M, Kmax], counts [M], projected kept features [M, Kmax, D] (rows past counts: padding).
    The vision engine computes the same three tensors (`hivtp build`).
    """
    ops = ops or default_ops(pixel_values.device)
    vision_config = model.config.vision_config
    grid = patch_grid(vision_config)
    feature_layer = config.resolve_feature_layer(
        model.config.vision_feature_layer, vision_config.num_hidden_layers + 1
    )
    queries, keys, features = tower_qk(model.model.vision_tower, pixel_values, config, feature_layer)
    if features.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"the tower produced {features.shape[1]} patch tokens, but its config implies a {grid[0]}x{grid[1]} grid")
    scores = ops.score(queries, keys)  # [M, P] fp32
    indices, counts = ops.select(scores, grid, config)[:2]  # [M, Kmax], [M]
    projected = model.model.multi_modal_projector(gather_kept(features, indices))  # [M, Kmax, D]
    return grid, indices, counts, projected


def _llava_features(model: Any, pixel_values: torch.Tensor, config: HIVTPConfig, ops: PruneOps):
    grid, indices, counts, projected = (ops.vision_step or select_and_project)(model, pixel_values, config, ops)
    full = torch.full_like(counts, grid[0] * grid[1])
    return split_kept(projected, counts), indices, counts, counts, full  # features [sum k, D]


def _next_features(
    model: Any, pixel_values: torch.Tensor, image_sizes: torch.Tensor, config: HIVTPConfig, ops: PruneOps
):
    """LLaVA-NeXT: select K per real crop, then HF's unpad and newline layout on the kept positions."""
    cfg = model.config
    num_crops = crops_per_image(image_sizes, cfg.image_grid_pinpoints, cfg.vision_config.image_size)
    pixel_values = flatten_crops(pixel_values, num_crops)  # [C, 3, H, W]
    grid, indices, counts, projected = (ops.vision_step or select_and_project)(model, pixel_values, config, ops)  # C crops
    features, kept, full = next_features(
        projected, indices, model.model.image_newline, image_sizes, cfg.image_grid_pinpoints, cfg.vision_config.image_size, grid
    )
    return features, indices, counts, kept, full


def check_inputs(
    model: Any, input_ids: Any, attention_mask: Any, pixel_values: Any, image_sizes: Any
) -> None:
    """The processor's outputs, as prune_inputs needs them; anything else is one ValueError."""
    check_tensor("input_ids", input_ids, 2, INTEGER)
    if input_ids.dtype not in (torch.int64, torch.int32):  # what an embedding lookup takes
        raise ValueError(f"input_ids must hold int64 or int32 token ids, got {describe(input_ids)}")
    if input_ids.shape[0] == 0:
        raise ValueError(f"input_ids holds no prompt: got {describe(input_ids)}")
    if attention_mask is not None:
        check_tensor("attention_mask", attention_mask, 2, MASK)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have input_ids' shape {tuple(input_ids.shape)}")
    side = model.config.vision_config.image_size
    if isinstance(model, LlavaNextForConditionalGeneration):
        check_tensor("pixel_values", pixel_values, (4, 5), REAL)
        check_tensor("image_sizes", image_sizes, 2, INTEGER)
        images = pixel_values.shape[0] if pixel_values.dim() == 5 else None
        if image_sizes.shape[1] != 2 or (images is not None and image_sizes.shape[0] != images):
            raise ValueError(f"image_sizes must be [images, 2] (height, width), got {tuple(image_sizes.shape)}")
        if bool((image_sizes <= 0).any()):
            raise ValueError(f"image_sizes must be positive (height, width), got {image_sizes.tolist()}")
    else:
        check_tensor("pixel_values", pixel_values, 4, REAL)
    if tuple(pixel_values.shape[-3:]) != (3, side, side):
        raise ValueError(f"pixel_values must end in (3, {side}, {side}) for this model, got {tuple(pixel_values.shape)}")
    if getattr(model, "hf_device_map", None) is None:  # a model split by accelerate moves inputs itself
        tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}  # image_sizes: read on the host
        check_same_device(model=next(model.parameters()), **{name: t for name, t in tensors.items() if t is not None})


def kept_offsets(model: Any, indices: torch.Tensor, counts: torch.Tensor, image_sizes: torch.Tensor | None) -> torch.Tensor:
    """[sum of kept tokens]: where each kept token sat in its image's unpruned run (positions='original')."""
    if not isinstance(model, LlavaNextForConditionalGeneration):
        return split_kept(indices[..., None], counts)[:, 0]  # the patch index
    cfg = model.config
    grid = patch_grid(cfg.vision_config)
    kept = kept_mask(indices, grid[0] * grid[1])  # [C, P]
    layouts = next_layouts(kept, image_sizes, cfg.image_grid_pinpoints, cfg.vision_config.image_size, grid)
    return torch.cat([layout_offsets(ids, full) for _, ids, full in layouts])


def prune_inputs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    pixel_values: torch.Tensor,
    image_sizes: torch.Tensor | None,
    config: HIVTPConfig,
    ops: PruneOps | None = None,
) -> PrunedInputs:
    """Vision tower -> scores -> selection -> projector -> shorter, left-padded LLM input.

    ops: scoring / selection to use (default: `default_ops(pixel_values.device)`).
    """
    check_model(model)
    check_inputs(model, input_ids, attention_mask, pixel_values, image_sizes)
    config = check_config(config)
    ops = check_ops(ops) or default_ops(pixel_values.device)
    if isinstance(model, LlavaNextForConditionalGeneration):
        features, indices, counts, kept, full = _next_features(model, pixel_values, image_sizes, config, ops)
    else:
        features, indices, counts, kept, full = _llava_features(model, pixel_values, config, ops)
    sequence = prune_sequence(input_ids, attention_mask, model.config.image_token_id, full, kept, pad_id_of(model.config))
    if config.positions == "original":  # the layout ablation: kept tokens keep their unpruned position ids
        offsets = kept_offsets(model, indices, counts, image_sizes)
        sequence = replace(sequence, position_ids=original_position_ids(sequence, attention_mask, kept, offsets))
    return PrunedInputs(
        inputs_embeds=sequence.embeds(model.get_input_embeddings(), features),
        attention_mask=sequence.attention_mask,
        position_ids=sequence.position_ids,
        features=features,
        indices=indices,
        counts=counts,
        kept_tokens=kept,
        full_tokens=full,
        sequence=sequence,
    )


class HIVTPModel:
    """A LLaVA model whose `forward` and `generate` see pruned visual tokens.

    Every other attribute is the wrapped model's, so code written for the stock model (lmms-eval's
    `llava_hf`, HF pipelines' `.config`, `.device`, `.eval()`) keeps working.
    """

    def __init__(self, model: Any, config: HIVTPConfig, ops: PruneOps | None = None) -> None:
        check_model(model)
        self.model = model
        self.hivtp_config = check_config(config)
        self.ops = check_ops(ops)  # None: the Triton kernels on CUDA, the reference elsewhere
        self.last_pruned: PrunedInputs | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def prune(self, input_ids, attention_mask, pixel_values, image_sizes=None) -> PrunedInputs:
        self.last_pruned = prune_inputs(
            self.model, input_ids, attention_mask, pixel_values, image_sizes, self.hivtp_config, self.ops
        )
        return self.last_pruned

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, image_sizes=None, labels=None, **kwargs):
        if pixel_values is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        if kwargs.get("position_ids") is not None or kwargs.get("inputs_embeds") is not None:
            raise ValueError("position_ids / inputs_embeds are rebuilt after pruning: pass input_ids and attention_mask only")
        pruned = self.prune(input_ids, attention_mask, pixel_values, image_sizes)
        if labels is not None:
            labels = pruned.sequence.shrink(labels, fill=-100)
        return self.model(
            inputs_embeds=pruned.inputs_embeds,
            attention_mask=pruned.attention_mask,
            position_ids=pruned.position_ids,
            labels=labels,
            **kwargs,
        )

    __call__ = forward

    def generate(self, input_ids=None, pixel_values=None, attention_mask=None, image_sizes=None, **kwargs):
        """Like the stock `generate`: returns cat(original input_ids, new tokens)."""
        if pixel_values is None:
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if self.hivtp_config.positions != "renumbered":  # HF generate numbers inputs_embeds 0, 1, 2, ...
            raise ValueError("positions='original' works in forward and the torch backend, not in HF generate")
        pruned = self.prune(input_ids, attention_mask, pixel_values, image_sizes)
        out = self.model.generate(inputs_embeds=pruned.inputs_embeds, attention_mask=pruned.attention_mask, **kwargs)
        if isinstance(out, torch.Tensor):
            return torch.cat([input_ids, out], dim=1)
        out.sequences = torch.cat([input_ids, out.sequences], dim=1)
        return out


def apply(model: Any, config: HIVTPConfig | None = None, ops: PruneOps | None = None) -> HIVTPModel:
    """Wrap a HF LLaVA-1.5 / LLaVA-NeXT model with HIVTP pruning (paper defaults when config is None)."""
    return HIVTPModel(model, HIVTPConfig() if config is None else config, ops)
