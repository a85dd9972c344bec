"""The layout ablation `HIVTPConfig(positions='original')`: every kept token keeps the position id it had
before pruning (text after the image too); torch only. Checked against the unpruned sequence itself."""

from __future__ import annotations

import pytest
import torch

from hivtp import HIVTPConfig
from hivtp.runtime import trtllm
from hivtp.runtime.hf import apply, prune_inputs
from hivtp.runtime.torch_backend import TorchBackend

PROMPT = "USER: what is it ? <image> ASSISTANT:"


def inputs_of(processor, images, prompts):
    return processor(images=images, text=prompts, padding=True, return_tensors="pt")


def pruned(model, inputs, **config):
    return prune_inputs(model, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"],
                        inputs.get("image_sizes"), HIVTPConfig(**config))


@torch.inference_mode()
@pytest.mark.parametrize("budget", [1, 5, 23])
def test_kept_tokens_sit_at_their_unpruned_positions(tiny, two_images, budget) -> None:
    """One row, no padding: the token at pruned slot t is the unpruned sequence's token at position
    position_ids[t] (NeXT: crops, unpadding and newlines included), and the ids strictly increase."""
    _, model, processor = tiny
    for image in two_images:
        inputs = inputs_of(processor, [image], [PROMPT])
        full = pruned(model, inputs, budget=10**6)  # every patch kept: the unpruned sequence
        kept = pruned(model, inputs, budget=budget, positions="original")
        positions = kept.position_ids[0]  # [T]
        assert bool((positions[1:] > positions[:-1]).all())
        torch.testing.assert_close(kept.inputs_embeds[0], full.inputs_embeds[0][positions])  # GEMM shapes differ: 1e-8
        assert int(positions[-1]) == inputs["input_ids"].shape[1] - 1  # the prompt's end keeps its position
        if hasattr(model.model, "image_newline"):  # a kept newline is its own row's: none lies in between
            is_newline = (full.inputs_embeds[0] == model.model.image_newline).all(-1)  # [S]
            for t in torch.nonzero((kept.inputs_embeds[0] == model.model.image_newline).all(-1)).flatten().tolist():
                assert not is_newline[int(positions[t - 1]) + 1 : int(positions[t])].any()
        renumbered = pruned(model, inputs, budget=budget)
        assert torch.equal(renumbered.inputs_embeds, kept.inputs_embeds)
        assert renumbered.position_ids[0].tolist() == list(range(kept.position_ids.shape[1]))


@torch.inference_mode()
def test_padded_rows_match_single_rows(tiny, two_images) -> None:
    _, model, processor = tiny
    prompts = [PROMPT, "USER: a much longer question about the picture here ? <image> ASSISTANT:"]
    batch = pruned(model, inputs_of(processor, two_images, prompts), budget=7, positions="original")
    for row, (image, prompt) in enumerate(zip(two_images, prompts)):
        alone = pruned(model, inputs_of(processor, [image], [prompt]), budget=7, positions="original")
        mask = batch.attention_mask[row].bool()
        assert batch.position_ids[row][mask].tolist() == alone.position_ids[0].tolist()
        assert set(batch.position_ids[row][~mask].tolist()) <= {1}  # pads: HF generate's rule


@torch.inference_mode()
def test_nothing_pruned_is_the_deployed_layout(tiny, two_images) -> None:
    _, model, processor = tiny
    inputs = inputs_of(processor, two_images, [PROMPT, PROMPT])
    assert torch.equal(pruned(model, inputs, budget=10**6, positions="original").position_ids,
                       pruned(model, inputs, budget=10**6).position_ids)


@torch.inference_mode()
def test_torch_backend_decodes_on_from_the_original_positions(tiny, two_images) -> None:
    _, model, processor = tiny
    backend = TorchBackend(model, processor, HIVTPConfig(budget=3, positions="original"))
    prepared = backend.prepare(two_images[:1], ["what is it ?"])
    vision = backend.vision(prepared)
    prefill = backend.prefill(prepared, vision)
    assert int(prefill.state.last_position[0]) == prepared.inputs["input_ids"].shape[1] - 1
    assert backend.decode(prefill, 2).shape == (1, 2)


def test_hf_generate_and_tensorrt_llm_refuse_it(tiny, two_images) -> None:
    _, model, processor = tiny
    inputs = inputs_of(processor, two_images[:1], [PROMPT])
    with pytest.raises(ValueError, match="positions='original' works in forward and the torch backend"):
        apply(model, HIVTPConfig(budget=3, positions="original")).generate(**inputs, max_new_tokens=1)
    with pytest.raises(ValueError) as err:
        trtllm.check_positions(HIVTPConfig(positions="original"))
    assert "\n" not in str(err.value) and "torch-backend ablation" in str(err.value)
    assert trtllm.check_positions(HIVTPConfig()) == HIVTPConfig()
