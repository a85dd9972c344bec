"""HIVTPConfig: the one object that flows through scoring, selection, export and runtime.

Geometry (grid side, patch count, encoder depth) is never stored here: it is derived from the
vision config of the model at hand, so the same config works for 24x24, 27x27 or tiny towers. The
default score layers are relative for the same reason: `for_tower` resolves them against the tower.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

RELATIVE = "relative"
POSITIONS = ("renumbered", "original")  # position ids of a pruned sequence: deployed layout, or an ablation
PAPER_SCORE_LAYERS, PAPER_DEPTH = (6, 7, 8), 24  # the paper's score layers, in CLIP ViT-L's 24 layers


INT32_MAX = 2**31 - 1  # the largest int an engine's plugin field or a server's INT32 tensor carries


def is_int(value: Any) -> bool:
    """An int that is not a bool (True is an int to Python, never a count or a layer here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_tower(num_layers: Any, feature_layer: Any = None) -> None:
    """A tower's depth (a positive int) and, if given, its feature layer (an int or a non-empty list of ints)."""
    if not is_int(num_layers) or num_layers <= 0:
        raise ValueError(f"a vision tower needs at least one layer, got {num_layers!r}")
    layers = feature_layer if isinstance(feature_layer, (list, tuple)) else [feature_layer]
    if feature_layer is not None and not (layers and all(is_int(x) for x in layers)):
        raise ValueError(f"feature_layer must be an int or a non-empty list of ints, got {feature_layer!r}")


def relative_score_layers(num_layers: int, feature_layer: int | list[int]) -> tuple[int, ...]:
    """The paper's score layers at the same relative depth of a `num_layers`-layer tower.

    Rule: as many consecutive layers as the paper scores (3), starting at the paper's depth
    (6/24 = a quarter: layer floor(6 * L / 24)), keeping only layers below the one that computes the
    feature layer hidden_states[feature_layer] (its attention is the feature layer's own). Consecutive
    layers never collide; the count, and so the cost of scoring, does not grow with depth. Towers too
    shallow for any such layer score with the layer just before that one (layer 0 at least).
    24 layers -> 6, 7, 8; 10 -> 2, 3, 4; 12 -> 3, 4, 5; 32 -> 8, 9, 10; 48 -> 12, 13, 14; 4 -> 1.
    """
    check_tower(num_layers, feature_layer)
    if feature_layer is None:
        raise ValueError("the tower's feature layer is needed to place relative score layers, got None")
    hidden = [feature_layer] if is_int(feature_layer) else list(feature_layer)
    producer = min(h % (num_layers + 1) for h in hidden) - 1  # encoder layer whose output is the feature layer
    start = PAPER_SCORE_LAYERS[0] * num_layers // PAPER_DEPTH
    layers = tuple(x for x in range(start, start + len(PAPER_SCORE_LAYERS)) if x < min(producer, num_layers))
    return layers or (max(min(producer, num_layers) - 1, 0),)


@dataclass(frozen=True)
class HIVTPConfig:
    """Hyper-parameters of HIVTP pruning.

    score_layers: 0-based encoder layers whose self-attention scores the tokens, or "relative" (default):
        the paper's layers 6, 7, 8 of a 24-layer tower, at the same relative depth of the tower at hand
        (`relative_score_layers`; 24-layer towers get exactly 6, 7, 8). Resolve with `for_tower`.
    regions: (rows, cols) of the global stage's region split of the patch grid.
    global_ratio: fraction of each region kept by the global stage (paper mode only).
    window: side of the local stage's windows (paper mode only).
    budget: None for paper mode; an int for exactly min(budget, patches) tokens per image (per crop
        for LLaVA-NeXT). Budget mode is this project's extension, not part of the paper.
    feature_layer: None to use the model's own `vision_feature_layer`; a value that differs from
        the model's is refused (it exists so exports and manifests can pin it).
    positions: "renumbered" (default, the deployed layout of every backend): the pruned sequence is
        numbered 0, 1, 2, ... as if it had always been that short; "original": each kept token keeps
        its unpruned position id, gaps and all (an ablation; torch backend only).
    """

    score_layers: tuple[int, ...] | str = RELATIVE
    regions: tuple[int, int] = (2, 2)
    global_ratio: float = 0.25
    window: int = 2
    budget: int | None = None
    feature_layer: int | None = None
    positions: str = POSITIONS[0]

    def __post_init__(self) -> None:
        layers = self.score_layers
        if isinstance(layers, str):
            if layers != RELATIVE:
                raise ValueError(f"score_layers must be {RELATIVE!r} or a tuple of layer indices, got {layers!r}")
        elif not isinstance(layers, (tuple, list)) or not layers or not all(is_int(x) and x >= 0 for x in layers):
            raise ValueError(f"score_layers must be {RELATIVE!r} or a non-empty tuple of layer indices >= 0, got {layers!r}")
        elif len(set(layers)) != len(layers):
            raise ValueError(f"score_layers must not repeat a layer, got {layers!r}")
        else:
            object.__setattr__(self, "score_layers", tuple(layers))
        regions = self.regions
        if not isinstance(regions, (tuple, list)) or len(regions) != 2 or not all(is_int(x) and x > 0 for x in regions):
            raise ValueError(f"regions must be two positive ints (rows, cols), got {regions!r}")
        object.__setattr__(self, "regions", tuple(regions))
        ratio = self.global_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise ValueError(f"global_ratio must be a number in [0, 1], got {ratio!r}")
        object.__setattr__(self, "global_ratio", float(ratio) + 0.0)  # + 0.0: -0.0 is 0.0 (as written to manifests)
        if not is_int(self.window) or self.window <= 0:
            raise ValueError(f"window must be a positive int, got {self.window!r}")
        if self.budget is not None and (not is_int(self.budget) or self.budget <= 0):
            raise ValueError(f"budget must be a positive int or None, got {self.budget!r}")
        if self.feature_layer is not None and not is_int(self.feature_layer):
            raise ValueError(f"feature_layer must be an int or None, got {self.feature_layer!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")

    @property
    def mode(self) -> str:
        return "paper" if self.budget is None else "budget"

    def global_quota(self, region_size: int, num_regions: int) -> int:
        """Tokens the global stage keeps in one region of `region_size` tokens."""
        if self.budget is None:
            # round() guards against 0.29 * 100 = 28.999999999999996 flooring to 28
            return math.floor(round(self.global_ratio * region_size, 9))
        return min(self.budget // (2 * num_regions), region_size)

    @property
    def layers(self) -> tuple[int, ...]:
        """The explicit score layers; a relative config must be resolved (`for_tower`) first."""
        if isinstance(self.score_layers, str):
            raise ValueError("score_layers='relative' depends on the vision tower: resolve it with HIVTPConfig.for_tower first")
        return self.score_layers

    def for_tower(self, num_layers: int, feature_layer: int | list[int]) -> "HIVTPConfig":
        """This config with explicit score layers for a tower of `num_layers` layers whose features
        are hidden_states[feature_layer]: relative layers resolved, explicit ones checked and kept."""
        if isinstance(self.score_layers, str):
            return replace(self, score_layers=relative_score_layers(num_layers, feature_layer))
        check_tower(num_layers, feature_layer)
        self.check_encoder(num_layers)
        return self

    def check_encoder(self, num_layers: int) -> None:
        """Refuse score layers the encoder does not have (relative layers always fit)."""
        check_tower(num_layers)
        if isinstance(self.score_layers, str):
            return
        deepest = max(self.score_layers)
        if deepest >= num_layers:
            raise ValueError(
                f"score_layers {self.score_layers} go beyond the vision encoder's {num_layers} layers "
                f"(0-based, so the deepest allowed is {num_layers - 1})"
            )

    def resolve_feature_layer(self, model_layer: int | list[int], num_hidden_states: int) -> int | list[int]:
        """The feature layer to use: the model's own, or ours if it names the same layer."""
        if self.feature_layer is None:
            return model_layer
        if isinstance(model_layer, int) and self.feature_layer % num_hidden_states == model_layer % num_hidden_states:
            return model_layer
        raise ValueError(
            f"feature_layer={self.feature_layer} conflicts with the model's vision_feature_layer={model_layer}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HIVTPConfig":
        if not isinstance(data, dict):
            raise ValueError(f"a HIVTPConfig is read from a dict of its fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown HIVTPConfig fields: {unknown}")
        return cls(**data)
