"""Sequence layout after pruning: shorter image runs, re-padded on the left. Pure torch.

The processor expanded each `<image>` into the full feature count and the LLM checks that count,
so pruning must shrink the *sequence*: image run m keeps its first kept_lengths[m] positions, the
rest disappear, and rows are re-packed. Every backend (HF torch, TensorRT-LLM) builds its input
from the same `PrunedSequence`, so they see identical sequences.

Legend: B rows, S original length, T pruned length, M images in the batch (all rows), D hidden.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from transformers.models.llava_next.modeling_llava_next import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
    unpad_image,
)


@dataclass(frozen=True)
class PrunedSequence:
    input_ids: torch.Tensor  # [B, T] original ids at kept positions (image token at image slots), pad elsewhere
    attention_mask: torch.Tensor  # [B, T] left padded
    position_ids: torch.Tensor  # [B, T] cumsum(mask) - 1, pads set to 1 (HF generate's rule)
    feature_rows: torch.Tensor  # [B, T] row into the concatenated kept image features, -1 for text and pads
    source_positions: torch.Tensor  # [B, T] position in the original row, -1 for pads

    def to(self, device: torch.device | str) -> "PrunedSequence":
        """The same layout on `device` (one copy per field)."""
        return PrunedSequence(*(getattr(self, f.name).to(device) for f in fields(self)))

    def shrink(self, values: torch.Tensor, fill: int) -> torch.Tensor:
        """Carry a per-position tensor [B, S] (e.g. labels) over to the pruned layout -> [B, T]."""
        picked = values.gather(1, self.source_positions.clamp(min=0))
        return picked.masked_fill(self.source_positions < 0, fill)

    def embeds(self, token_embedding: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, T, D]: token embeddings for text, kept features [sum k, D] at image slots."""
        is_image = self.feature_rows >= 0  # [B, T]
        text = token_embedding(self.input_ids.masked_fill(is_image, 0))  # [B, T, D]
        image = features[self.feature_rows.clamp(min=0)].to(text.dtype)  # [B, T, D]
        return torch.where(is_image[..., None], image, text)


def hf_position_ids(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool mask (left padding) -> position ids as HF generate numbers them: 0, 1, ... over the
    real tokens, 1 on padding."""
    return (mask.long().cumsum(1) - 1).masked_fill(~mask, 1)


def original_position_ids(
    sequence: PrunedSequence, attention_mask: torch.Tensor | None, kept_lengths: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """Position ids [B, T] that give every kept token the id it had before pruning (the layout ablation).

    attention_mask: the unpruned [B, S] (None: no padding); kept_lengths [M]; offsets [sum k]: where each
    kept feature sat in its image's unpruned run (LLaVA: its patch index; NeXT: `layout_offsets`).
    """
    source = sequence.source_positions  # [B, T]
    if len(offsets):
        kept_lengths = kept_lengths.to(source.device)
        rows = sequence.feature_rows.clamp(min=0)  # [B, T]
        run_start = (kept_lengths.cumsum(0) - kept_lengths).repeat_interleave(kept_lengths)  # [sum k]
        # a kept token fills slot (row - run_start) of its run, which began at (source - slot)
        moved = source - (rows - run_start[rows]) + offsets.to(source.device)[rows]  # [B, T]
        source = torch.where(sequence.feature_rows >= 0, moved, source)
    if attention_mask is not None:  # left padding: HF generate's rule, cumsum(mask) - 1
        source = (attention_mask.long().cumsum(1) - 1).gather(1, source.clamp(min=0))
    return source.masked_fill(sequence.source_positions < 0, 1)


def pad_id_of(hf_config: Any) -> int:
    """The id that fills left padding: the text config's pad token, else 0 (masked out either way)."""
    pad = hf_config.text_config.pad_token_id
    return pad if pad is not None else 0


def prune_sequence(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_token_id: int,
    full_lengths: torch.Tensor,
    kept_lengths: torch.Tensor,
    pad_token_id: int,
) -> PrunedSequence:
    """Shorten each image run to its kept count and re-pad on the left.

    input_ids, attention_mask: [B, S]; full_lengths, kept_lengths: [M] (images in row-major order of
    their runs). Kept features are expected concatenated image after image: [sum(kept_lengths), D].
    """
    B, S = input_ids.shape
    device = input_ids.device
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_image = (input_ids == image_token_id) & mask  # [B, S]
    full_lengths, kept_lengths = full_lengths.to(device), kept_lengths.to(device)
    full_end = full_lengths.cumsum(0)  # [M]
    kept_start = kept_lengths.cumsum(0) - kept_lengths  # [M]
    stream = is_image.flatten().cumsum(0).view(B, S) - 1  # [B, S]: index in the image-token stream
    image = torch.searchsorted(full_end, stream.clamp(min=0), right=True).clamp(max=len(full_end) - 1)  # [B, S]
    offset = stream - (full_end - full_lengths)[image]  # [B, S]: position inside its run
    keep_image = is_image & (offset < kept_lengths[image])  # [B, S]
    keep = (mask & ~is_image) | keep_image  # [B, S]

    new_len = keep.sum(1)  # [B]
    # the one host read: the pruned length T sizes the outputs (and the check needs both counts)
    n_tokens, n_expected, T = torch.stack([is_image.sum(), full_lengths.sum().long(), new_len.max()]).tolist()
    if n_tokens != n_expected:
        raise ValueError(
            f"image tokens and image features do not match: tokens {n_tokens}, features {n_expected}"
        )
    dest = torch.where(keep, keep.cumsum(1) - 1 + (T - new_len)[:, None], torch.full_like(input_ids, T))  # [B, S]
    positions = torch.arange(S, device=device).expand(B, S)

    def scatter(values: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((B, T + 1), fill, dtype=values.dtype, device=device)  # slot T: sentinel
        return out.scatter(1, dest, values)[:, :T]  # [B, T]

    new_mask = torch.arange(T, device=device)[None, :] >= (T - new_len)[:, None]  # [B, T]
    position_ids = hf_position_ids(new_mask)  # [B, T]
    return PrunedSequence(
        input_ids=scatter(input_ids, pad_token_id),
        attention_mask=new_mask.long(),
        position_ids=position_ids,
        feature_rows=scatter(torch.where(keep_image, kept_start[image] + offset, -1), -1),
        source_positions=scatter(positions, -1),
    )


def next_image_layout(
    kept: torch.Tensor, grid: tuple[int, int], crop_grid: tuple[int, int], image_size: torch.Tensor
) -> torch.Tensor:
    """LLaVA-NeXT token order of one image after pruning, as crop-token ids (-1 = image_newline).

    kept: [n, P] bool per crop (crop 0 = the base image). The base image's kept tokens come first,
    in raster order. The other crops are arranged into one big grid exactly as HF's
    `pack_image_features` does (crop_grid = (rows, cols) of crops), HF's `unpad_image` removes the
    padding, and each unpadded row that keeps at least one token (or has none to keep) ends with one newline. With every
    token kept this is HF's layout, token for token. Returns [k] int64 ids in [0, n * P) or -1.
    """
    n, P = kept.shape
    h, w = grid
    device = kept.device
    base = torch.arange(P, device=device)[kept[0]]  # [k0]
    newline = torch.tensor([-1], device=device)
    if n == 1:
        return torch.cat([base, newline]) if len(base) else base
    rows, cols = crop_grid
    ids = torch.arange(P, n * P, device=device).view(rows, cols, h, w).permute(0, 2, 1, 3).reshape(rows * h, cols * w)
    ids = unpad_image(ids[None], image_size)[0]  # [H', W']
    keep = kept.flatten()[ids]  # [H', W']
    ids = torch.cat([ids, newline.expand(ids.shape[0], 1)], dim=1)  # [H', W' + 1]
    # a row's newline stays if the row keeps a token; HF gives every row one, so with nothing pruned the
    # layout is HF's, zero-width rows included (extreme aspect ratios unpad a whole grid to width 0)
    keep = torch.cat([keep, keep.any(dim=1, keepdim=True) | (keep.shape[1] == 0)], dim=1)  # [H', W' + 1]
    return torch.cat([base, ids[keep]])


def crops_per_image(image_sizes: torch.Tensor, pinpoints: list, crop_side: int) -> list[int]:
    """Real crops of each LLaVA-NeXT image (base image included); the processor pads to the batch maximum."""
    return [int(image_size_to_num_patches(size, pinpoints, crop_side)) for size in image_sizes]


def flatten_crops(pixel_values: torch.Tensor, num_crops: list[int]) -> torch.Tensor:
    """[M, max crops, 3, H, W] (padded to the batch maximum) -> [C, 3, H, W], the real crops image after image."""
    if pixel_values.dim() == 4:
        return pixel_values
    return torch.cat([pv[:n] for pv, n in zip(pixel_values, num_crops)])


def split_kept(selected: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per-image selections -> kept features image after image: [M, Kmax, D], counts [M] -> [sum counts, D]."""
    M, kmax, _ = selected.shape
    lengths = counts.tolist()  # the one host read: the output's size depends on the counts
    if counts.shape != (M,) or not all(0 <= n <= kmax for n in lengths):
        raise ValueError(f"counts must be [M] in [0, {kmax}] for {M} images, got {lengths}")
    return torch.cat([selected[m, :n] for m, n in enumerate(lengths)])  # [sum counts, D]


def kept_mask(indices: torch.Tensor, patches: int) -> torch.Tensor:
    """[C, Kmax] kept patch indices (ascending, -1 padded) -> [C, P] bool."""
    kept = torch.zeros(indices.shape[0], patches + 1, dtype=torch.bool, device=indices.device)
    return kept.scatter(1, indices.masked_fill(indices < 0, patches), True)[:, :patches]  # column P: sentinel


def next_layouts(
    kept: torch.Tensor, image_sizes: torch.Tensor, pinpoints: list, crop_side: int, grid: tuple[int, int]
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Per LLaVA-NeXT image: (its first crop, kept layout ids [k], unpruned layout ids [f]) (`next_image_layout`)."""
    start = 0
    for size, n in zip(image_sizes, crops_per_image(image_sizes, pinpoints, crop_side)):
        crop_grid = get_anyres_image_grid_shape(size, pinpoints, crop_side) if n > 1 else (0, 0)
        mine = kept[start : start + n]  # [n, P]
        yield start, next_image_layout(mine, grid, crop_grid, size), next_image_layout(torch.ones_like(mine), grid, crop_grid, size)
        start += n


def layout_offsets(ids: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """Where each token of a kept layout [k] sat in the unpruned one [f] (ids as `next_image_layout`'s) -> [k].

    A kept newline closes the row of the token before it (a row keeps its newline only with a token)."""
    is_token = full >= 0
    where = torch.zeros(int(full.max()) + 1 if is_token.any() else 1, dtype=torch.int64, device=full.device)
    where[full[is_token]] = is_token.nonzero().squeeze(1)  # crop-token id -> offset in the unpruned run
    offsets = where[ids.clamp(min=0)]  # [k], newlines fixed below
    newlines = (ids < 0).nonzero().squeeze(1)  # [r] slots of kept newlines, each after a token
    row_ends = (~is_token).nonzero().squeeze(1)  # [R] offsets of every newline in the unpruned run
    offsets[newlines] = row_ends[torch.searchsorted(row_ends, offsets[newlines - 1])]
    return offsets


def next_features(
    projected: torch.Tensor,
    indices: torch.Tensor,
    newline: torch.Tensor,
    image_sizes: torch.Tensor,
    pinpoints: list,
    crop_side: int,
    grid: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LLaVA-NeXT features in HF's order from per-crop selections; shared by every backend.

    projected: [C, Kmax, D] kept, projected features of all real crops, image after image;
    indices: [C, Kmax] their patch indices (ascending, -1 padded); newline: [D].
    Returns (features [sum k, D], kept tokens per image [M], tokens per image without pruning [M]).
    """
    C, Kmax, D = projected.shape
    P = grid[0] * grid[1]
    device = projected.device
    indices = indices.to(device, torch.int64)
    if C != sum(crops_per_image(image_sizes, pinpoints, crop_side)):
        raise ValueError(f"{C} crops selected, but the images have {crops_per_image(image_sizes, pinpoints, crop_side)} crops")
    kept = kept_mask(indices, P)  # [C, P]
    # indices ascend, so patch p of crop c sits in slot (kept patches of c before p): its row below
    rows = (kept.cumsum(1) - 1 + torch.arange(C, device=device)[:, None] * Kmax).flatten()  # [C * P]
    table = torch.cat([projected.reshape(C * Kmax, D), newline[None].to(projected)])  # [C * Kmax + 1, D]
    pieces, kept_tokens, full_tokens = [], [], []
    for start, ids, full in next_layouts(kept, image_sizes, pinpoints, crop_side, grid):  # ids: crop token ids, -1 newline
        pieces.append(table[torch.where(ids >= 0, rows[start * P + ids.clamp(min=0)], C * Kmax)])  # [k, D]
        kept_tokens.append(len(ids))
        full_tokens.append(len(full))
    counts = torch.tensor([kept_tokens, full_tokens], dtype=torch.int64, device=device)
    return torch.cat(pieces), counts[0], counts[1]
