"""Benchmark: select (+ gather) kernels vs the torch reference on a 24x24 grid, batch 1, 8, 32.

Units: selection reads B * P fp32 scores and writes B * Kmax int64 indices and stages; the gather
reads and writes B * Kmax * D feature elements. GB/s below is that traffic over the kernels' time.
Run on a GPU: python -m hivtp.plugins.benchmarks.bench_select (exits 2 without CUDA).
"""

from __future__ import annotations

import torch
from triton.testing import do_bench

from hivtp.config import HIVTPConfig
from hivtp.plugins.benchmarks.common import (
    BATCHES, DTYPES, clip_vit_l_336, environment, print_table, require_cuda, write_record)
from hivtp.plugins.kernels.select import select
from hivtp.plugins.reference import gather_kept, select_tokens


def bench_one(grid: tuple[int, int], config: HIVTPConfig, batch: int, features_dtype: torch.dtype, width: int) -> dict:
    P = grid[0] * grid[1]
    scores = torch.randn(batch, P, device="cuda")  # [B, P]
    features = torch.randn(batch, P, width, device="cuda", dtype=features_dtype)  # [B, P, D]
    kmax = select(scores, grid, config)[0].shape[1]
    select_ms = do_bench(lambda: select(scores, grid, config, return_stages=True))
    both_ms = do_bench(lambda: select(scores, grid, config, features=features))
    ref_ms = do_bench(lambda: gather_kept(features, select_tokens(scores, grid, config)[0]))
    moved = batch * (P * 4 + 2 * kmax * 8) + 2 * batch * kmax * width * features.element_size()
    return {"batch": batch, "select_us": select_ms * 1e3, "with_gather_us": both_ms * 1e3,
            "reference_us": ref_ms * 1e3, "speedup": ref_ms / both_ms, "GB/s": moved / both_ms / 1e6}


def main() -> None:
    require_cuda("bench_select")
    vision = clip_vit_l_336()
    side = vision.image_size // vision.patch_size
    grid = (side, side)
    configs = {"paper": HIVTPConfig(), "budget": HIVTPConfig(budget=side * side // 4)}
    record = environment() | {"op": "select", "grid": list(grid), "results": []}
    for mode, config in configs.items():
        for name, dtype in DTYPES.items():
            rows = [bench_one(grid, config, batch, dtype, vision.hidden_size) for batch in BATCHES]
            print(f"select, {mode} mode, grid {grid}, features [B, P, {vision.hidden_size}] {name}")
            print_table(rows)
            record["results"] += [row | {"mode": mode, "dtype": name, "features": [row["batch"], side * side,
                                                                                 vision.hidden_size]} for row in rows]
    print(write_record(record, "bench", "kernel-select"))


if __name__ == "__main__":
    main()
