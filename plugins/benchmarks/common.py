"""What every kernel benchmark and GPU check shares: the CLIP shapes, the CUDA gate and the JSON record."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
import triton
from transformers import CLIPVisionConfig

from hivtp.bench import preset_config
from hivtp.config import HIVTPConfig
from hivtp.timing import run_metadata, write_json

BATCHES = (1, 8, 32)
SPECIALS = (float("nan"), float("-inf"), float("inf"), -0.0, 0.0)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
REPO = Path(__file__).resolve().parents[2]


def clip_vit_l_336() -> CLIPVisionConfig:
    """The LLaVA-1.5 vision tower's dimensions, from the shipped llava-1.5-7b preset (weights never needed)."""
    return preset_config("llava-1.5-7b", vocab_size=32064, image_token_id=32000).vision_config


def score_shape(vision: CLIPVisionConfig, config: HIVTPConfig, batch: int) -> tuple[int, int, int, int, int]:
    """[L, B, H, N, d] of the Q and K the scorer reads, derived from the vision config (LLaVA's feature layer -2)."""
    side = vision.image_size // vision.patch_size
    heads = vision.num_attention_heads
    return len(config.for_tower(vision.num_hidden_layers, -2).layers), batch, heads, side * side + 1, vision.hidden_size // heads


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
        print(f"hivtp: error: {script} needs a CUDA GPU and none is visible; nothing measured", file=sys.stderr)
        sys.exit(2)


def environment() -> dict:
    """The run metadata every result file records (hivtp.timing), plus the GPU's capability and Triton."""
    device = torch.device("cuda")
    return run_metadata(device) | {"capability": list(torch.cuda.get_device_capability(device)), "triton": triton.__version__}


def write_record(record: dict, folder: str, stem: str) -> Path:
    """results/<folder>/<stem>-<device>-<date>.json under the repository root, written atomically."""
    device = re.sub(r"[^A-Za-z0-9]+", "-", str(record.get("device"))).strip("-").lower()
    return write_json(REPO / "results" / folder / f"{stem}-{device}-{str(record.get('date_utc'))[:10]}.json", record)


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    print("  ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>12.4g}" if isinstance(row[c], float) else f"{row[c]:>12}" for c in columns))
