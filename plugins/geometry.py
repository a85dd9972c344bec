"""Static selection geometry: which region and window each patch belongs to, and how many each keeps.

Everything here depends only on (grid, config), so it is built once per device and cached; the
per-call selection path only gathers from these tensors.

Legend: P patches (= h * w), R regions, W windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from hivtp.config import HIVTPConfig


@dataclass(frozen=True)
class SelectionGeometry:
    grid: tuple[int, int]
    region_of: torch.Tensor  # [P] int64, region id of each patch (row-major patch order)
    region_start: torch.Tensor  # [R] int64, offset of each region in a region-major ordering of patches
    region_quota: torch.Tensor  # [R] int64, tokens the global stage keeps per region
    window_of: torch.Tensor  # [P] int64, window id of each patch, ids unique across regions
    num_windows: int  # W
    num_global: int  # sum of region_quota
    kmax: int  # static output width: paper: num_global + W; budget: min(budget, P)


def split_points(size: int, parts: int) -> list[int]:
    """Near-equal boundaries floor(i * size / parts), i = 0..parts (parts capped by size)."""
    parts = min(parts, size)
    return [i * size // parts for i in range(parts + 1)]


def _region_spans(grid: tuple[int, int], regions: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of each region, row-major."""
    rows, cols = split_points(grid[0], regions[0]), split_points(grid[1], regions[1])
    return [
        (rows[i], rows[i + 1], cols[j], cols[j + 1]) for i in range(len(rows) - 1) for j in range(len(cols) - 1)
    ]


def _tiles(r0: int, r1: int, c0: int, c1: int, step: int) -> list[tuple[list[int], list[int]]]:
    """Fixed step x step windows from the region origin; a partial window at a far edge counts."""
    row_cuts = list(range(r0, r1, step)) + [r1]
    col_cuts = list(range(c0, c1, step)) + [c1]
    return [(row_cuts[i : i + 2], col_cuts[j : j + 2]) for i in range(len(row_cuts) - 1) for j in range(len(col_cuts) - 1)]


def _near_equal(r0: int, r1: int, c0: int, c1: int, n: int) -> list[tuple[list[int], list[int]]]:
    """min(n, rows) x min(n, cols) near-equal windows of one region."""
    rows = [r0 + x for x in split_points(r1 - r0, n)]
    cols = [c0 + x for x in split_points(c1 - c0, n)]
    return [(rows[i : i + 2], cols[j : j + 2]) for i in range(len(rows) - 1) for j in range(len(cols) - 1)]


def budget_window_count(spans: list[tuple[int, int, int, int]], k_local: int) -> int:
    """Smallest n whose near-equal split yields at least k_local windows over all regions."""
    largest = max(max(r1 - r0, c1 - c0) for r0, r1, c0, c1 in spans)
    for n in range(1, largest + 1):
        if sum(min(n, r1 - r0) * min(n, c1 - c0) for r0, r1, c0, c1 in spans) >= k_local:
            return n
    return largest  # every patch is its own window: at least P >= k_local windows


@dataclass(frozen=True)
class SelectionLayout:
    """The geometry as plain Python: usable where tensors must not be made (e.g. under FakeTensorMode)."""

    grid: tuple[int, int]
    region_of: tuple[int, ...]  # [P]
    region_sizes: tuple[int, ...]  # [R]
    region_quota: tuple[int, ...]  # [R]
    window_of: tuple[int, ...]  # [P]
    num_windows: int
    kmax: int


def _paint(grid: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> tuple[int, ...]:
    """Row-major id map of a grid tiled by boxes (row0, row1, col0, col1): box i paints i."""
    ids = [0] * (grid[0] * grid[1])
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        for r in range(r0, r1):
            ids[r * grid[1] + c0 : r * grid[1] + c1] = [i] * (c1 - c0)
    return tuple(ids)


@lru_cache(maxsize=64)
def selection_layout(grid: tuple[int, int], config: HIVTPConfig) -> SelectionLayout:
    h, w = grid
    if h <= 0 or w <= 0:
        raise ValueError(f"grid must be two positive sides, got {grid}")
    spans = _region_spans(grid, config.regions)
    sizes = tuple((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in spans)
    quotas = tuple(config.global_quota(size, len(spans)) for size in sizes)
    if config.budget is None:
        windows = [win for span in spans for win in _tiles(*span, config.window)]
        kmax = sum(quotas) + len(windows)
    else:
        k = min(config.budget, h * w)
        n = budget_window_count(spans, k - sum(quotas))
        windows = [win for span in spans for win in _near_equal(*span, n)]
        kmax = k
    boxes = [(r0, r1, c0, c1) for (r0, r1), (c0, c1) in windows]
    return SelectionLayout(grid, _paint(grid, spans), sizes, quotas, _paint(grid, boxes), len(windows), kmax)


@lru_cache(maxsize=64)
def selection_geometry(grid: tuple[int, int], config: HIVTPConfig, device: torch.device) -> SelectionGeometry:
    layout = selection_layout(grid, config)
    as_tensor = lambda values: torch.tensor(values, dtype=torch.int64, device=device)  # noqa: E731
    return SelectionGeometry(
        grid=grid,
        region_of=as_tensor(layout.region_of),
        region_start=as_tensor((0,) + layout.region_sizes[:-1]).cumsum(0),
        region_quota=as_tensor(layout.region_quota),
        window_of=as_tensor(layout.window_of),
        num_windows=layout.num_windows,
        num_global=sum(layout.region_quota),
        kmax=layout.kmax,
    )
