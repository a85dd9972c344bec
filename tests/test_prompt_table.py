"""TensorRT-LLM prompt tables rebuild exactly the torch backend's LLM input (CPU, no TensorRT needed).

The oracle is TensorRT-LLM's lookup rule (`PromptTuningEmbedding.forward`, tensorrt_llm/layers/embedding.py):
an id >= vocab_size reads row (id - vocab_size) of its request's table, any other id the token
embedding. Applied to our per-request ids and tables it must give, position for position, the
`inputs_embeds` that `prune_inputs` feeds the HF LLM (unpadded positions only).
"""

from __future__ import annotations

import pytest
import torch

from helpers import torch_vision
from hivtp import HIVTPConfig
from hivtp.runtime.hf import prune_inputs
from hivtp.runtime.layout import crops_per_image, flatten_crops, split_kept
from hivtp.runtime.prompt_table import build_prompt_tables, pruned_layout

PROMPTS = ["USER: <image> what color is the circle ? ASSISTANT:", "<image> describe"]
TWO_IN_FIRST = ["USER: <image> and <image> which is left ? ASSISTANT:", "<image> describe"]  # 3 images
BUDGETS = [None, 5]  # paper mode, and a budget


def trtllm_lookup(ids: torch.Tensor, table: torch.Tensor, embedding: torch.nn.Module, vocab_size: int) -> torch.Tensor:
    """TensorRT-LLM's rule for one request: [L] ids, [rows, D] table -> [L, D]."""
    fake = ids >= vocab_size
    text = embedding(ids.masked_fill(fake, 0))  # [L, D]
    image = table[(ids - vocab_size).clamp(min=0)].to(text.dtype)  # [L, D]
    return torch.where(fake[:, None], image, text)


def pruned_batch(model, processor, images, budget, prompts=PROMPTS):
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    assert (inputs["attention_mask"][:, 0] == 0).any(), "the batch must be left padded"
    config = HIVTPConfig(budget=budget)
    return inputs, prune_inputs(
        model, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"], inputs.get("image_sizes"), config
    )


@torch.inference_mode()
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("two_in_first", [False, True], ids=["one-image-each", "two-images-in-first"])
def test_lookup_rule_reproduces_torch_inputs_embeds(tiny, two_images, budget, two_in_first) -> None:
    kind, model, processor = tiny
    images = [*two_images, two_images[0].rotate(180)] if two_in_first else two_images
    inputs, pruned = pruned_batch(model, processor, images, budget, TWO_IN_FIRST if two_in_first else PROMPTS)
    vocab = model.config.text_config.vocab_size
    prompts = build_prompt_tables(pruned.sequence, pruned.features, vocab)
    embedding = model.get_input_embeddings()
    stacked = prompts.stacked_table(torch.float32)  # [B, R, D], what ModelRunnerCpp.generate receives
    assert prompts.prompt_tasks == "0,1"
    per_request = [int(pruned.kept_tokens[:2].sum()), int(pruned.kept_tokens[2])] if two_in_first else pruned.kept_tokens.tolist()
    if two_in_first:
        assert per_request[0] > per_request[1], "requests with different kept counts"
    for b in range(2):
        valid = pruned.attention_mask[b].bool()
        expected = pruned.inputs_embeds[b][valid]  # [L_b, D]
        ids, table = prompts.input_ids[b], prompts.tables[b]
        assert ids.shape[0] == int(valid.sum()) and table.shape[0] == per_request[b]
        assert torch.equal(trtllm_lookup(ids, table, embedding, vocab), expected)
        assert torch.equal(trtllm_lookup(ids, stacked[b], embedding, vocab), expected)  # padded rows unread
        fake = ids[ids >= vocab]
        assert torch.equal(fake, vocab + torch.arange(len(fake))), "per-request local ids from vocab_size"
        original = inputs["input_ids"][b][inputs["attention_mask"][b].bool()]
        text = original != model.config.image_token_id
        assert torch.equal(ids[ids < vocab], original[text]), "text ids unchanged, in order"


@torch.inference_mode()
@pytest.mark.parametrize("budget", BUDGETS)
def test_engine_outputs_give_the_torch_layout(tiny, two_images, budget) -> None:
    """Engine outputs per image / crop -> kept features and pruned sequence: must equal prune_inputs' exactly."""
    kind, model, processor = tiny
    inputs, pruned = pruned_batch(model, processor, two_images, budget)
    newline = model.model.image_newline if kind == "llava_next" else None
    ours = pruned_layout(dict(inputs), model.config, torch_vision(model, HIVTPConfig(budget=budget)), newline)
    assert torch.equal(ours.features, pruned.features)
    assert torch.equal(ours.kept_tokens, pruned.kept_tokens) and torch.equal(ours.full_tokens, pruned.full_tokens)
    for name in ("input_ids", "attention_mask", "position_ids", "feature_rows", "source_positions"):
        assert torch.equal(getattr(ours.sequence, name), getattr(pruned.sequence, name)), name
    if kind == "llava_next":
        num_crops = crops_per_image(
            inputs["image_sizes"], model.config.image_grid_pinpoints, model.config.vision_config.image_size
        )
        assert flatten_crops(inputs["pixel_values"], num_crops).shape[0] == sum(num_crops)
        assert inputs["image_sizes"][0].tolist() != inputs["image_sizes"][1].tolist()


def test_split_kept_keeps_the_first_counts_rows() -> None:
    selected = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)  # [n=2, Kmax=3, D=2]
    out = split_kept(selected, torch.tensor([1, 3], dtype=torch.int32))
    assert torch.equal(out, torch.cat([selected[0, :1], selected[1]]))
    with pytest.raises(ValueError, match="counts must be"):
        split_kept(selected, torch.tensor([4, 0]))


def test_request_without_image_gets_text_ids_and_an_empty_table() -> None:
    from hivtp.runtime.layout import prune_sequence

    ids = torch.tensor([[0, 5, 9, 9, 6], [7, 8, 6, 6, 6]])  # 9 = image token, 0 = pad
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    seq = prune_sequence(ids, mask, 9, torch.tensor([2]), torch.tensor([1]), 0)
    features = torch.randn(1, 4)
    prompts = build_prompt_tables(seq, features, vocab_size=100)
    assert prompts.input_ids[0].tolist() == [5, 100, 6] and prompts.input_ids[1].tolist() == [7, 8, 6, 6, 6]
    assert prompts.tables[1].shape == (0, 4)
    assert prompts.stacked_table(torch.float16).shape == (2, 1, 4)
