"""What every kernel benchmark and GPU check shares: the CLIP shapes, the CUDA gate and the JSON record."""

from __future__ import annotations

import datetime
import json
import re
import sys
from pathlib import Path

import torch
import triton
from transformers import CLIPVisionConfig

from hivtp.config import HIVTPConfig
from hivtp.timing import git_commit

BATCHES = (1, 8, 32)
SPECIALS = (float("nan"), float("-inf"), float("inf"), -0.0, 0.0)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
REPO = Path(__file__).resolve().parents[2]


def clip_vit_l_336() -> CLIPVisionConfig:
    """The LLaVA-1.5 vision tower's dimensions (weights are never needed for timing)."""
    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                            num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)


def score_shape(vision: CLIPVisionConfig, config: HIVTPConfig, batch: int) -> tuple[int, int, int, int, int]:
    """[L, B, H, N, d] of the Q and K the scorer reads, derived from the vision config."""
    side = vision.image_size // vision.patch_size
    heads = vision.num_attention_heads
    return len(config.score_layers), batch, heads, side * side + 1, vision.hidden_size // heads


def awkward_scores(batch: int, num_patches: int, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """[B, P] fp32 that exercise the tie rule: even rows continuous, odd rows on 4 levels (many ties),
    and ~15% NaN / +-inf / +-0.0 in every row."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, num_patches, generator=gen)  # [B, P]
    scores[1::2] = torch.randint(-2, 2, scores[1::2].shape, generator=gen) / 4.0
    special = torch.rand(batch, num_patches, generator=gen) < 0.15  # [B, P]
    picks = torch.tensor(SPECIALS)[torch.randint(0, len(SPECIALS), (batch, num_patches), generator=gen)]  # [B, P]
    return torch.where(special, picks, scores).to(device)


def require_cuda(script: str) -> None:
    """GPU-only tools: one line and exit status 2 where there is no CUDA device."""
    if not torch.cuda.is_available():
        print(f"{script}: needs a CUDA GPU and none is visible; nothing measured")
        sys.exit(2)


def environment() -> dict:
    """Device, date and commit: enough to tell two result files apart."""
    return {
        "device": torch.cuda.get_device_name(),
        "capability": list(torch.cuda.get_device_capability()),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "triton": triton.__version__,
    }


def write_record(record: dict, folder: str, stem: str) -> Path:
    """results/<folder>/<stem>-<device>-<date>.json under the repository root."""
    device = re.sub(r"[^A-Za-z0-9]+", "-", record["device"]).strip("-").lower()
    path = REPO / "results" / folder / f"{stem}-{device}-{record['date'][:10]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return path


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    print("  ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>12.4g}" if isinstance(row[c], float) else f"{row[c]:>12}" for c in columns))
