"""HIVTPConfig: validated on construction, errors name the field and the value."""

from __future__ import annotations

import dataclasses
import json

import pytest

from hivtp import HIVTPConfig
from hivtp.config import relative_score_layers


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"score_layers": ()}, "score_layers"),
        ({"score_layers": (6, -1)}, r"score_layers .*\(6, -1\)"),
        ({"score_layers": (6, 6)}, "must not repeat"),
        ({"regions": (2,)}, r"regions .*\(2,\)"),
        ({"regions": (0, 2)}, "regions"),
        ({"global_ratio": 1.5}, "global_ratio .*1.5"),
        ({"global_ratio": True}, "global_ratio"),
        ({"window": 0}, "window .*0"),
        ({"budget": 0}, "budget .*0"),
        ({"budget": 2.5}, "budget .*2.5"),
        ({"budget": True}, "budget"),
        ({"feature_layer": "x"}, "feature_layer"),
        ({"score_layers": "6-8"}, r"score_layers must be 'relative' or .*'6-8'"),
        ({"score_layers": ""}, "score_layers"),
        ({"score_layers": None}, "score_layers"),
        ({"score_layers": (2.0, 3)}, "score_layers"),
        ({"positions": "compact"}, r"positions must be one of .*'compact'"),
        ({"positions": None}, "positions"),
    ],
)
def test_invalid_values_are_refused_with_field_and_value(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        HIVTPConfig(**kwargs)


def test_defaults_are_the_paper_settings_and_frozen() -> None:
    cfg = HIVTPConfig()
    assert (cfg.score_layers, cfg.regions, cfg.global_ratio, cfg.window, cfg.budget) == ("relative", (2, 2), 0.25, 2, None)
    assert cfg.for_tower(24, -2).score_layers == (6, 7, 8) and cfg.positions == "renumbered"
    assert cfg.mode == "paper" and HIVTPConfig(budget=64).mode == "budget"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.budget = 3  # type: ignore[misc]


def test_lists_become_tuples_so_configs_hash() -> None:
    assert hash(HIVTPConfig(score_layers=[1, 2], regions=[3, 3])) == hash(HIVTPConfig(score_layers=(1, 2), regions=(3, 3)))


def test_round_trip_and_unknown_fields() -> None:
    for cfg in (HIVTPConfig(budget=64, regions=(3, 2)), HIVTPConfig(score_layers=(1, 4), positions="original")):
        assert HIVTPConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown HIVTPConfig fields: \\['ratio'\\]"):
        HIVTPConfig.from_dict({"ratio": 0.5})


def test_quota_and_encoder_depth() -> None:
    assert HIVTPConfig().global_quota(144, 4) == 36
    assert HIVTPConfig(global_ratio=0.29).global_quota(100, 4) == 29  # not 28 from 28.999999999999996
    assert HIVTPConfig(budget=100).global_quota(144, 4) == 12
    HIVTPConfig(score_layers=(6, 7, 8)).check_encoder(9)
    HIVTPConfig().check_encoder(1)  # relative layers fit every tower
    with pytest.raises(ValueError, match="beyond the vision encoder's 8 layers"):
        HIVTPConfig(score_layers=(6, 7, 8)).check_encoder(8)
    with pytest.raises(ValueError, match="beyond the vision encoder's 8 layers"):
        HIVTPConfig(score_layers=(6, 7, 8)).for_tower(8, -2)


@pytest.mark.parametrize("depth, layers", [(10, (2, 3, 4)), (12, (3, 4, 5)), (24, (6, 7, 8)), (32, (8, 9, 10)), (48, (12, 13, 14))])
def test_relative_layers_are_the_papers_depth(depth, layers) -> None:
    """Three consecutive layers from a quarter of the depth (the paper's 6 of 24); 24 layers: exactly 6, 7, 8."""
    assert relative_score_layers(depth, -2) == layers
    assert HIVTPConfig(budget=8).for_tower(depth, -2) == HIVTPConfig(budget=8, score_layers=layers)


@pytest.mark.parametrize("depth, feature_layer, layers", [
    (4, -2, (1,)),  # layers 2 and 3 compute or follow the feature layer hidden_states[3]
    (5, -2, (1, 2)),
    (3, -2, (0,)),
    (2, -2, (0,)),  # no layer precedes layer 0, which computes the feature layer: layer 0 still scores
    (1, -1, (0,)),
    (10, 4, (2,)),  # hidden_states[4] is layer 3's output: 3 and 4 are cut
    (10, 2, (0,)),  # start 2 is past layer 1, which computes hidden_states[2]: the layer before it
    (10, [-2, 3], (1,)),  # several feature layers: the shallowest one (layer 2 computes it) bounds
    (24, -1, (6, 7, 8)),
])
def test_relative_layers_stop_before_the_feature_layer(depth, feature_layer, layers) -> None:
    assert relative_score_layers(depth, feature_layer) == layers


def test_relative_layers_never_collide_and_stay_inside_the_tower() -> None:
    for depth in range(1, 97):
        for feature_layer in (-1, -2, depth // 2):
            layers = relative_score_layers(depth, feature_layer)
            assert layers and len(set(layers)) == len(layers) <= 3 and list(layers) == sorted(layers)
            assert all(0 <= x < depth for x in layers)
            producer = feature_layer % (depth + 1) - 1
            assert all(x < producer for x in layers) or layers == (max(producer - 1, 0),)


def test_explicit_layers_keep_working_and_relative_needs_a_tower() -> None:
    explicit = HIVTPConfig(score_layers=(6, 7, 8))
    assert explicit.for_tower(10, -2) is explicit and explicit.layers == (6, 7, 8)
    with pytest.raises(ValueError, match="resolve it with HIVTPConfig.for_tower"):
        HIVTPConfig().layers
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="at least one layer"):
            relative_score_layers(bad, -2)
