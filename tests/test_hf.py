"""HF integration: lossless when nothing is pruned, shorter sequences when something is."""

from __future__ import annotations

import pytest
import torch

import hivtp
from hivtp import HIVTPConfig
from hivtp.runtime.layout import next_image_layout, prune_sequence

PROMPTS = ["USER: <image> what color is the circle ? ASSISTANT:", "<image> describe"]


def batch(processor, images, prompts=PROMPTS):
    return processor(images=images, text=prompts, return_tensors="pt", padding=True)


def hf_positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)


@torch.inference_mode()
def test_nothing_pruned_gives_the_stock_logits(tiny, two_images) -> None:
    kind, model, processor = tiny
    inputs = batch(processor, two_images)
    assert (inputs["attention_mask"][:, 0] == 0).any(), "the batch must be left padded"
    stock = model(**inputs, position_ids=hf_positions(inputs["attention_mask"])).logits
    wrapped = hivtp.apply(model, HIVTPConfig(budget=10**6))
    ours = wrapped(**inputs).logits
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(ours[valid], stock[valid], rtol=1e-5, atol=1e-5)
    assert torch.equal(wrapped.last_pruned.kept_tokens, wrapped.last_pruned.full_tokens)


@torch.inference_mode()
@pytest.mark.parametrize("budget", [None, 5])
def test_pruned_generate_batch_of_two(tiny, two_images, budget) -> None:
    kind, model, processor = tiny
    inputs = batch(processor, two_images)
    wrapped = hivtp.apply(model, HIVTPConfig(budget=budget))
    out = wrapped.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    S = inputs["input_ids"].shape[1]
    assert out.shape == (2, S + 4) and torch.equal(out[:, :S], inputs["input_ids"])
    pruned = wrapped.last_pruned
    assert (pruned.kept_tokens < pruned.full_tokens).all()
    shrink = (pruned.full_tokens - pruned.kept_tokens)
    assert pruned.attention_mask.sum(1).tolist() == (inputs["attention_mask"].sum(1) - shrink).tolist()
    if budget is not None and kind == "llava":
        assert pruned.counts.tolist() == [budget, budget]
    for row in range(2):  # row b of the batch equals prompt b alone
        alone = batch(processor, two_images[row : row + 1], PROMPTS[row : row + 1])
        single = wrapped.generate(**alone, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert torch.equal(single[0, alone["input_ids"].shape[1] :], out[row, S:])


@torch.inference_mode()
def test_labels_shrink_with_the_sequence(tiny, two_images) -> None:
    _, model, processor = tiny
    inputs = batch(processor, two_images)
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    wrapped = hivtp.apply(model, HIVTPConfig())
    out = wrapped(**inputs, labels=labels)
    seq = wrapped.last_pruned.sequence
    text = seq.feature_rows < 0
    assert torch.isfinite(out.loss)
    shrunk = seq.shrink(labels, fill=-100)
    assert torch.equal(shrunk[text & (seq.attention_mask == 1)], seq.input_ids[text & (seq.attention_mask == 1)])


@torch.inference_mode()
def test_two_images_in_one_prompt(tiny, two_images) -> None:
    kind, model, processor = tiny
    inputs = processor(images=two_images, text=["<image> and <image> ?"], return_tensors="pt")
    stock = model(**inputs).logits
    ours = hivtp.apply(model, HIVTPConfig(budget=10**6))(**inputs).logits
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)


def test_layout_keeps_first_k_of_each_run_and_repads_left() -> None:
    I = 9  # image token id
    ids = torch.tensor([[0, 5, I, I, I, 6], [5, I, I, I, I, I]])  # row 0 left padded; row 1 holds 2 images
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    seq = prune_sequence(ids, mask, I, full_lengths=torch.tensor([3, 3, 2]), kept_lengths=torch.tensor([1, 2, 1]), pad_token_id=0)
    assert seq.input_ids.tolist() == [[0, 5, I, 6], [5, I, I, I]]
    assert seq.attention_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert seq.feature_rows.tolist() == [[-1, -1, 0, -1], [-1, 1, 2, 3]]
    assert seq.source_positions.tolist() == [[-1, 1, 2, 5], [0, 1, 2, 4]]
    assert seq.position_ids.tolist() == [[1, 0, 1, 2], [0, 1, 2, 3]]


def test_layout_refuses_a_token_count_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="tokens 2, features 3"):
        prune_sequence(torch.tensor([[9, 9]]), None, 9, torch.tensor([3]), torch.tensor([1]), 0)


def test_next_layout_newline_only_after_rows_that_keep_a_token() -> None:
    P, grid = 4, (2, 2)  # 2x2 patches per crop; one base crop + 1x2 crops -> a 2x4 big grid
    kept = torch.zeros(3, P, dtype=torch.bool)
    kept[0, 3] = True  # base: patch 3
    kept[1, 1] = kept[2, 0] = True  # top row of the big grid: crop 1 patch 1, crop 2 patch 0
    ids = next_image_layout(kept, grid, (1, 2), torch.tensor([20, 40]))  # wide image: no padding removed
    assert ids.tolist() == [3, 5, 8, -1]
    full = next_image_layout(torch.ones_like(kept), grid, (1, 2), torch.tensor([20, 40]))
    assert len(full) == P + 2 * (4 + 1)


def test_refuses_models_it_cannot_prune(tiny) -> None:
    _, model, _ = tiny
    with pytest.raises(ValueError, match="supports LLaVA-1.5 and LLaVA-NeXT"):
        hivtp.apply(model.model.language_model)
    model.config.vision_feature_select_strategy = "full"
    try:
        with pytest.raises(ValueError, match="'full' is not supported"):
            hivtp.apply(model)
    finally:
        model.config.vision_feature_select_strategy = "default"


def test_refuses_a_conflicting_feature_layer(tiny, two_images) -> None:
    _, model, processor = tiny
    inputs = batch(processor, two_images)
    with pytest.raises(ValueError, match="conflicts with the model's vision_feature_layer=-2"):
        hivtp.apply(model, HIVTPConfig(feature_layer=3))(**inputs)
    hivtp.apply(model, HIVTPConfig(feature_layer=9))(**inputs)  # -2 of 11 hidden states is layer 9
