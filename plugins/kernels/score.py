"""Importance scores from the score layers' Q and K: Triton kernel + launcher.

Motivation: the score is a column sum of softmax(Q K^T * scale), the attention map itself never
needed. `score_kernel` computes it flash-attention style: one program holds BLOCK_M query rows of
one (image, layer, head) and sweeps the keys in BLOCK_N-column tiles, each tile one tensor-core
`tl.dot`. A column sum needs each row's normaliser, known only after the row's last tile, so the
program sweeps twice: pass 1 keeps every row's running max and sum of exps (online softmax, base 2),
pass 2 recomputes each tile, normalises it exactly and adds its rows into BLOCK_N column sums.
Holding whole rows instead (one pass) would cap BLOCK_M at 16 rows of N padded to a power of two
(1024 for 577 tokens: 44% padding) and keep the tensor cores mostly idle.
The CLS column only normalises (its score is dropped), so the column tiles cover the patches
1..P and the CLS logit enters each row's statistics as a dot product of its own: 576 patches are
exactly 9 tiles of 64, no padded column.
FLOPs: 2 passes * 2 * L*B*H*N*P*d (+ the CLS column); exps: 2 * L*B*H*N*P. Traffic: Q read once,
K twice per row block (from L2), B * L*H*M * P fp32 partials written and read back, B * P scores.

Deterministic by construction: no atomics. Each program writes its BLOCK_N-wide column sums into its
own partial row, (layer * H + head) * M + row block, of the image's [L * H * M, P] slice;
`score_reduce_kernel` adds the R = L * H * M rows of an image in a fixed order (BLOCK_R-row tiles in
row order, summed elementwise, then one fixed tree over the BLOCK_R lanes) and divides by L * H * N.

Legend (reference.py): B batch, L score layers, H heads, d head dim, N = 1 + P tokens, P patches,
M = cdiv(N, BLOCK_M) row blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hivtp.plugins.kernels.select import MAX_PATCHES

MAX_TOKENS = MAX_PATCHES + 1  # CLS + select's patches: the kernel itself streams any N (int32 offsets are checked)
BLOCK_M = 64  # query rows per program: one Hopper warpgroup MMA (m64) / four sm_80 m16 tiles
BLOCK_N = 64  # key columns per tile: 576 patches = 9 tiles
BLOCK_REDUCE = 32  # patches per program of the reduction: 18 programs per image at P = 576
BLOCK_R = 64  # partial rows per step of the reduction: 16 independent loads per thread in flight
# Warps per program by element type: a [64, 64] fp32 logits tile is 32 values per thread at 4 warps;
# fp32 inputs multiply on the FMA units (no TF32) and spill registers at 4 warps (ptxas -v, sm_80 / sm_90a).
NUM_WARPS = {"fp16": 4, "bf16": 4, "fp32": 8}
ELEMENT = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
NUM_STAGES = 2  # software-pipelined K tiles: the next tile loads while this one is in the MMA
REDUCE_WARPS = 4  # a [BLOCK_R, BLOCK_REDUCE] tile is 16 fp32 per thread
LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E): the scale and this fold into one multiply
# Accuracy promise vs reference.importance_scores_from_qk on the same inputs (upcast to fp32 there).
# Products of 16-bit inputs are exact in fp32, but tensor-core adder trees round differently from
# the reference's fp32 matmul, so 16-bit inputs get 5x the fp32 bound.
SCORE_RTOL = {torch.float32: 1e-5, torch.float16: 5e-5, torch.bfloat16: 5e-5}


@triton.jit
def score_kernel(
    q_ptr, k_ptr, partial_ptr,  # q, k: [L, B, H, N, d] (d contiguous); partial: [B, L * H * M, P] fp32
    L, H, N, scale,  # scale = d^-0.5, applied to the logits as in the reference
    stride_ql, stride_qb, stride_qh, stride_qn,
    stride_kl, stride_kb, stride_kh, stride_kn,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per (row block, layer * H + head, image): column sums of softmax(Q K^T * scale) over its rows."""
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    pid_m = tl.program_id(0)
    lh = tl.program_id(1)  # layer * H + head
    b = tl.program_id(2)
    layer = lh // H
    head = lh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query rows (tokens, CLS = 0)
    offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N] patch offsets inside a key tile
    offs_d = tl.arange(0, BLOCK_D)  # [BLOCK_D]; BLOCK_D may be > HEAD_DIM: zero-padded
    row_ok = offs_m < N
    d_ok = offs_d < HEAD_DIM
    q_base = q_ptr + layer * stride_ql + b * stride_qb + head * stride_qh
    k_base = k_ptr + layer * stride_kl + b * stride_kb + head * stride_kh
    q = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
    k_cls = tl.load(k_base + offs_d, mask=d_ok, other=0.0).to(tl.float32)  # [BLOCK_D]: key of token 0
    qk_scale = scale * LOG2E  # logits in base 2
    # pass 1: per row, max and sum of exp2 over all N logits; the CLS column starts both
    row_max = tl.sum(q.to(tl.float32) * k_cls[None, :], axis=1) * qk_scale  # [BLOCK_M]
    row_sum = tl.full([BLOCK_M], 1.0, tl.float32)  # exp2(cls - row_max) = 1
    for n0 in range(1, N, BLOCK_N):
        cols = n0 + offs_n  # [BLOCK_N] token indices of this tile's patches
        col_ok = cols < N
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None],
                     mask=col_ok[None, :] & d_ok[:, None], other=0.0)  # [BLOCK_D, BLOCK_N]
        logits = tl.dot(q, kt, input_precision="ieee") * qk_scale  # [BLOCK_M, BLOCK_N]; fp32 inputs: no TF32
        logits = tl.where(col_ok[None, :], logits, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(logits, axis=1))  # [BLOCK_M]
        row_sum = row_sum * tl.exp2(row_max - new_max) + tl.sum(tl.exp2(logits - new_max[:, None]), axis=1)
        row_max = new_max
    inv_sum = 1.0 / row_sum  # [BLOCK_M]
    # pass 2: exact probabilities tile by tile, summed over this block's rows
    rows = L * H * tl.num_programs(0)  # partial rows per image
    out_row = partial_ptr + (b * rows + lh * tl.num_programs(0) + pid_m) * (N - 1)
    for n0 in range(1, N, BLOCK_N):
        cols = n0 + offs_n  # [BLOCK_N]
        col_ok = cols < N
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None],
                     mask=col_ok[None, :] & d_ok[:, None], other=0.0)  # [BLOCK_D, BLOCK_N]
        logits = tl.dot(q, kt, input_precision="ieee") * qk_scale  # [BLOCK_M, BLOCK_N]
        probs = tl.exp2(logits - row_max[:, None]) * inv_sum[:, None]  # [BLOCK_M, BLOCK_N]
        received = tl.sum(tl.where(row_ok[:, None], probs, 0.0), axis=0)  # [BLOCK_N]
        tl.store(out_row + cols - 1, received, mask=col_ok)


@triton.jit
def score_reduce_kernel(
    partial_ptr, out_ptr,  # partial: [B, R, P] fp32; out: [B, P] fp32
    R, N, count,  # R = L * H * M partial rows per image; count = L * H * N, the reference's divisor
    BLOCK: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """One program per (patch block, image): sum the R partials in a fixed order."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    P = N - 1
    offs_p = pid * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] patch indices
    offs_r = tl.arange(0, BLOCK_R)  # [BLOCK_R]
    ok = offs_p < P
    acc = tl.zeros([BLOCK_R, BLOCK], dtype=tl.float32)  # [BLOCK_R, BLOCK]: lane r sums rows r, r + BLOCK_R, ...
    for r0 in range(0, R, BLOCK_R):
        rows = r0 + offs_r  # [BLOCK_R]
        acc += tl.load(partial_ptr + (b * R + rows)[:, None] * P + offs_p[None, :],
                       mask=(rows < R)[:, None] & ok[None, :], other=0.0)
    total = tl.sum(acc, axis=0)  # [BLOCK]
    tl.store(out_ptr + b * P + offs_p, total / count, mask=ok)


def score_block_d(head_dim: int) -> int:
    """BLOCK_D for a head dim (the next power of two, at least 16: tl.dot's smallest K); the AOT variants use the same."""
    return max(triton.next_power_of_2(head_dim), 16)


def score(queries: torch.Tensor, keys: torch.Tensor, block_m: int = BLOCK_M, block_n: int = BLOCK_N) -> torch.Tensor:
    """queries, keys: [L, B, H, N, d] fp16/bf16/fp32 -> scores [B, P] fp32 (see reference.importance_scores_from_qk)."""
    # shape constraints
    assert queries.dim() == 5, f"queries must be [L, B, H, N, d], got shape {tuple(queries.shape)}"
    assert keys.shape == queries.shape, f"keys {tuple(keys.shape)} must match queries {tuple(queries.shape)}"
    assert queries.dtype == keys.dtype, f"queries {queries.dtype} and keys {keys.dtype} must share a dtype"
    assert queries.dtype in SCORE_RTOL, f"queries must be fp16/bf16/fp32, got {queries.dtype}"
    L, B, H, N, d = queries.shape
    assert 2 <= N <= MAX_TOKENS, f"need 2 <= N <= {MAX_TOKENS} tokens (CLS + patches), got N={N}"
    assert d % 16 == 0, f"head dim must be a multiple of 16, got d={d}"
    assert queries.stride(-1) == 1 and keys.stride(-1) == 1, "the head dim of queries and keys must be contiguous"
    for block in (block_m, block_n):
        assert block >= 16 and block & (block - 1) == 0, f"block sizes must be powers of two >= 16, got {block}"
    for t in (queries, keys):
        reach = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
        assert 0 <= reach < 2**31, f"element offsets up to {reach} overflow the kernel's int32 offsets"

    M = triton.cdiv(N, block_m)
    R = L * H * M  # partial rows per image: one per (layer, head, row block)
    assert B * R * (N - 1) < 2**31, f"{B * R * (N - 1)} partials overflow the kernel's int32 offsets"
    partial = torch.empty(B, R, N - 1, dtype=torch.float32, device=queries.device)  # [B, L * H * M, P]
    score_kernel[(M, L * H, B)](
        queries, keys, partial, L, H, N, d**-0.5,
        *queries.stride()[:4], *keys.stride()[:4],
        HEAD_DIM=d, BLOCK_D=score_block_d(d), BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=NUM_WARPS[ELEMENT[queries.dtype]], num_stages=NUM_STAGES,
    )
    out = torch.empty(B, N - 1, dtype=torch.float32, device=queries.device)  # [B, P]
    score_reduce_kernel[(triton.cdiv(N - 1, BLOCK_REDUCE), B)](
        partial, out, R, N, float(L * H * N), BLOCK=BLOCK_REDUCE, BLOCK_R=BLOCK_R, num_warps=REDUCE_WARPS,
    )
    return out
