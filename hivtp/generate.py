"""One pruned answer for one image and prompt: what `hivtp generate` runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from hivtp.config import HIVTPConfig
from hivtp.runtime.hf import apply


@dataclass(frozen=True)
class Answer:
    text: str
    kept_tokens: int  # visual tokens the LLM saw (NeXT: newlines included)
    full_tokens: int  # visual tokens without pruning
    ttft_s: float  # pixel_values ready -> first token's logits
    preprocess_s: float  # image processor + tokenizer, on the CPU


class FirstTokenClock(LogitsProcessor):
    """Notes when the first token's logits exist, without touching the model."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.first is None:
            if scores.is_cuda:
                torch.cuda.synchronize()
            self.first = time.perf_counter()
        return scores


def build_prompt(processor: Any, prompt: str) -> str:
    """Use the checkpoint's chat template when it has one; else '<image>\\n' + prompt."""
    if "<image>" in prompt:
        return prompt
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return f"<image>\n{prompt}"


@torch.inference_mode()
def answer(model: Any, processor: Any, image: Image.Image, prompt: str, config: HIVTPConfig, max_new_tokens: int) -> Answer:
    start = time.perf_counter()
    inputs = processor(images=[image], text=[build_prompt(processor, prompt)], return_tensors="pt").to(model.device)
    ready = time.perf_counter()
    clock = FirstTokenClock()
    wrapped = apply(model, config)
    output = wrapped.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=LogitsProcessorList([clock])
    )
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    pruned = wrapped.last_pruned
    return Answer(
        text=processor.decode(new_tokens, skip_special_tokens=True).strip(),
        kept_tokens=int(pruned.kept_tokens.sum()),
        full_tokens=int(pruned.full_tokens.sum()),
        ttft_s=clock.first - ready,
        preprocess_s=ready - start,
    )


def report(result: Answer, mode: str) -> None:
    """What `hivtp generate` prints: the answer, the visual tokens kept, TTFT."""
    print(f"answer: {result.text}")
    print(f"visual tokens kept: {result.kept_tokens} / {result.full_tokens} ({mode} mode)")
    print(f"TTFT: {result.ttft_s * 1e3:.1f} ms (preprocessing {result.preprocess_s * 1e3:.1f} ms, not included)")
