"""Importance scores from the score layers' Q and K: Triton kernel + launcher.

Motivation: `reference.importance_scores_from_qk` streams column blocks and so computes Q K^T twice
(row statistics, then normalised column sums). CLIP towers have N <= 1024 tokens, so one program can
hold a row block's whole logits row [BLOCK_M, BLOCK_N] in registers: Q K^T is computed once and the
softmax is exact. Every (row block, layer, head) is its own program (grid (M, L * H, B)), so even
batch 1 fills the GPU (37 * 48 programs for ViT-L/14-336 instead of 37).
Traffic: reads L * B * H * N * d elements of Q (once) and of K (once per row block, from L2), writes
and reads back B * L * H * M * N fp32 partials, writes B * P scores. FLOPs: 2 * L * B * H * N^2 * d.

Deterministic by construction: no atomics. `score_kernel` writes one partial column-sum row per
(image, layer, head, row block), at row (layer * H + head) * M + row block of the image's
[L * H * M, N] slice; `score_reduce_kernel` adds the R = L * H * M rows of an image in a fixed order
(BLOCK_R-row tiles in row order, summed elementwise, then one fixed tree over the BLOCK_R lanes),
divides by L * H * N and drops the CLS column.

Legend (reference.py): B batch, L score layers, H heads, d head dim, N = 1 + P tokens, P patches,
M = cdiv(N, BLOCK_M) row blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_TOKENS = 1024  # a row block's full logits row must fit one program's registers
BLOCK_D = 16  # head-dim slice per tl.dot: keeps the [BLOCK_D, BLOCK_N] K tile in shared memory on sm_80
BLOCK_M = 16  # query rows per program: the smallest tl.dot tile, so [BLOCK_M, 1024] fp32 logits fit registers
BLOCK_REDUCE = 64  # patches per program of the reduction
BLOCK_R = 64  # partial rows per step of the reduction: 32 independent loads per thread in flight
NUM_WARPS = 8  # 64 fp32 logits per thread at BLOCK_N = 1024
REDUCE_WARPS = 4  # a [BLOCK_R, BLOCK_REDUCE] tile is 32 fp32 per thread
# Accuracy promise vs reference.importance_scores_from_qk on the same inputs (upcast to fp32 there).
# Products of 16-bit inputs are exact in fp32, but tensor-core adder trees round differently from
# the reference's fp32 matmul, so 16-bit inputs get 5x the fp32 bound.
SCORE_RTOL = {torch.float32: 1e-5, torch.float16: 5e-5, torch.bfloat16: 5e-5}


@triton.jit
def score_kernel(
    q_ptr, k_ptr, partial_ptr,  # q, k: [L, B, H, N, d] (d contiguous); partial: [B, L * H * M, N] fp32
    L, H, N, scale,  # scale = d^-0.5, applied to the logits as in the reference
    stride_ql, stride_qb, stride_qh, stride_qn,
    stride_kl, stride_kb, stride_kh, stride_kn,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per (row block, layer * H + head, image): column sums of softmax(Q K^T * scale) over its rows."""
    tl.static_assert(HEAD_DIM % BLOCK_D == 0)
    pid_m = tl.program_id(0)
    lh = tl.program_id(1)  # layer * H + head
    b = tl.program_id(2)
    layer = lh // H
    head = lh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N]; BLOCK_N may be > N: padded columns
    offs_d = tl.arange(0, BLOCK_D)  # [BLOCK_D]
    row_ok = offs_m < N  # padded rows contribute nothing
    col_ok = offs_n < N  # padded columns get -inf logits
    q_base = q_ptr + layer * stride_ql + b * stride_qb + head * stride_qh
    k_base = k_ptr + layer * stride_kl + b * stride_kb + head * stride_kh
    logits = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # [BLOCK_M, BLOCK_N]
    for d0 in tl.static_range(0, HEAD_DIM, BLOCK_D):
        q = tl.load(q_base + offs_m[:, None] * stride_qn + (d0 + offs_d)[None, :],
                    mask=row_ok[:, None], other=0.0)  # [BLOCK_M, BLOCK_D]
        kt = tl.load(k_base + offs_n[None, :] * stride_kn + (d0 + offs_d)[:, None],
                     mask=col_ok[None, :], other=0.0)  # [BLOCK_D, BLOCK_N]
        logits = tl.dot(q, kt, logits, input_precision="ieee")  # fp32 inputs: no TF32
    logits = tl.where(col_ok[None, :], logits * scale, float("-inf"))  # [BLOCK_M, BLOCK_N]
    probs = tl.exp(logits - tl.max(logits, axis=1)[:, None])  # [BLOCK_M, BLOCK_N]
    probs = probs / tl.sum(probs, axis=1)[:, None]  # exact softmax: the whole row is here
    received = tl.sum(tl.where(row_ok[:, None], probs, 0.0), axis=0)  # [BLOCK_N]
    num_m = tl.num_programs(0)
    rows = L * H * num_m  # partial rows per image
    tl.store(partial_ptr + (b * rows + lh * num_m + pid_m) * N + offs_n, received, mask=col_ok)


@triton.jit
def score_reduce_kernel(
    partial_ptr, out_ptr,  # partial: [B, R, N] fp32; out: [B, P] fp32
    R, N, count,  # R = L * H * M partial rows per image; count = L * H * N, the reference's divisor
    BLOCK: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """One program per (patch block, image): sum the R partials in a fixed order, drop CLS."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    offs_p = pid * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] patch indices
    offs_r = tl.arange(0, BLOCK_R)  # [BLOCK_R]
    ok = offs_p < N - 1
    acc = tl.zeros([BLOCK_R, BLOCK], dtype=tl.float32)  # [BLOCK_R, BLOCK]: lane r sums rows r, r + BLOCK_R, ...
    for r0 in range(0, R, BLOCK_R):
        rows = r0 + offs_r  # [BLOCK_R]
        acc += tl.load(partial_ptr + (b * R + rows)[:, None] * N + 1 + offs_p[None, :],
                       mask=(rows < R)[:, None] & ok[None, :], other=0.0)
    total = tl.sum(acc, axis=0)  # [BLOCK]
    tl.store(out_ptr + b * (N - 1) + offs_p, total / count, mask=ok)


def score_block_n(num_tokens: int) -> int:
    """BLOCK_N for `num_tokens` (the whole row, padded): the AOT variants use the same choice."""
    return max(triton.next_power_of_2(num_tokens), 16)


def score(queries: torch.Tensor, keys: torch.Tensor, block_m: int = BLOCK_M) -> torch.Tensor:
    """queries, keys: [L, B, H, N, d] fp16/bf16/fp32 -> scores [B, P] fp32 (see reference.importance_scores_from_qk)."""
    # shape constraints
    assert queries.dim() == 5, f"queries must be [L, B, H, N, d], got shape {tuple(queries.shape)}"
    assert keys.shape == queries.shape, f"keys {tuple(keys.shape)} must match queries {tuple(queries.shape)}"
    assert queries.dtype == keys.dtype, f"queries {queries.dtype} and keys {keys.dtype} must share a dtype"
    assert queries.dtype in SCORE_RTOL, f"queries must be fp16/bf16/fp32, got {queries.dtype}"
    L, B, H, N, d = queries.shape
    assert 2 <= N <= MAX_TOKENS, f"need 2 <= N <= {MAX_TOKENS} tokens (CLS + patches), got N={N}"
    assert d % BLOCK_D == 0, f"head dim must be a multiple of {BLOCK_D}, got d={d}"
    assert queries.stride(-1) == 1 and keys.stride(-1) == 1, "the head dim of queries and keys must be contiguous"
    assert block_m >= 16 and block_m & (block_m - 1) == 0, f"block_m must be a power of two >= 16, got {block_m}"
    for t in (queries, keys):
        reach = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
        assert 0 <= reach < 2**31, f"element offsets up to {reach} overflow the kernel's int32 offsets"

    M = triton.cdiv(N, block_m)
    R = L * H * M  # partial rows per image: one per (layer, head, row block)
    assert B * R * N < 2**31, f"{B * R * N} partials overflow the kernel's int32 offsets"
    partial = torch.empty(B, R, N, dtype=torch.float32, device=queries.device)  # [B, L * H * M, N]
    score_kernel[(M, L * H, B)](
        queries, keys, partial, L, H, N, d**-0.5,
        *queries.stride()[:4], *keys.stride()[:4],
        HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=score_block_n(N), BLOCK_D=BLOCK_D, num_warps=NUM_WARPS, num_stages=1,
    )
    out = torch.empty(B, N - 1, dtype=torch.float32, device=queries.device)  # [B, P]
    score_reduce_kernel[(triton.cdiv(N - 1, BLOCK_REDUCE), B)](
        partial, out, R, N, float(L * H * N), BLOCK=BLOCK_REDUCE, BLOCK_R=BLOCK_R, num_warps=REDUCE_WARPS,
    )
    return out
