"""Benchmark: score kernel vs the torch streaming reference on CLIP ViT-L/14-336 shapes, batch 1, 8, 32.

Units (reference.py docstring): one Q K^T is 2 * L * B * H * N^2 * d FLOPs (the reference does it
once, the kernel twice: TFLOP/s below counts one, the useful work); compulsory traffic is Q and K read once, L * B * H * N * d elements each, plus B * P fp32
scores written. GB/s and TFLOP/s below are those counts over the kernel's time.
Run on a GPU: python -m hivtp.plugins.benchmarks.bench_score (exits 2 without CUDA).
"""

from __future__ import annotations

import torch
from triton.testing import do_bench

from hivtp.config import HIVTPConfig
from hivtp.plugins.benchmarks.common import (
    BATCHES, DTYPES, clip_vit_l_336, environment, print_table, require_cuda, score_shape, write_record)
from hivtp.plugins.kernels.score import score
from hivtp.plugins.reference import importance_scores_from_qk


def bench_one(shape: tuple[int, int, int, int, int], dtype: torch.dtype) -> dict:
    L, B, H, N, d = shape
    q, k = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(2))  # [L, B, H, N, d]
    ms = do_bench(lambda: score(q, k))  # warm-up, then timed with CUDA events and syncs
    ref_ms = do_bench(lambda: importance_scores_from_qk(q, k))
    moved = 2 * q.numel() * q.element_size() + B * (N - 1) * 4
    flops = 2 * L * B * H * N * N * d
    return {"batch": B, "kernel_ms": ms, "reference_ms": ref_ms, "speedup": ref_ms / ms,
            "GB/s": moved / ms / 1e6, "TFLOP/s": flops / ms / 1e9}


def main() -> None:
    require_cuda("bench_score")
    vision, config = clip_vit_l_336(), HIVTPConfig()
    record = environment() | {"op": "score", "results": []}
    for name, dtype in DTYPES.items():
        rows = [bench_one(score_shape(vision, config, batch), dtype) for batch in BATCHES]
        print(f"score, {name}, [L, B, H, N, d] = {list(score_shape(vision, config, 0))} with B varying")
        print_table(rows)
        record["results"] += [row | {"dtype": name, "shape": list(score_shape(vision, config, row["batch"]))}
                              for row in rows]
    print(write_record(record, "bench", "kernel-score"))


if __name__ == "__main__":
    main()
