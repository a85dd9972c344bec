"""HIVTPConfig: validated on construction, errors name the field and the value."""

from __future__ import annotations

import dataclasses

import pytest

from hivtp import HIVTPConfig


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
    ],
)
def test_invalid_values_are_refused_with_field_and_value(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        HIVTPConfig(**kwargs)


def test_defaults_are_the_paper_settings_and_frozen() -> None:
    cfg = HIVTPConfig()
    assert (cfg.score_layers, cfg.regions, cfg.global_ratio, cfg.window, cfg.budget) == ((6, 7, 8), (2, 2), 0.25, 2, None)
    assert cfg.mode == "paper" and HIVTPConfig(budget=64).mode == "budget"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.budget = 3  # type: ignore[misc]


def test_lists_become_tuples_so_configs_hash() -> None:
    assert hash(HIVTPConfig(score_layers=[1, 2], regions=[3, 3])) == hash(HIVTPConfig(score_layers=(1, 2), regions=(3, 3)))


def test_round_trip_and_unknown_fields() -> None:
    cfg = HIVTPConfig(budget=64, regions=(3, 2))
    assert HIVTPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown HIVTPConfig fields: \\['ratio'\\]"):
        HIVTPConfig.from_dict({"ratio": 0.5})


def test_quota_and_encoder_depth() -> None:
    assert HIVTPConfig().global_quota(144, 4) == 36
    assert HIVTPConfig(global_ratio=0.29).global_quota(100, 4) == 29  # not 28 from 28.999999999999996
    assert HIVTPConfig(budget=100).global_quota(144, 4) == 12
    HIVTPConfig().check_encoder(9)
    with pytest.raises(ValueError, match="beyond the vision encoder's 8 layers"):
        HIVTPConfig().check_encoder(8)
