"""Hierarchical token selection (global + local stage, paper and budget mode): Triton kernels + launchers.

Motivation: `reference.select_tokens` is a dozen small torch ops (two stable sorts, argsorts,
scatter_reduce, cumsum) per call. `select_kernel` runs one program per image (or crop) that keeps
its P scores in registers and does all of it: B * P fp32 scores in, B * Kmax int64 indices and
stages out. `gather_kernel` then copies the kept feature rows, B * Kmax * D elements read and
written, spread over (slot block, column block, image) programs so that every SM has work.

The one total order (reference.rank_tokens) becomes a unique int64 key per token, smaller = better:
    bit 44      NaN flag (NaN after every number, -inf included)
    bits 12-43  the float's bits, canonical zero (-0.0 == +0.0), flipped so that higher scores are smaller
    bits 0-11   the token index (ties go to the lower index; so P <= 4096)
Bits 45 and up hold a group id (region, window, priority class), so one `tl.sort` orders by
group, then by rank; reading the sorted key at a static position (region_start + quota - 1,
window_start) gives each group's cut, and comparing keys against it replaces every scatter.

Legend (reference.py): B batch, P patches, Kmax static output width, D feature width, R regions,
W windows.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from hivtp.config import HIVTPConfig
from hivtp.plugins.geometry import selection_geometry

INDEX_BITS = tl.constexpr(12)  # low bits of the sort key: the token index
MAX_PATCHES = 1 << INDEX_BITS.value
NAN_KEY = tl.constexpr(1 << (INDEX_BITS.value + 32))  # the NaN bit, above the 32 float bits
GROUP_SHIFT = tl.constexpr(INDEX_BITS.value + 33)  # group ids live above the rank key
PAD_KEY = tl.constexpr(2**62 - 1)  # padded lanes sort after every real token in every group
BLOCK_K = 32  # output slots per gather program
BLOCK_D = 128  # feature columns per gather program: 256-512 contiguous bytes per row
GATHER_WARPS = 4  # 32 elements per thread
BITS_OF = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}  # gather copies bits


@triton.jit
def _rank_key(scores, offs):
    """fp32 scores [BLOCK_P] -> unique int64 keys [BLOCK_P] in the reference's total order (smaller = better)."""
    bits = scores.to(tl.int32, bitcast=True)
    bits = tl.where(bits == -2147483648, 0, bits)  # -0.0 -> +0.0, on the bits so no float rule can fold it
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    raw = bits.to(tl.int64) & 0xFFFFFFFF  # the 32 bits as an unsigned value
    ascending = tl.where(bits < 0, raw ^ 0xFFFFFFFF, raw | 0x80000000)  # monotone in the float value
    descending = 0xFFFFFFFF - ascending  # higher score -> smaller key
    return tl.where(is_nan, NAN_KEY, descending << INDEX_BITS) | offs.to(tl.int64)


@triton.jit
def _cut_keep(keys, cut_pos, has_cut):
    """keys [BLOCK_P] (unique), cut_pos [BLOCK_P]: is each key at or before sorted(keys)[cut_pos]?"""
    ordered = tl.sort(keys)  # [BLOCK_P]
    cut = tl.gather(ordered, tl.maximum(cut_pos, 0), axis=0)  # [BLOCK_P]
    return has_cut & (keys <= cut)


@triton.jit
def _store_compacted(idx_row, stage_row, kept, stage, offs, KMAX):
    """Kept tokens to slots 0.. in index order, -1 after them (reference._compact). Returns the count.

    Paper mode's KMAX (global quota + windows) can exceed P, hence the loop over the padding.
    """
    slot = tl.cumsum(kept.to(tl.int32), axis=0) - 1  # [BLOCK_P]
    count = tl.sum(kept.to(tl.int32), axis=0)
    tl.store(idx_row + slot, offs.to(tl.int64), mask=kept)
    tl.store(stage_row + slot, stage.to(tl.int64), mask=kept)
    none = tl.full(offs.shape, -1, tl.int64)  # [BLOCK_P]
    for k0 in range(0, KMAX, offs.shape[0]):
        pad = (k0 + offs >= count) & (k0 + offs < KMAX)
        tl.store(idx_row + k0 + offs, none, mask=pad)
        tl.store(stage_row + k0 + offs, none, mask=pad)
    return count


@triton.jit
def select_kernel(
    scores_ptr, region_of_ptr, region_start_ptr, region_quota_ptr, window_of_ptr, window_start_ptr,
    indices_ptr, counts_ptr, stages_ptr,
    # scores: [B, P] fp32; region_of, window_of: [P] int32; region_start, region_quota: [R] int32;
    # window_start: [W] int32; indices, stages: [B, Kmax] int64; counts: [B] int64
    P, KMAX, IS_BUDGET, stride_sb,
    BLOCK_P: tl.constexpr,
):
    """One program per image: the reference.select_tokens pipeline on one row of scores."""
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK_P)  # [BLOCK_P]; BLOCK_P may be > P: padded lanes
    valid = offs < P
    scores = tl.load(scores_ptr + b * stride_sb + offs, mask=valid, other=0.0)  # [BLOCK_P]
    key = _rank_key(scores, offs)  # [BLOCK_P]

    # global stage: each region's top `quota` tokens (cut at sorted position region_start + quota - 1)
    region = tl.load(region_of_ptr + offs, mask=valid, other=0)  # [BLOCK_P]
    quota = tl.load(region_quota_ptr + region, mask=valid, other=0)  # [BLOCK_P]
    start = tl.load(region_start_ptr + region, mask=valid, other=0)  # [BLOCK_P]
    region_key = tl.where(valid, (region.to(tl.int64) << GROUP_SHIFT) | key, PAD_KEY)  # [BLOCK_P]
    is_global = _cut_keep(region_key, start + quota - 1, valid & (quota > 0))  # [BLOCK_P]

    # local stage: each window's best non-global token; global ones sort after every candidate
    window = tl.load(window_of_ptr + offs, mask=valid, other=0)  # [BLOCK_P]
    first = tl.load(window_start_ptr + window, mask=valid, other=0)  # [BLOCK_P]
    window_key = (window.to(tl.int64) << (GROUP_SHIFT + 1)) | (is_global.to(tl.int64) << GROUP_SHIFT) | key
    window_key = tl.where(valid, window_key, PAD_KEY)  # [BLOCK_P]
    is_local = _cut_keep(window_key, first, valid & ~is_global)  # [BLOCK_P]
    stage = tl.where(is_global, 0, tl.where(is_local, 1, 2))  # [BLOCK_P]: STAGE_GLOBAL / _LOCAL / _FILL

    if IS_BUDGET:
        # the reference's priority key (class * P + rank): the first KMAX of (stage, rank) order
        priority = tl.where(valid, (stage.to(tl.int64) << GROUP_SHIFT) | key, PAD_KEY)  # [BLOCK_P]
        kept = _cut_keep(priority, tl.full(offs.shape, KMAX - 1, tl.int32), valid)  # [BLOCK_P]
    else:
        kept = is_global | is_local  # [BLOCK_P]

    count = _store_compacted(indices_ptr + b * KMAX, stages_ptr + b * KMAX, kept, stage, offs, KMAX)
    tl.store(counts_ptr + b, count.to(tl.int64))


@triton.jit
def gather_kernel(
    features_ptr, indices_ptr, gathered_ptr,  # features: [B, P, D]; indices: [B, Kmax] int64; gathered: [B, Kmax, D]
    D, KMAX, stride_fb, stride_fp,
    BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per (slot block, column block, image): gathered[b, k] = features[b, indices[b, k]], 0 where -1.

    A pure copy, so it moves raw bits (int16 for fp16/bf16, int32 for fp32): one variant per width.
    Separate from select_kernel: one program per image would leave most SMs idle for B * Kmax * D elements.
    """
    pid_k = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D]
    slot_ok = offs_k < KMAX
    d_ok = offs_d < D
    idx = tl.load(indices_ptr + b * KMAX + offs_k, mask=slot_ok, other=-1)  # [BLOCK_K]
    rows = tl.load(features_ptr + b * stride_fb + idx[:, None] * stride_fp + offs_d[None, :],
                   mask=(idx >= 0)[:, None] & d_ok[None, :], other=0)  # [BLOCK_K, BLOCK_D]
    out = gathered_ptr + (b * KMAX + offs_k).to(tl.int64)[:, None] * D + offs_d[None, :]  # [BLOCK_K, BLOCK_D]
    tl.store(out, rows, mask=slot_ok[:, None] & d_ok[None, :])


class KernelGeometry(NamedTuple):
    """selection_geometry as the kernel reads it: int32, plus each window's offset in window-major order."""

    region_of: torch.Tensor  # [P] int32
    region_start: torch.Tensor  # [R] int32
    region_quota: torch.Tensor  # [R] int32
    window_of: torch.Tensor  # [P] int32
    window_start: torch.Tensor  # [W] int32
    kmax: int


@lru_cache(maxsize=64)
def kernel_geometry(grid: tuple[int, int], config: HIVTPConfig, device: torch.device) -> KernelGeometry:
    """Built once per (grid, config, device), like selection_geometry; the TensorRT plugin stores the same buffers."""
    geo = selection_geometry(tuple(grid), config, device)
    sizes = torch.bincount(geo.window_of, minlength=geo.num_windows)  # [W]
    return KernelGeometry(
        region_of=geo.region_of.int(),
        region_start=geo.region_start.int(),
        region_quota=geo.region_quota.int(),
        window_of=geo.window_of.int(),
        window_start=(sizes.cumsum(0) - sizes).int(),
        kmax=geo.kmax,
    )


def select_block(num_patches: int) -> int:
    """BLOCK_P for `num_patches`: the AOT variants use the same choice."""
    return max(triton.next_power_of_2(num_patches), 16)


def select_warps(block_p: int) -> int:
    """Warps for a BLOCK_P-wide sort: 8 at 1024 lanes halves the registers and the unrolled code of 4."""
    return 8 if block_p >= 512 else 4


def select(
    scores: torch.Tensor,
    grid: tuple[int, int],
    config: HIVTPConfig,
    features: torch.Tensor | None = None,
    return_stages: bool = False,
) -> tuple[torch.Tensor, ...]:
    """scores [B, P] fp32 -> (indices [B, Kmax] int64 ascending then -1, counts [B] int64,
    [stages [B, Kmax] int64 if return_stages], [gathered [B, Kmax, D] zero-padded if features given]).

    Same indices as reference.select_tokens, bit for bit, in both modes.
    """
    # shape constraints
    assert scores.dim() == 2, f"scores must be [B, P], got shape {tuple(scores.shape)}"
    B, P = scores.shape
    assert P == grid[0] * grid[1], f"scores have P={P} patches, grid {grid[0]}x{grid[1]} has {grid[0] * grid[1]}"
    assert P <= MAX_PATCHES, f"at most {MAX_PATCHES} patches per image ({INDEX_BITS.value} index bits), got P={P}"
    assert scores.dtype == torch.float32, f"scores must be fp32 (score() output), got {scores.dtype}"
    assert scores.stride(1) == 1, f"scores must be contiguous along P, got strides {scores.stride()}"

    geo = kernel_geometry(tuple(grid), config, scores.device)
    indices = torch.empty(B, geo.kmax, dtype=torch.int64, device=scores.device)  # [B, Kmax]
    counts = torch.empty(B, dtype=torch.int64, device=scores.device)  # [B]
    stages = torch.empty(B, geo.kmax, dtype=torch.int64, device=scores.device)  # [B, Kmax]
    block_p = select_block(P)
    select_kernel[(B,)](
        scores, geo.region_of, geo.region_start, geo.region_quota, geo.window_of, geo.window_start,
        indices, counts, stages, P, geo.kmax, int(config.budget is not None), scores.stride(0),
        BLOCK_P=block_p, num_warps=select_warps(block_p),
    )
    outputs = (indices, counts) + ((stages,) if return_stages else ())
    return outputs if features is None else outputs + (gather(features, indices),)


def gather(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """features [B, P, D] fp16/bf16/fp32, indices [B, Kmax] int64 (-1 padded) -> [B, Kmax, D], zero rows at -1."""
    # shape constraints
    assert features.dim() == 3, f"features must be [B, P, D], got shape {tuple(features.shape)}"
    assert indices.dim() == 2 and indices.shape[0] == features.shape[0], (
        f"indices must be [B, Kmax] with B={features.shape[0]}, got shape {tuple(indices.shape)}")
    assert indices.dtype == torch.int64 and indices.is_contiguous(), "indices must be contiguous int64"
    assert features.dtype in BITS_OF, f"features must be fp16/bf16/fp32, got {features.dtype}"
    assert features.stride(2) == 1, f"features must be contiguous along D, got strides {features.stride()}"
    assert features.device == indices.device, f"features on {features.device}, indices on {indices.device}"

    B, _, D = features.shape
    kmax = indices.shape[1]
    gathered = features.new_empty(B, kmax, D)  # [B, Kmax, D]
    bits = BITS_OF[features.dtype]
    gather_kernel[(triton.cdiv(kmax, BLOCK_K), triton.cdiv(D, BLOCK_D), B)](
        features.view(bits), indices, gathered.view(bits), D, kmax, features.stride(0), features.stride(1),
        BLOCK_K=BLOCK_K, BLOCK_D=BLOCK_D, num_warps=GATHER_WARPS,
    )
    return gathered
