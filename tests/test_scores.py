"""Importance scores: the streaming Q/K form equals the attention-probability definition."""

from __future__ import annotations

import pytest
import torch

from hivtp import HIVTPConfig, importance_scores, importance_scores_from_qk
from hivtp.runtime.hf import clip_core, encode_and_score, tower_qk


def probabilities(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[L, B, H, N, d] x2 -> softmax(Q K^T / sqrt(d)) [L, B, H, N, N] in fp64."""
    logits = q.double() @ k.double().transpose(-1, -2) * q.shape[-1] ** -0.5
    return logits.softmax(-1)


@pytest.mark.parametrize("shape,block", [((3, 2, 16, 577, 64), 128), ((1, 3, 2, 65, 8), 16), ((2, 1, 4, 50, 16), 7)])
def test_streaming_equals_probability_form(shape, block) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(shape) * 2, torch.randn(shape) * 2
    streamed = importance_scores_from_qk(q, k, block_size=block)  # [B, P]
    reference = importance_scores(probabilities(q, k)).to(torch.float64)
    torch.testing.assert_close(streamed.double(), reference, rtol=1e-5, atol=0)
    assert streamed.shape == (shape[1], shape[3] - 1) and streamed.dtype == torch.float32


def test_definition_averages_all_rows_including_cls() -> None:
    # uniform attention: every token receives 1/N from every row, whatever L, H
    L, B, H, N = 2, 1, 3, 5
    attn = torch.full((L, B, H, N, N), 1.0 / N)
    torch.testing.assert_close(importance_scores(attn), torch.full((B, N - 1), 1.0 / N))
    assert torch.allclose(importance_scores(list(attn)), importance_scores(attn))


def test_scores_from_a_real_clip_tower_match_its_eager_attentions(tiny) -> None:
    """Q/K rebuilt from layer_norm1(hidden_states[l]) give the tower's own attention maps."""
    _, model, _ = tiny
    tower = model.model.vision_tower
    pixels = torch.randn(2, 3, 112, 112)
    cfg = HIVTPConfig(score_layers=(2, 6, 7))
    scores, features = encode_and_score(tower, pixels, cfg, feature_layer=-2)
    tower.config._attn_implementation = "eager"
    try:
        attentions = tower(pixels, output_attentions=True).attentions  # 10 x [B, H, N, N]
    finally:
        tower.config._attn_implementation = "sdpa"
    expected = importance_scores([attentions[layer] for layer in cfg.score_layers])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-7)
    assert features.shape == (2, 64, tower.config.hidden_size)
    assert len(clip_core(tower).encoder.layers) == 10


def test_rejects_mismatched_q_and_k() -> None:
    with pytest.raises(ValueError, match=r"\[L, B, H, N, d\]"):
        importance_scores_from_qk(torch.zeros(1, 1, 1, 5, 4), torch.zeros(1, 1, 1, 6, 4))


def test_cls_baseline_scores_are_the_cls_row_of_the_feature_layers_attention(tiny) -> None:
    """fidelity's CLS top-k baseline reads the attention of the layer that outputs hidden_states[-2]."""
    from dataclasses import replace

    from hivtp.fidelity import cls_attention, method_setup
    _, model, _ = tiny
    tower = model.model.vision_tower
    pixels = torch.randn(2, 3, 112, 112)
    config, ops = method_setup("cls", model, HIVTPConfig(budget=8), torch.Generator())
    assert config.score_layers == (8,) and ops.score is cls_attention  # 10 layers, feature layer -2
    queries, keys, _ = tower_qk(tower, pixels, config, feature_layer=-2)
    tower.config._attn_implementation = "eager"
    try:
        attentions = tower(pixels, output_attentions=True).attentions  # 10 x [B, H, N, N]
    finally:
        tower.config._attn_implementation = "sdpa"
    torch.testing.assert_close(cls_attention(queries, keys), attentions[8][:, :, 0, 1:].mean(dim=1), rtol=1e-5, atol=1e-7)
    indices, counts = ops.select(cls_attention(queries, keys), (8, 8), replace(config, budget=8))
    assert counts.tolist() == [8, 8] and (indices.diff(dim=1) > 0).all()


@torch.inference_mode()
def test_qk_come_from_the_forward_and_equal_a_recomputation(tiny) -> None:
    """The hooked q_proj / k_proj outputs are what layer_norm1(hidden_states[l]) -> q_proj / k_proj gives, bit for bit."""
    _, model, _ = tiny
    tower = model.model.vision_tower
    pixels = torch.randn(2, 3, 112, 112)
    cfg = HIVTPConfig(score_layers=(0, 6, 9))
    queries, keys, _ = tower_qk(tower, pixels, cfg, feature_layer=-2)
    hidden = tower(pixels, output_hidden_states=True).hidden_states
    for i, layer in enumerate(cfg.score_layers):
        block = clip_core(tower).encoder.layers[layer]
        x = block.layer_norm1(hidden[layer])  # [B, N, Dv]
        split = (2, x.shape[1], block.self_attn.num_heads, block.self_attn.head_dim)
        assert torch.equal(queries[i], block.self_attn.q_proj(x).view(split).transpose(1, 2))
        assert torch.equal(keys[i], block.self_attn.k_proj(x).view(split).transpose(1, 2))


def test_qk_hooks_are_removed_even_when_the_forward_fails(tiny) -> None:
    _, model, _ = tiny
    tower = model.model.vision_tower
    projections = [getattr(layer.self_attn, name) for layer in clip_core(tower).encoder.layers for name in ("q_proj", "k_proj")]
    with pytest.raises(Exception):
        tower_qk(tower, torch.randn(1, 3, 5, 5), HIVTPConfig(), feature_layer=-2)  # too small for one patch
    assert not any(p._forward_hooks for p in projections)
    tower_qk(tower, torch.randn(1, 3, 112, 112), HIVTPConfig(), feature_layer=-2)
    assert not any(p._forward_hooks for p in projections)
