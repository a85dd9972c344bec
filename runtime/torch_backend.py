"""The torch backend: HF LLaVA-1.5 / LLaVA-NeXT on CPU or CUDA, behind the `Backend` protocol.

`config=None` means *no pruning*: the stock HF vision path (tower -> feature layer -> projector, and
NeXT's unpad + newline packing) with no scoring at all, so a "full" benchmark row costs what the
stock model costs. `HIVTPConfig(budget=huge)` would not: it still scores every token. With a config,
vision is `hivtp.runtime.hf.prune_inputs`. Prefill and decode run the stock model on
`inputs_embeds` with a KV cache, projecting only the last position through `lm_head`
(`logits_to_keep=1`). Decoding is greedy for exactly the requested number of tokens (no EOS stop),
so random-weight models produce a fixed output length. With a `CompiledLM` it replays recorded work
(`runtime/compiled.py`): the vision step as a CUDA graph (CUDA; the stock LLaVA-NeXT path, which
syncs with the host inside HF's packing, stays eager), prefill and decode under torch.compile on a
static KV cache of T + max_new_tokens slots.

Legend: B prompt rows, T pruned length, D text hidden size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image
from transformers import LlavaNextForConditionalGeneration

from hivtp.config import HIVTPConfig
from hivtp.runtime.backend import Prepared, PrefillResult, VisionResult, prepare_batch
from hivtp.runtime.compiled import CompiledLM, CudaGraphed, stack_tokens
from hivtp.runtime.hf import PruneOps, check_model, default_ops, prune_inputs, select_and_project
from hivtp.runtime.layout import pad_id_of, prune_sequence


def stock_image_features(model: Any, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None) -> list[torch.Tensor]:
    """The model's own `get_image_features` (its feature layer and strategy) -> per-image features [k, D]."""
    cfg = model.config
    kwargs: dict[str, Any] = dict(
        pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
    )
    if image_sizes is not None:
        kwargs["image_sizes"] = image_sizes
    out = model.model.get_image_features(**kwargs)
    return list(getattr(out, "pooler_output", out))  # transformers 5 wraps it in an output object


def graphed_vision_step(ops: PruneOps) -> Any:
    """A PruneOps.vision_step that replays `select_and_project` as a CUDA graph (one per config and shape)."""
    graphs: dict[tuple[int, HIVTPConfig], CudaGraphed] = {}

    def step(model: Any, pixel_values: torch.Tensor, config: HIVTPConfig, _: PruneOps) -> tuple:
        key = (id(model), config)
        if key not in graphs:
            graphs[key] = CudaGraphed(lambda pv: select_and_project(model, pv, config, ops))
        grid, indices, counts, projected = graphs[key](pixel_values)
        return grid, indices.clone(), counts.clone(), projected  # projected: consumed before the next replay
    return step


@dataclass
class DecodeState:
    """What decoding continues from. The cache grows in place: one prefill feeds one decode."""

    cache: Any  # HF Cache of the prefill
    attention_mask: torch.Tensor  # [B, T]
    last_position: torch.Tensor  # [B] position id of the last prefilled token


class TorchBackend:
    """prepare / vision / prefill / decode on a HF LLaVA model; `config=None` = stock, nothing pruned."""

    name = "torch"

    def __init__(
        self, model: Any, processor: Any, config: HIVTPConfig | None, ops: PruneOps | None = None,
        compiled: CompiledLM | None = None,
    ) -> None:
        """compiled: prefill / decode through it (share one per model), and on CUDA the vision step as a CUDA graph."""
        check_model(model)
        self.model, self.processor, self.config, self.ops = model, processor, config, ops
        self.lm = compiled
        self.stock_graph = None
        if compiled is not None and model.device.type == "cuda":
            eager = ops or default_ops(model.device)
            self.ops = replace(eager, vision_step=graphed_vision_step(eager))
            if not isinstance(model, LlavaNextForConditionalGeneration):
                self.stock_graph = CudaGraphed(lambda pixel_values: stock_image_features(model, pixel_values, None))

    def prepare(self, images: list[Image.Image], prompts: list[str]) -> Prepared:
        """CPU preprocessing (image processor + tokenizer), then one copy to the model's device."""
        prepared = prepare_batch(self.processor, images, prompts, self.model.device)
        prepared.inputs["pixel_values"] = prepared.inputs["pixel_values"].to(self.model.dtype)
        return prepared

    @torch.inference_mode()
    def vision(self, prepared: Prepared) -> VisionResult:
        x = prepared.inputs
        if self.config is None:
            return self._stock_vision(x)
        pruned = prune_inputs(
            self.model, x["input_ids"], x.get("attention_mask"), x["pixel_values"], x.get("image_sizes"), self.config, self.ops
        )
        return VisionResult(
            features=pruned.features, sequence=pruned.sequence,
            kept_tokens=pruned.kept_tokens, full_tokens=pruned.full_tokens,
        )

    def _stock_vision(self, x: dict[str, torch.Tensor]) -> VisionResult:
        """HF's own get_image_features (NeXT: packed with newlines), laid out with nothing pruned."""
        cfg = self.model.config
        if self.stock_graph is not None:
            per_image = self.stock_graph(x["pixel_values"])
        else:
            is_next = isinstance(self.model, LlavaNextForConditionalGeneration)
            per_image = stock_image_features(self.model, x["pixel_values"], x["image_sizes"] if is_next else None)
        lengths = torch.tensor([len(f) for f in per_image], device=x["input_ids"].device)  # [M]
        sequence = prune_sequence(
            x["input_ids"], x.get("attention_mask"), cfg.image_token_id, lengths, lengths, pad_id_of(cfg)
        )
        return VisionResult(features=torch.cat(per_image), sequence=sequence, kept_tokens=lengths, full_tokens=lengths)

    @torch.inference_mode()
    def prefill(self, prepared: Prepared, vision: VisionResult) -> PrefillResult:
        """LLM over the pruned sequence -> greedy first token [B] + KV cache."""
        seq = vision.sequence
        embeds = seq.embeds(self.model.get_input_embeddings(), vision.features)  # [B, T, D]
        if self.lm is not None:
            first, state = self.lm.prefill(embeds, seq.attention_mask, seq.position_ids)
            return PrefillResult(first_tokens=first, state=state)
        out = self.model(
            inputs_embeds=embeds, attention_mask=seq.attention_mask, position_ids=seq.position_ids,
            use_cache=True, logits_to_keep=1,
        )
        first = out.logits[:, -1].argmax(-1)  # [B]
        return PrefillResult(first_tokens=first, state=DecodeState(out.past_key_values, seq.attention_mask, seq.position_ids[:, -1]))

    @torch.inference_mode()
    def decode(
        self, prefill: PrefillResult, new_tokens: int, on_step: Callable[[torch.Tensor], bool] | None = None
    ) -> torch.Tensor:
        """Exactly `new_tokens` greedy tokens after the first one: [B, new_tokens]. Consumes the prefill's cache.

        on_step(tokens [B]) is called after each step; returning True stops there (a server whose requests all
        ended), and the tokens so far come back: [B, steps run].
        """
        if self.lm is not None:
            return self.lm.decode(prefill.first_tokens, prefill.state, new_tokens, on_step)
        state: DecodeState = prefill.state
        token, mask, position, cache = prefill.first_tokens, state.attention_mask, state.last_position, state.cache
        generated = []
        for _ in range(new_tokens):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [B, T + i + 1]
            position = position + 1  # [B]
            out = self.model(
                input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                past_key_values=cache, use_cache=True, logits_to_keep=1,
            )
            cache = out.past_key_values
            token = out.logits[:, -1].argmax(-1)  # [B]
            generated.append(token)
            if on_step is not None and on_step(token):
                break
        return stack_tokens(generated, token)  # [B, new_tokens]
