"""`hivtp viz`: what HIVTP keeps on one image, as a PNG.

Three panels: the image as the encoder sees it (resized / cropped by the processor), the importance
heat map on the patch grid, and the kept patches outlined by the stage that kept them (global: top
tokens of each region; local: best of each window; fill: budget mode's top-up). Counts in the title.
LLaVA-NeXT selects per crop; the figure shows the base crop (the whole image at the tower's size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hivtp.config import HIVTPConfig
from hivtp.plugins.reference import STAGE_FILL, STAGE_GLOBAL, STAGE_LOCAL, select_tokens
from hivtp.runtime.hf import check_model, encode_and_score, patch_grid
from hivtp.timing import save_figure

STAGE_STYLE = {STAGE_GLOBAL: ("global", "red"), STAGE_LOCAL: ("local", "deepskyblue"), STAGE_FILL: ("fill", "lime")}


@dataclass(frozen=True)
class TokenMap:
    image: torch.Tensor  # [S, S, 3] in [0, 1]: the pixels the tower saw
    scores: torch.Tensor  # [h, w] fp32 importance
    kept: torch.Tensor  # [K] kept patch indices (row-major)
    stages: torch.Tensor  # [K] STAGE_GLOBAL / STAGE_LOCAL / STAGE_FILL
    grid: tuple[int, int]


@torch.inference_mode()
def token_map(model: Any, processor: Any, image: Image.Image, config: HIVTPConfig) -> TokenMap:
    """Score and select one image (NeXT: its base crop) exactly as pruning does."""
    check_model(model)
    image_processor = processor.image_processor
    pixels = image_processor(images=[image], return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    pixels = pixels[:, 0] if pixels.dim() == 5 else pixels  # NeXT [1, crops, 3, S, S] -> base crop [1, 3, S, S]
    vision_config = model.config.vision_config
    feature_layer = config.resolve_feature_layer(model.config.vision_feature_layer, vision_config.num_hidden_layers + 1)
    scores, _ = encode_and_score(model.model.vision_tower, pixels.to(model.device), config, feature_layer)  # [1, P]
    grid = patch_grid(vision_config)
    indices, counts, stages = select_tokens(scores, grid, config, return_stages=True)  # [1, Kmax] x2, [1]
    k = int(counts[0])
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    shown = (pixels[0].float() * std + mean).clamp(0, 1).permute(1, 2, 0)  # [S, S, 3]
    return TokenMap(shown, scores[0].float().cpu().view(grid), indices[0, :k].cpu(), stages[0, :k].cpu(), grid)


def figure(tokens: TokenMap, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    h, w = tokens.grid
    side = tokens.image.shape[0]
    cell = side / w
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax in axes:
        ax.imshow(tokens.image.numpy())
        ax.set_axis_off()
    heat = axes[1].imshow(tokens.scores.numpy(), cmap="inferno", alpha=0.75, extent=(0, side, side, 0))
    fig.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.02)
    for index, stage in zip(tokens.kept.tolist(), tokens.stages.tolist()):
        row, col = divmod(index, w)
        axes[2].add_patch(Rectangle((col * cell, row * cell), cell, cell, fill=False, lw=1.2, ec=STAGE_STYLE[stage][1]))
    counts = {name: int((tokens.stages == stage).sum()) for stage, (name, _) in STAGE_STYLE.items()}
    axes[2].legend(handles=[Patch(ec=c, fc="none", label=f"{n} ({counts[n]})") for n, c in STAGE_STYLE.values()],
                   loc="lower right", fontsize=7)
    axes[0].set_title("input (as the encoder sees it)", fontsize=9)
    axes[1].set_title("importance (mean attention received)", fontsize=9)
    axes[2].set_title("kept tokens by stage", fontsize=9)
    summary = ", ".join(f"{name} {n}" for name, n in counts.items())
    fig.suptitle(f"{title}: kept {len(tokens.kept)} / {h * w} ({summary})", fontsize=10)
    return fig


def render(model: Any, processor: Any, image: Image.Image, config: HIVTPConfig, out: Path, title: str) -> TokenMap:
    tokens = token_map(model, processor, image, config)
    if getattr(model.config, "image_grid_pinpoints", None):
        title += ", LLaVA-NeXT base crop"
    save_figure(out, figure(tokens, f"{title}, {config.mode} mode"))
    return tokens
