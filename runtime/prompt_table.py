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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hivtp.runtime.backend import VisionResult
from hivtp.runtime.layout import (
    PrunedSequence,
    crops_per_image,
    flatten_crops,
    hf_position_ids,
    next_features,
    pad_id_of,
    prune_sequence,
    split_kept,
)

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


def pruned_layout(
    inputs: dict[str, torch.Tensor], hf_config: Any, run_vision: VisionFn, image_newline: torch.Tensor | None
) -> VisionResult:
    """Processor outputs -> kept features and the pruned layout, given a function with the vision engine's contract.

    LLaVA-NeXT crops go through `run_vision` as one batch; the layout is the torch backend's
    (`next_features` / `split_kept`, then `prune_sequence`), so both backends feed the LLM the same sequence.
    """
    side = hf_config.vision_config.image_size
    grid = (side // hf_config.vision_config.patch_size,) * 2
    if hf_config.model_type == "llava_next":
        if image_newline is None:
            raise ValueError("LLaVA-NeXT needs the image_newline row")
        pinpoints, sizes = hf_config.image_grid_pinpoints, inputs["image_sizes"]
        num_crops = crops_per_image(sizes, pinpoints, side)
        selected, _, indices = run_vision(flatten_crops(inputs["pixel_values"], num_crops))  # [C, Kmax, D]
        features, kept, full = next_features(selected, indices, image_newline, sizes, pinpoints, side, grid)
    else:
        selected, counts, _ = run_vision(inputs["pixel_values"])  # [n, Kmax, D], [n]
        features, kept = split_kept(selected, counts), counts.long()
        full = torch.full_like(kept, grid[0] * grid[1])
    sequence = prune_sequence(
        inputs["input_ids"], inputs.get("attention_mask"), hf_config.image_token_id, full, kept, pad_id_of(hf_config)
    )
    return VisionResult(features=features, sequence=sequence, kept_tokens=kept, full_tokens=full)


def prompt_sequence(
    input_ids: list[torch.Tensor], tables: list[torch.Tensor], vocab_size: int, pad_id: int
) -> tuple[PrunedSequence, torch.Tensor]:
    """Per-request fake ids and prompt tables -> one left-padded `PrunedSequence` and its features [sum k, D].

    The inverse of `build_prompt_tables`, for a torch LLM fed TensorRT-LLM's request tensors: id
    vocab_size + j of request b reads row j of tables[b] (`PromptTuningEmbedding`'s rule), every other
    id its token embedding, so `sequence.embeds(token_embedding, features)` is what the engine embeds.
    """
    B, T = len(input_ids), max(len(ids) for ids in input_ids)
    device = tables[0].device
    ids_out = torch.full((B, T), pad_id, dtype=torch.int64, device=device)  # [B, T]
    rows = torch.full((B, T), -1, dtype=torch.int64, device=device)  # [B, T]
    sources = torch.full((B, T), -1, dtype=torch.int64, device=device)  # [B, T]
    offset = 0
    for b, (ids, table) in enumerate(zip(input_ids, tables)):
        if bool(((ids < 0) | (ids >= vocab_size + table.shape[0])).any()):  # one read, where the ids are (a server: the host)
            raise ValueError(f"request {b}: ids must be >= 0 and fake ids below vocab_size + {table.shape[0]} table rows")
        ids = ids.to(device, torch.int64)  # [L_b]
        L, fake = len(ids), ids >= vocab_size
        ids_out[b, T - L :] = ids.masked_fill(fake, pad_id)
        rows[b, T - L :] = torch.where(fake, offset + ids - vocab_size, -1)
        sources[b, T - L :] = torch.arange(L, device=device)
        offset += table.shape[0]
    mask = sources >= 0  # [B, T]
    position_ids = hf_position_ids(mask)  # [B, T]
    sequence = PrunedSequence(ids_out, mask.long(), position_ids, rows, sources)
    return sequence, torch.cat(tables)
