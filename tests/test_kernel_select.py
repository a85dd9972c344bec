"""select / gather kernels vs reference.select_tokens / gather_kept: indices exact (CPU: TRITON_INTERPRET=1).

Tie rule (reference.rank_tokens): higher score first, NaN after everything (-inf included),
-0.0 == +0.0, equal scores to the lower index. Every case below mixes all of these in.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hivtp.config import HIVTPConfig
from hivtp.plugins.benchmarks.common import awkward_scores
from hivtp.plugins.kernels.select import gather, select
from hivtp.plugins.reference import gather_kept, select_tokens

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def check_select(scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig) -> None:
    expected = select_tokens(scores, grid, config, return_stages=True)
    got = select(scores, grid, config, return_stages=True)
    for name, g, e in zip(("indices", "counts", "stages"), got, expected):
        assert torch.equal(g, e), f"{name} differ for grid {grid}, {config}:\n{g}\n{e}"


CASES = [
    ((24, 24), HIVTPConfig(), 2),
    ((24, 24), HIVTPConfig(budget=64), 2),
    ((27, 27), HIVTPConfig(), 1),
    ((27, 27), HIVTPConfig(budget=150, regions=(3, 3)), 1),
    ((20, 30), HIVTPConfig(regions=(2, 3), window=3), 1),
    ((12, 20), HIVTPConfig(budget=40, regions=(2, 3)), 2),
    ((16, 16), HIVTPConfig(global_ratio=0.1, window=4), 2),
    ((8, 8), HIVTPConfig(), 3),
    ((8, 8), HIVTPConfig(budget=100), 1),  # budget > P: every patch kept
    ((5, 7), HIVTPConfig(budget=9, regions=(3, 2)), 2),
    ((1, 1), HIVTPConfig(), 1),
    ((1, 1), HIVTPConfig(budget=4), 1),
]


@pytest.mark.parametrize("grid, config, batch", CASES, ids=[f"{g[0]}x{g[1]}-{c.mode}-B{b}" for g, c, b in CASES])
@torch.inference_mode()
def test_select_matches_reference(grid: tuple[int, int], config: HIVTPConfig, batch: int):
    check_select(awkward_scores(batch, grid[0] * grid[1], seed=grid[0] * 31 + grid[1], device=DEVICE), grid, config)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 9), w=st.integers(1, 9), regions=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    window=st.integers(1, 4), ratio=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    budget=st.one_of(st.none(), st.integers(1, 90)), seed=st.integers(0, 2**16),
)
@torch.inference_mode()
def test_select_small_grids_property(h, w, regions, window, ratio, budget, seed):
    config = HIVTPConfig(regions=regions, window=window, global_ratio=ratio, budget=budget)
    check_select(awkward_scores(2, h * w, seed, device=DEVICE), (h, w), config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@torch.inference_mode()
def test_gathered_features_match_gather_kept(dtype: torch.dtype):
    """Features as a strided view (rows wider than D), D not a multiple of the gather block."""
    grid, config = (12, 20), HIVTPConfig(budget=50)
    scores = awkward_scores(2, 240, seed=5, device=DEVICE)
    wide = torch.randn(2, 240, 300, generator=torch.Generator().manual_seed(6)).to(DEVICE, dtype)
    features = wide[:, :, 7:207]  # [B, P, D=200], row stride 300
    indices, counts, gathered = select(scores, grid, config, features=features)
    expected_indices, _ = select_tokens(scores, grid, config)
    assert torch.equal(indices, expected_indices)
    assert torch.equal(gathered, gather_kept(features, expected_indices))


@torch.inference_mode()
def test_gather_zero_pads_paper_mode():
    """Paper mode keeps a variable count: slots past counts[b] must be zero rows.

    Scores falling with the index and global_ratio=0.5 make each region's top two rows global,
    so the windows there have no candidate and leave padding.
    """
    scores = -torch.arange(64, dtype=torch.float32, device=DEVICE).expand(2, 64).contiguous()  # [B, P]
    indices, counts = select(scores, (8, 8), HIVTPConfig(global_ratio=0.5))
    features = torch.randn(2, 64, 33, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    assert (indices == -1).any(), "the case should have padded slots"
    assert torch.equal(gather(features, indices), gather_kept(features, indices))


@pytest.mark.parametrize(
    "scores, grid, message",
    [
        (torch.zeros(1, 10), (3, 3), "grid 3x3"),
        (torch.zeros(1, 9, dtype=torch.float16), (3, 3), "fp32"),
        (torch.zeros(9), (3, 3), "\\[B, P\\]"),
        (torch.zeros(1, 65 * 64), (65, 64), "at most 4096"),
        (torch.zeros(1, 18)[:, ::2], (3, 3), "contiguous"),
    ],
)
def test_select_shape_constraints(scores: torch.Tensor, grid: tuple[int, int], message: str):
    with pytest.raises(AssertionError, match=message):
        select(scores, grid, HIVTPConfig())


def test_gather_shape_constraints():
    with pytest.raises(AssertionError, match="fp16/bf16/fp32"):
        gather(torch.zeros(1, 4, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.int64))
    with pytest.raises(AssertionError, match="int64"):
        gather(torch.zeros(1, 4, 2), torch.zeros(1, 2, dtype=torch.int32))
