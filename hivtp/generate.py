"""One pruned answer for one image and prompt: what `hivtp generate` runs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from hivtp.args import IMAGE_MARKER, check_prompt
from hivtp.config import HIVTPConfig
from hivtp.runtime.backend import prepare_batch
from hivtp.runtime.hf import apply


@dataclass(frozen=True)
class Answer:
    text: str
    kept_tokens: int  # visual tokens the LLM saw (NeXT: newlines included)
    full_tokens: int  # visual tokens without pruning
    ttft_s: float | None  # pixel_values ready -> first token's logits (median after a warm-up); None: not timed
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
    if IMAGE_MARKER in check_prompt(prompt):
        return prompt
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        if not isinstance(text, str) or text.count(IMAGE_MARKER) != 1:
            raise ValueError(f"the checkpoint's chat template does not place one {IMAGE_MARKER} marker: it rendered {str(text)[:80]!r}")
        return text
    return f"{IMAGE_MARKER}\n{prompt}"


def check_context(model: Any, input_ids: torch.Tensor, max_new_tokens: int) -> None:
    """The unpruned prompt plus the new tokens must fit the LLM's context (pruning only shortens it)."""
    context = getattr(model.config.text_config, "max_position_embeddings", None)
    length = input_ids.shape[1]
    if context is not None and length + max_new_tokens > context:
        raise ValueError(f"the prompt ({length} tokens with the image) plus {max_new_tokens} new tokens exceeds "
                         f"the model's context of {context} tokens")


def first_token_time(model: Any, inputs: dict[str, torch.Tensor], repeats: int) -> float | None:
    """Median seconds from pixel_values ready to the first token's logits, after one warm-up run."""
    if repeats == 0:
        return None
    times = []
    for i in range(repeats + 1):
        clock = FirstTokenClock()
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=1, do_sample=False, logits_processor=LogitsProcessorList([clock]))
        if i:  # run 0 warms up (allocator, kernels, caches)
            times.append(clock.first - start)
    return statistics.median(times)


@torch.inference_mode()
def answer(model: Any, processor: Any, image: Image.Image, prompt: str, config: HIVTPConfig, max_new_tokens: int,
           ttft_repeats: int = 3) -> Answer:
    start = time.perf_counter()
    inputs = prepare_batch(processor, [image], [prompt], model.device).inputs
    preprocess_s = time.perf_counter() - start
    check_context(model, inputs["input_ids"], max_new_tokens)
    wrapped = apply(model, config)
    ttft_s = first_token_time(wrapped, inputs, ttft_repeats)
    output = wrapped.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    pruned = wrapped.last_pruned
    return Answer(
        text=processor.decode(new_tokens, skip_special_tokens=True).strip(),
        kept_tokens=int(pruned.kept_tokens.sum()),
        full_tokens=int(pruned.full_tokens.sum()),
        ttft_s=ttft_s,
        preprocess_s=preprocess_s,
    )


def report(result: Answer, mode: str) -> None:
    """What `hivtp generate` prints: the answer, the visual tokens kept, TTFT."""
    print(f"answer: {result.text}")
    print(f"visual tokens kept: {result.kept_tokens} / {result.full_tokens} ({mode} mode)")
    if result.ttft_s is not None:
        print(f"TTFT: {result.ttft_s * 1e3:.1f} ms (median after a warm-up; preprocessing {result.preprocess_s * 1e3:.1f} ms, not included)")
