"""TensorRT-LLM prompt tables from the pruned layout, and the vision-engine outputs -> kept features. Pure torch.

TensorRT-LLM feeds visual features to the LLM as a *prompt table*: an input id >= vocab_size reads
row (id - vocab_size) of its request's table instead of the token embedding
(`PromptTuningEmbedding.forward`, NVIDIA/TensorRT-LLM tensorrt_llm/layers/embedding.py @0f02b7af, as
quoted in shared/notes/trtllm-1.2-callmap.md; the C++ executor copies each request's table into its own
slot, batch_manager/promptTuningBuffers.cpp @2868d794). Through the executor
(`ModelRunnerCpp`) every request has its own table, so every request's fake ids start again at
vocab_size (callmap trap 2); 1.2.1's `MultimodalModelRunner` gives the whole batch one token count,
which HIVTP breaks (each image keeps its own number of tokens), so this module builds the ids and
tables per request from the same `PrunedSequence` the torch backend embeds.

Legend: B requests, T pruned (left-padded) length, L_b unpadded length of request b, k_b kept visual
tokens of request b (all its images), R = max_b k_b, D text hidden, C crops (LLaVA-NeXT), Kmax
selection slots, P patches per crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, image_size_to_num_patches

from hivtp.runtime.backend import VisionResult
from hivtp.runtime.layout import PrunedSequence, next_image_layout, prune_sequence

# pixel_values [n, 3, H, W] -> selected [n, Kmax, D], counts [n], indices [n, Kmax]: the vision engine's contract
VisionFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class RequestPrompts:
    """Per-request, unpadded TensorRT-LLM inputs."""

    input_ids: list[torch.Tensor]  # B x [L_b] int64: text ids, vocab_size + j at the j-th visual slot
    tables: list[torch.Tensor]  # B x [rows >= k_b, D]: request b's kept features in slot order (then padding)

    def stacked_table(self, dtype: torch.dtype) -> torch.Tensor:
        """[B, R, D] for `ModelRunnerCpp.generate(prompt_table=...)`: rows are shared by all tasks there, so
        shorter tables are zero-padded to R (padded rows are never read: no id points at them)."""
        rows = max(1, max(t.shape[0] for t in self.tables))
        D = self.tables[0].shape[1]
        out = torch.zeros(len(self.tables), rows, D, dtype=dtype, device=self.tables[0].device)  # [B, R, D]
        for b, table in enumerate(self.tables):
            out[b, : table.shape[0]] = table.to(dtype)
        return out

    @property
    def prompt_tasks(self) -> str:
        """Request b uses table b: the comma-separated task ids `generate(prompt_tasks=...)` expects."""
        return ",".join(str(b) for b in range(len(self.tables)))


def build_prompt_tables(sequence: PrunedSequence, features: torch.Tensor, vocab_size: int) -> RequestPrompts:
    """Fake ids and prompt tables, one request per row of the pruned layout; left padding dropped.

    features: [sum k, D] every image's kept features, image after image (what `sequence.feature_rows`
    indexes). Request b's j-th visual slot gets id vocab_size + j and table row j = that slot's feature.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [sum of kept tokens, D], got shape {tuple(features.shape)}")
    ids, tables = [], []
    for b in range(sequence.input_ids.shape[0]):
        valid = sequence.attention_mask[b].bool()  # [T]
        row_ids = sequence.input_ids[b][valid]  # [L_b]
        rows = sequence.feature_rows[b][valid]  # [L_b], -1 for text
        is_image = rows >= 0
        fake = vocab_size + torch.cumsum(is_image.long(), 0) - 1  # [L_b]: j-th visual slot -> vocab_size + j
        ids.append(torch.where(is_image, fake, row_ids.long()))
        tables.append(features[rows[is_image]])  # [k_b, D]
    return RequestPrompts(input_ids=ids, tables=tables)


def split_kept(selected: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Vision-engine outputs -> kept features image after image: [n, Kmax, D], counts [n] -> [sum counts, D]."""
    n, kmax, _ = selected.shape
    if counts.shape != (n,) or bool((counts < 0).any()) or bool((counts > kmax).any()):
        raise ValueError(f"counts must be [n] in [0, {kmax}] for {n} images, got {counts.tolist()}")
    valid = torch.arange(kmax, device=selected.device) < counts.to(selected.device).long()[:, None]  # [n, Kmax]
    return selected[valid]


def next_crop_plan(
    image_sizes: torch.Tensor, pinpoints: list, crop_side: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """LLaVA-NeXT crops per image (base included) and their (rows, cols) grid, as HF's processor made them."""
    num_crops = [int(image_size_to_num_patches(size, pinpoints, crop_side)) for size in image_sizes]
    grids = [
        tuple(int(x) for x in get_anyres_image_grid_shape(size, pinpoints, crop_side)) if n > 1 else (0, 0)
        for size, n in zip(image_sizes, num_crops)
    ]
    return num_crops, grids  # type: ignore[return-value]


def flatten_crops(pixel_values: torch.Tensor, num_crops: Sequence[int]) -> torch.Tensor:
    """[M, max crops, 3, H, W] (padded to the batch maximum) -> [C, 3, H, W], the real crops image after image."""
    if pixel_values.dim() == 4:
        return pixel_values
    return torch.cat([pv[:n] for pv, n in zip(pixel_values, num_crops)])


def next_kept_features(
    selected: torch.Tensor,
    indices: torch.Tensor,
    image_newline: torch.Tensor,
    grid: tuple[int, int],
    num_crops: Sequence[int],
    crop_grids: Sequence[tuple[int, int]],
    image_sizes: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LLaVA-NeXT: crops' selected features -> each image's kept tokens in HF's order (newlines included).

    selected: [C, Kmax, D] projected kept features per crop (slot s holds patch indices[c, s]);
    indices: [C, Kmax] ascending patch ids, -1 padded; crops image after image, base crop first;
    crop_grids[m]: (rows, cols) of image m's crops ((0, 0) for a single crop); image_sizes: [M, 2].
    The order comes from `next_image_layout`, the same function the torch backend uses.
    Returns (features [sum kept, D], kept_tokens [M], full_tokens [M]).
    """
    C, kmax, D = selected.shape
    P = grid[0] * grid[1]
    device = selected.device
    if sum(num_crops) != C or len(num_crops) != len(crop_grids) or len(num_crops) != len(image_sizes):
        raise ValueError(f"{C} crops from the engine, but the images have {list(num_crops)} crops")
    idx = indices.long().to(device)
    safe = idx.masked_fill(idx < 0, P)  # column P: sentinel for padded slots
    kept = torch.zeros(C, P + 1, dtype=torch.bool, device=device).scatter(1, safe, True)[:, :P]  # [C, P]
    slot = torch.zeros(C, P + 1, dtype=torch.int64, device=device)
    slot = slot.scatter(1, safe, torch.arange(kmax, device=device).expand(C, kmax))[:, :P]  # [C, P]
    rows = (slot + torch.arange(C, device=device)[:, None] * kmax).flatten()  # [C * P]: row in the table below
    table = torch.cat([selected.reshape(C * kmax, D), image_newline.reshape(1, D).to(selected)])  # newline last
    pieces, kept_tokens, full_tokens, start = [], [], [], 0
    for n, crop_grid, size in zip(num_crops, crop_grids, image_sizes):
        crops = kept[start : start + n]  # [n, P]
        ids = next_image_layout(crops, grid, crop_grid, size)  # [k]: crop-token ids, -1 = newline
        full = next_image_layout(torch.ones_like(crops), grid, crop_grid, size)
        pieces.append(table[torch.where(ids >= 0, rows[start * P + ids.clamp(min=0)], C * kmax)])
        kept_tokens.append(len(ids))
        full_tokens.append(len(full))
        start += n
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.int64, device=device)  # noqa: E731
    return torch.cat(pieces), as_tensor(kept_tokens), as_tensor(full_tokens)


def pruned_layout(
    inputs: dict[str, torch.Tensor], hf_config: Any, run_vision: VisionFn, image_newline: torch.Tensor | None
) -> VisionResult:
    """Processor outputs -> kept features and the pruned layout, given a function with the vision engine's contract.

    LLaVA-NeXT crops go through `run_vision` as one batch; the layout is the torch backend's
    (`next_kept_features` / `split_kept`, then `prune_sequence`), so both backends feed the LLM the same sequence.
    """
    side = hf_config.vision_config.image_size
    grid = (side // hf_config.vision_config.patch_size,) * 2
    if hf_config.model_type == "llava_next":
        if image_newline is None:
            raise ValueError("LLaVA-NeXT needs the image_newline row")
        num_crops, crop_grids = next_crop_plan(inputs["image_sizes"], hf_config.image_grid_pinpoints, side)
        selected, _, indices = run_vision(flatten_crops(inputs["pixel_values"], num_crops))  # [C, Kmax, D]
        features, kept, full = next_kept_features(
            selected, indices, image_newline, grid, num_crops, crop_grids, inputs["image_sizes"]
        )
    else:
        selected, counts, _ = run_vision(inputs["pixel_values"])  # [n, Kmax, D], [n]
        features, kept = split_kept(selected, counts), counts.long()
        full = torch.full_like(kept, grid[0] * grid[1])
    text = hf_config.text_config
    pad_id = text.pad_token_id if text.pad_token_id is not None else 0
    sequence = prune_sequence(
        inputs["input_ids"], inputs.get("attention_mask"), hf_config.image_token_id, full, kept, pad_id
    )
    return VisionResult(features=features, sequence=sequence, kept_tokens=kept, full_tokens=full)
