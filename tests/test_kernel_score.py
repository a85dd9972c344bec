"""score kernel vs reference.importance_scores_from_qk (CPU: TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch
import triton

from hivtp.plugins.kernels.score import BLOCK_M, BLOCK_N, MAX_TOKENS, SCORE_RTOL, score
from hivtp.plugins.reference import importance_scores_from_qk

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The interpreter runs each program in numpy: bigger tiles, same kernel code (2 row blocks, the second
# partial; 3 key tiles, the last partial). The default tiles run in test_awkward_shapes.
CLIP_BLOCKS = dict(block_m=BLOCK_M, block_n=BLOCK_N) if DEVICE == "cuda" else dict(block_m=512, block_n=256)


def qk(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Q and K [L, B, H, N, d] with logits of std ~4: peaked enough that the softmax is far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (2 * torch.randn(shape, generator=gen) for _ in range(2))
    return q.to(DEVICE, dtype), k.to(DEVICE, dtype)


def check(queries: torch.Tensor, keys: torch.Tensor, **launch) -> None:
    expected = importance_scores_from_qk(queries, keys)  # fp32 from the same (rounded) inputs
    got = score(queries, keys, **launch)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=SCORE_RTOL[queries.dtype], atol=0)


@torch.inference_mode()
def test_clip_vit_l_336_shape():
    """L=3 score layers, 16 heads, d=64, N=577 (24x24 + CLS), batch 2."""
    check(*qk((3, 2, 16, 577, 64), torch.float32, seed=0), **CLIP_BLOCKS)


# triton 3.5.1's CPU interpreter multiplies bf16 operands of tl.dot as raw 16-bit integers (~1e10
# results); the compiled kernel accumulates bf16 in fp32 like fp16, which the GPU check covers.
BF16 = pytest.param(
    torch.bfloat16,
    marks=pytest.mark.skipif(DEVICE == "cpu", reason=f"triton {triton.__version__}'s CPU interpreter: bf16 tl.dot is wrong "
                             "(seen with 3.5.1; the GPU check covers bf16)"),
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, BF16])
@pytest.mark.parametrize("shape", [(2, 3, 3, 37, 32), (1, 1, 4, 65, 16), (2, 1, 2, 2, 16), (1, 2, 2, 200, 64)])
@torch.inference_mode()
def test_awkward_shapes(shape: tuple[int, ...], dtype: torch.dtype):
    """N not a multiple of BLOCK_M nor a power of two (37), the tiny 8x8 tower (65, d=16), one patch (2),
    several row blocks and key tiles of the default size, the last of each partial (200)."""
    check(*qk(shape, dtype, seed=1))


@torch.inference_mode()
def test_strided_qk_from_fused_projection():
    """Q and K as views of one [L, B, N, 2, H, d] projection: explicit strides, not contiguous."""
    L, B, N, H, d = 2, 2, 50, 3, 32
    fused = qk((L, B, N, 2, H, d), torch.float32, seed=2)[0]
    queries, keys = (fused[:, :, :, i].permute(0, 1, 3, 2, 4) for i in range(2))  # [L, B, H, N, d]
    assert not queries.is_contiguous() and queries.stride(-1) == 1
    check(queries, keys)


@torch.inference_mode()
def test_deterministic():
    """No atomics: two launches give identical bits."""
    queries, keys = qk((2, 2, 3, 37, 32), torch.float32, seed=3)
    assert torch.equal(score(queries, keys), score(queries, keys))


@pytest.mark.parametrize(
    "queries, keys, message",
    [
        (torch.zeros(1, 1, 1, MAX_TOKENS + 1, 16), torch.zeros(1, 1, 1, MAX_TOKENS + 1, 16), f"N <= {MAX_TOKENS}"),
        (torch.zeros(1, 1, 1, 5, 24), torch.zeros(1, 1, 1, 5, 24), "multiple of 16"),
        (torch.zeros(1, 1, 1, 5, 16), torch.zeros(1, 1, 1, 6, 16), "must match"),
        (torch.zeros(1, 1, 5, 16), torch.zeros(1, 1, 5, 16), "must be \\[L, B, H, N, d\\]"),
        (torch.zeros(1, 1, 1, 5, 16, dtype=torch.float64),) * 2 + ("fp16/bf16/fp32",),
        (torch.zeros(1, 1, 1, 5, 32)[..., ::2], torch.zeros(1, 1, 1, 5, 16), "contiguous"),
    ],
)
def test_shape_constraints(queries: torch.Tensor, keys: torch.Tensor, message: str):
    with pytest.raises(AssertionError, match=message):
        score(queries, keys)
