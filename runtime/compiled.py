"""`--compile` for the torch backend: recorded work replayed instead of launched op by op.

At batch 1 a 7B HF decoder and the CLIP tower are bound by kernel launches (on an H200 the HF
prefill takes about 20 ms at 584 or at 72 tokens, README table G1), so fewer visual tokens barely
shorten TTFT. Two tools remove the launches:
- `CudaGraphed`: the vision step (HIVTP's score + select + project, or the stock tower + projector)
  captured once per input shape as a CUDA graph and replayed. Neither step syncs with the host, so
  each captures whole. CUDA only.
- `CompiledLM`: the LLM prefill and one decode step under `torch.compile` (mode "reduce-overhead" on
  CUDA, i.e. CUDA graphs; inductor on CPU) on a static KV cache of T + max_new_tokens slots, allocated
  once per shape and reset in place, so every decode step has the same shapes and addresses and replays
  one graph.

Legend: B prompt rows, T prefill length, D text hidden size, S = T + max_new_tokens cache slots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StaticCache


def stack_tokens(steps: list[torch.Tensor], first: torch.Tensor) -> torch.Tensor:
    """Greedy decode steps, [B] each -> [B, steps]; [B, 0] when none ran (`first` [B] gives B, dtype and device)."""
    return torch.stack(steps, dim=1) if steps else first.new_empty(first.shape[0], 0)


class CudaGraphed:
    """fn(*tensors) replayed as a CUDA graph, one capture per tensor shapes, dtypes and devices.

    Inputs are copied into the graph's own buffers; outputs are the graph's buffers, overwritten by
    the next replay of the same shapes: use (or copy) them before calling again.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], Any]] = {}

    def __call__(self, *tensors: torch.Tensor) -> Any:
        key = tuple((t.shape, t.dtype, t.device) for t in tensors)
        if key not in self.graphs:
            self.graphs[key] = self._capture(tensors)
        graph, inputs, outputs = self.graphs[key]
        for buffer, value in zip(inputs, tensors):
            buffer.copy_(value)
        graph.replay()
        return outputs

    def _capture(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], Any]:
        inputs = tuple(t.clone() for t in tensors)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream: JIT compiles, allocator, caches
            for _ in range(2):
                self.fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.fn(*inputs)
        return graph, inputs, outputs


@dataclass
class StaticState:
    """What compiled decoding continues from: a static cache and its full-length mask."""

    cache: Any  # transformers StaticCache with S slots
    attention_mask: torch.Tensor  # [B, S]: the prefill's mask, then one slot per decoded token
    last_position: torch.Tensor  # [B] position id of the last token in the cache
    length: int  # T + tokens decoded so far


class CompiledLM:
    """Greedy prefill and decode of a HF LLaVA's language model, compiled, on a static KV cache."""

    def __init__(self, model: Any, max_new_tokens: int, backend: str = "inductor") -> None:
        """One per model, shared by its backends. Shapes are dynamic from the start, so one compile each
        serves every prefill length and cache size; CUDA graphs are recorded per shape. backend: torch.compile's."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        self.model, self.max_new_tokens = model, max_new_tokens
        self.caches: dict[tuple, Any] = {}
        graphs = model.device.type == "cuda" and backend == "inductor"
        options: dict[str, Any] = {"backend": backend, "mode": "reduce-overhead" if graphs else None, "dynamic": True}
        self.prefill_step = torch.compile(self._step, **options)
        self.decode_step = torch.compile(self._decode, **options)

    def _step(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache_position: torch.Tensor,
              cache: Any) -> torch.Tensor:
        """embeds [B, t, D] appended to the cache -> greedy next token [B] (lm_head on the last position only)."""
        out = self.model.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
            cache_position=cache_position, use_cache=True,
        )
        return self.model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)

    def _decode(self, token: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache_position: torch.Tensor,
                cache: Any) -> torch.Tensor:
        return self._step(self.model.get_input_embeddings()(token[:, None]), mask, positions, cache_position, cache)

    def _cache(self, batch: int, slots: int, like: torch.Tensor) -> Any:
        """The static KV cache for (batch, slots), allocated once, outside any compiled region.

        Allocated eagerly, its tensors are marked as static addresses (HF does it outside tracing only),
        so CUDA graphs update them in place and replay. Reset in place before each prefill (transformers 5
        layers also count what they hold). Hence one sequence at a time: a prefill ends the last one's cache.
        """
        key = (batch, slots, like.dtype, like.device)
        if key not in self.caches:
            text = self.model.config.get_text_config(decoder=True)
            head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
            cache = StaticCache(config=self.model.config, max_cache_len=slots)
            cache.early_initialization(batch, text.num_key_value_heads, head_dim, like.dtype, like.device)
            self.caches[key] = cache
        self.caches[key].reset()
        return self.caches[key]

    def prefill(self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, StaticState]:
        """embeds [B, T, D], attention_mask / position_ids [B, T] -> first tokens [B] and the decode state."""
        B, T, _ = embeds.shape
        slots = T + self.max_new_tokens
        cache = self._cache(B, slots, embeds)
        mask = torch.zeros(B, slots, dtype=attention_mask.dtype, device=attention_mask.device)  # [B, S]
        mask[:, :T] = attention_mask
        if embeds.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        first = self.prefill_step(embeds, mask, position_ids, torch.arange(T, device=embeds.device), cache).clone()
        return first, StaticState(cache, mask, position_ids[:, -1], T)

    def decode(
        self, first: torch.Tensor, state: StaticState, new_tokens: int, on_step: Callable[[torch.Tensor], bool] | None = None
    ) -> torch.Tensor:
        """Exactly `new_tokens` greedy tokens after `first`: [B, new_tokens]. Consumes the state's cache.

        on_step: as in TorchBackend.decode (True stops early; the tokens so far come back)."""
        if state.length + new_tokens > state.cache.max_cache_len:
            raise ValueError(f"--compile sized the KV cache for {self.max_new_tokens} new tokens, asked for {new_tokens}")
        token, position, generated = first, state.last_position, []
        cache_position = torch.full((1,), state.length, device=first.device)  # [1], advanced on the device: no copy-in
        for _ in range(new_tokens):
            state.attention_mask[:, state.length] = 1
            position = position + 1
            if token.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            token = self.decode_step(token, state.attention_mask, position[:, None], cache_position, state.cache).clone()
            cache_position = cache_position + 1
            state.length += 1
            generated.append(token)
            if on_step is not None and on_step(token):
                break
        return stack_tokens(generated, first)  # [B, new_tokens]
