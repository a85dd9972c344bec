"""HIVTPConfig: the one object that flows through scoring, selection, export and runtime.

Geometry (grid side, patch count, encoder depth) is never stored here: it is derived from the
vision config of the model at hand, so the same config works for 24x24, 27x27 or tiny towers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class HIVTPConfig:
    """Hyper-parameters of HIVTP pruning.

    score_layers: 0-based encoder layers whose self-attention scores the tokens (paper: middle layers).
    regions: (rows, cols) of the global stage's region split of the patch grid.
    global_ratio: fraction of each region kept by the global stage (paper mode only).
    window: side of the local stage's windows (paper mode only).
    budget: None for paper mode; an int for exactly min(budget, patches) tokens per image (per crop
        for LLaVA-NeXT). Budget mode is this project's extension, not part of the paper.
    feature_layer: None to use the model's own `vision_feature_layer`; a value that differs from
        the model's is refused (it exists so exports and manifests can pin it).
    """

    score_layers: tuple[int, ...] = (6, 7, 8)
    regions: tuple[int, int] = (2, 2)
    global_ratio: float = 0.25
    window: int = 2
    budget: int | None = None
    feature_layer: int | None = None

    def __post_init__(self) -> None:
        layers = self.score_layers
        if not isinstance(layers, (tuple, list)) or not layers or not all(_is_int(x) and x >= 0 for x in layers):
            raise ValueError(f"score_layers must be a non-empty tuple of layer indices >= 0, got {layers!r}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"score_layers must not repeat a layer, got {layers!r}")
        object.__setattr__(self, "score_layers", tuple(layers))
        regions = self.regions
        if not isinstance(regions, (tuple, list)) or len(regions) != 2 or not all(_is_int(x) and x > 0 for x in regions):
            raise ValueError(f"regions must be two positive ints (rows, cols), got {regions!r}")
        object.__setattr__(self, "regions", tuple(regions))
        ratio = self.global_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise ValueError(f"global_ratio must be a number in [0, 1], got {ratio!r}")
        object.__setattr__(self, "global_ratio", float(ratio))
        if not _is_int(self.window) or self.window <= 0:
            raise ValueError(f"window must be a positive int, got {self.window!r}")
        if self.budget is not None and (not _is_int(self.budget) or self.budget <= 0):
            raise ValueError(f"budget must be a positive int or None, got {self.budget!r}")
        if self.feature_layer is not None and not _is_int(self.feature_layer):
            raise ValueError(f"feature_layer must be an int or None, got {self.feature_layer!r}")

    @property
    def mode(self) -> str:
        return "paper" if self.budget is None else "budget"

    def global_quota(self, region_size: int, num_regions: int) -> int:
        """Tokens the global stage keeps in one region of `region_size` tokens."""
        if self.budget is None:
            # round() guards against 0.29 * 100 = 28.999999999999996 flooring to 28
            return math.floor(round(self.global_ratio * region_size, 9))
        return min(self.budget // (2 * num_regions), region_size)

    def check_encoder(self, num_layers: int) -> None:
        """Refuse score layers the encoder does not have."""
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
