"""select_tokens: golden cases from the authors' code, an independent per-image oracle, budgets, order."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hivtp import HIVTPConfig, select_tokens
from hivtp.plugins.geometry import selection_geometry, split_points
from hivtp.plugins.reference import STAGE_FILL, STAGE_GLOBAL, STAGE_LOCAL, rank_tokens

GOLDEN = json.loads((Path(__file__).parent / "data" / "hivtp_paper_selection.json").read_text())["cases"]


def order_key(scores: list[float], i: int) -> tuple[bool, float, int]:
    """The documented total order, written independently: NaN last, higher first, lower index on ties."""
    s = scores[i]
    return (math.isnan(s), 0.0 if math.isnan(s) else -s, i)


def naive_select(scores: list[float], grid: tuple[int, int], cfg: HIVTPConfig) -> list[int]:
    """Per-image loops straight from the method description (slow, obviously correct)."""
    h, w = grid
    rank = sorted(range(h * w), key=lambda i: order_key(scores, i))
    best = lambda cells: min(cells, key=rank.index)  # noqa: E731
    rows, cols = split_points(h, cfg.regions[0]), split_points(w, cfg.regions[1])
    regions = [(rows[a], rows[a + 1], cols[b], cols[b + 1]) for a in range(len(rows) - 1) for b in range(len(cols) - 1)]
    K = min(cfg.budget, h * w) if cfg.budget else None
    kept: set[int] = set()
    windows = []
    for r0, r1, c0, c1 in regions:
        cells = [r * w + c for r in range(r0, r1) for c in range(c0, c1)]
        quota = math.floor(round(cfg.global_ratio * len(cells), 9)) if K is None else min(K // (2 * len(regions)), len(cells))
        kept |= set(sorted(cells, key=rank.index)[:quota])
        windows.append((r0, r1, c0, c1))
    if K is None:
        spans = [
            (a, min(a + cfg.window, r1), b, min(b + cfg.window, c1))
            for r0, r1, c0, c1 in windows for a in range(r0, r1, cfg.window) for b in range(c0, c1, cfg.window)
        ]
    else:
        k_local = K - len(kept)
        n = next(
            (n for n in range(1, max(h, w) + 1) if sum(min(n, r1 - r0) * min(n, c1 - c0) for r0, r1, c0, c1 in windows) >= k_local),
            max(h, w),
        )
        spans = []
        for r0, r1, c0, c1 in windows:
            rs, cs = [r0 + x for x in split_points(r1 - r0, n)], [c0 + x for x in split_points(c1 - c0, n)]
            spans += [(rs[a], rs[a + 1], cs[b], cs[b + 1]) for a in range(len(rs) - 1) for b in range(len(cs) - 1)]
    candidates = []
    for a0, a1, b0, b1 in spans:
        free = [r * w + c for r in range(a0, a1) for c in range(b0, b1) if r * w + c not in kept]
        if free:
            candidates.append(best(free))
    if K is None:
        return sorted(kept | set(candidates))
    k_local = K - len(kept)
    chosen = sorted(candidates, key=rank.index)[:k_local]
    kept |= set(chosen)
    rest = [i for i in rank if i not in kept]
    kept |= set(rest[: K - len(kept)])
    return sorted(kept)


def kept_lists(indices: torch.Tensor, counts: torch.Tensor) -> list[list[int]]:
    return [row[:c].tolist() for row, c in zip(indices, counts.tolist())]


@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_golden_paper_selection(case: dict) -> None:
    scores = torch.tensor(case["scores"], dtype=torch.float32)[None]  # [1, P]
    indices, counts = select_tokens(scores, tuple(case["grid"]), HIVTPConfig())
    assert kept_lists(indices, counts) == [case["kept"]]
    assert indices.shape == (1, 288)  # Kmax on 24x24: 4 * 36 global + 144 windows
    assert (indices[0, counts[0]:] == -1).all()


def test_golden_cases_as_one_batch() -> None:
    scores = torch.tensor([c["scores"] for c in GOLDEN], dtype=torch.float32)
    indices, counts = select_tokens(scores, (24, 24), HIVTPConfig())
    assert kept_lists(indices, counts) == [c["kept"] for c in GOLDEN]


SCORE_VALUES = st.one_of(
    st.floats(-3, 3, width=32),
    st.sampled_from([0.0, -0.0, 1.0, float("nan"), float("-inf"), float("inf")]),
)


@st.composite
def score_maps(draw, max_side: int = 12):
    """Random, clustered (few distinct values: many ties) and NaN-laced maps on varied grids."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    style = draw(st.sampled_from(["random", "clustered", "special"]))
    if style == "random":
        values = draw(st.lists(st.floats(-5, 5, width=32), min_size=h * w, max_size=h * w))
    elif style == "clustered":
        levels = draw(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=3))
        values = draw(st.lists(st.sampled_from(levels), min_size=h * w, max_size=h * w))
    else:
        values = draw(st.lists(SCORE_VALUES, min_size=h * w, max_size=h * w))
    return (h, w), values


CONFIGS = st.builds(
    HIVTPConfig,
    regions=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    global_ratio=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
    window=st.integers(1, 4),
    budget=st.one_of(st.none(), st.integers(1, 200)),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(score_maps(), CONFIGS)
def test_matches_independent_oracle(case, cfg: HIVTPConfig) -> None:
    grid, values = case
    indices, counts = select_tokens(torch.tensor([values], dtype=torch.float32), grid, cfg)
    assert kept_lists(indices, counts) == [naive_select(values, grid, cfg)]


@settings(max_examples=1500, deadline=None)
@given(score_maps(max_side=27), st.integers(1, 800), st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_budget_keeps_exactly_min_k_n(case, budget: int, regions) -> None:
    grid, values = case
    cfg = HIVTPConfig(budget=budget, regions=regions)
    indices, counts = select_tokens(torch.tensor([values], dtype=torch.float32), grid, cfg)
    k = min(budget, len(values))
    assert indices.shape == (1, k) and counts.tolist() == [k]
    kept = indices[0].tolist()
    assert kept == sorted(set(kept)) and 0 <= kept[0] and kept[-1] < len(values)


@pytest.mark.parametrize("grid", [(24, 24), (16, 16), (27, 27), (8, 13)])
@pytest.mark.parametrize("budget", [None, 1, 64, 192])
def test_batch_rows_equal_single_images(grid, budget) -> None:
    torch.manual_seed(0)
    scores = torch.rand(5, grid[0] * grid[1])
    scores[1, ::7] = float("nan")
    scores[2] = torch.round(scores[2] * 4) / 4  # ties
    cfg = HIVTPConfig(budget=budget)
    batch = select_tokens(scores, grid, cfg, return_stages=True)
    for b in range(5):
        alone = select_tokens(scores[b : b + 1], grid, cfg, return_stages=True)
        for got, want in zip(batch, alone):
            assert torch.equal(got[b : b + 1], want)


def test_budget_288_is_superset_of_paper_mode() -> None:
    torch.manual_seed(1)
    for scores in [torch.rand(8, 576), torch.randn(8, 576).exp(), torch.round(torch.rand(8, 576) * 3)]:
        paper = kept_lists(*select_tokens(scores, (24, 24), HIVTPConfig()))
        budget = kept_lists(*select_tokens(scores, (24, 24), HIVTPConfig(budget=288)))
        for p, b in zip(paper, budget):
            assert set(p) <= set(b) and len(b) == 288


def test_total_order_nan_last_signed_zero_ties() -> None:
    s = torch.tensor([[float("nan"), float("-inf"), -0.0, 0.0, 1.0, 1.0, float("nan")]])
    assert rank_tokens(s).tolist() == [[5, 4, 2, 3, 0, 1, 6]]


def test_nan_only_window_still_yields_a_candidate() -> None:
    # 2x2 grid, one region, quota 1 (ratio 0.25), one window: the best non-global token is a NaN.
    scores = torch.tensor([[1.0, float("nan"), float("nan"), float("nan")]])
    indices, counts, stages = select_tokens(scores, (2, 2), HIVTPConfig(regions=(1, 1)), return_stages=True)
    assert kept_lists(indices, counts) == [[0, 1]]
    assert stages[0, :2].tolist() == [STAGE_GLOBAL, STAGE_LOCAL]


def test_stages_label_global_local_fill() -> None:
    torch.manual_seed(2)
    scores = torch.rand(3, 576)
    indices, counts, stages = select_tokens(scores, (24, 24), HIVTPConfig(budget=500), return_stages=True)
    assert set(stages.unique().tolist()) == {STAGE_GLOBAL, STAGE_LOCAL, STAGE_FILL}
    assert (stages == STAGE_GLOBAL).sum(1).tolist() == [4 * (500 // 8)] * 3


@pytest.mark.parametrize(
    "grid,cfg,kmax",
    [
        ((24, 24), HIVTPConfig(), 288),  # 4 regions of 12x12: 4 * 36 global + 4 * 36 windows
        ((16, 16), HIVTPConfig(), 128),  # 4 regions of 8x8: 4 * 16 global + 4 * 16 windows
        # 27 splits at 13: regions 13x13, 13x14, 14x13, 14x14 keep 42 + 45 + 45 + 49 global;
        # each side has 7 windows of 2 (a partial one at the far edge): 4 * 49 windows
        ((27, 27), HIVTPConfig(), 181 + 196),
        ((24, 24), HIVTPConfig(budget=64), 64),
        ((4, 4), HIVTPConfig(budget=64), 16),
    ],
)
def test_kmax_is_static(grid, cfg, kmax) -> None:
    geo = selection_geometry(grid, cfg, torch.device("cpu"))
    assert geo.kmax == kmax


def test_rejects_scores_that_do_not_match_the_grid() -> None:
    with pytest.raises(ValueError, match="do not match a 24x24 patch grid"):
        select_tokens(torch.rand(1, 577), (24, 24), HIVTPConfig())
