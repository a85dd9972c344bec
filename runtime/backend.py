"""The small interface every generation backend implements, so a benchmark is one adapter per backend.

The four steps are the ones a latency breakdown needs: CPU preprocessing, the vision path (tower,
scoring, selection, projector), the LLM prefill that yields the first token, and decoding.
Backends: torch (HF, CPU or CUDA; Triton kernels on CUDA) and TensorRT-LLM engines.

Legend: B prompt rows, T pruned sequence length, D text hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from hivtp.runtime.layout import PrunedSequence


@dataclass
class Prepared:
    """Processor outputs on the backend's device: input_ids, attention_mask, pixel_values, (image_sizes)."""

    inputs: dict[str, torch.Tensor]


def prepare_batch(processor: Any, images: list[Image.Image], prompts: list[str], device: torch.device) -> Prepared:
    """CPU preprocessing every backend shares: chat template, image processor + tokenizer, one copy to device."""
    from hivtp.generate import build_prompt

    if len(images) != len(prompts):
        raise ValueError(f"one image per prompt: got {len(images)} images and {len(prompts)} prompts")
    texts = [build_prompt(processor, prompt) for prompt in prompts]
    # channels_last: our images are PIL (HWC); left to guess, HF misreads a 1- or 3-pixel-tall image
    batch = processor(images=images, text=texts, return_tensors="pt", padding=True, input_data_format="channels_last")
    return Prepared({name: value.to(device) for name, value in batch.items() if isinstance(value, torch.Tensor)})


@dataclass
class VisionResult:
    """Kept features and the pruned layout they go into."""

    features: torch.Tensor  # [sum of kept tokens, D]: every image's kept tokens, image after image
    sequence: PrunedSequence  # [B, T] layout shared by all backends
    kept_tokens: torch.Tensor  # [images] visual tokens per image after pruning
    full_tokens: torch.Tensor  # [images] visual tokens per image without pruning


@dataclass
class PrefillResult:
    """First generated token per row plus whatever state decoding continues from (KV cache, handles)."""

    first_tokens: torch.Tensor  # [B]
    state: Any


class Backend(Protocol):
    name: str

    def prepare(self, images: list[Image.Image], prompts: list[str]) -> Prepared: ...

    def vision(self, prepared: Prepared) -> VisionResult: ...

    def prefill(self, prepared: Prepared, vision: VisionResult) -> PrefillResult: ...

    def decode(self, prefill: PrefillResult, new_tokens: int) -> torch.Tensor:
        """Exactly `new_tokens` more tokens per row (no early EOS): [B, new_tokens]."""
        ...
