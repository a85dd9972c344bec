"""The one list of TensorRT plugin fields (= ONNX node attributes) of the hivtp plugins.

Each field name is the `HIVTPConfig` field it carries (or, for the grid, the name of the derived
quantity), so ONNX attribute = plugin field = config field. This list is the source of truth:
`tests/test_plugin_fields.py` checks the C++ creators (`plugins/hivtpPlugin/`, via the test binary's
`--print-fields`) and the README parameter table against it, and the ONNX exporter writes exactly
these attributes.

Encoding rules (the ONNX parser maps INT/INTS -> kINT32 and FLOAT -> kFLOAT32; the creators also
accept kINT64 and kFLOAT64 for the same fields):
- `budget`: None (paper mode) is written as 0.
- `grid_h`, `grid_w`: the patch grid (h, w); 0 and 0 mean "square grid, side = sqrt(P)" (P must then
  be a build-time constant). Not `HIVTPConfig` fields: the grid is derived from the vision config.
- `feature_layer` is no plugin field: it picks which hidden state feeds Select's `features` input,
  which the exporter resolves before the plugin exists (see CONFIG_ONLY_FIELDS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hivtp.config import INT32_MAX, PAPER_SCORE_LAYERS, HIVTPConfig

SCORE, SELECT = "Score", "Select"
PLUGIN_NAMESPACE = "hivtp"
PLUGIN_VERSION = "1"


@dataclass(frozen=True)
class PluginFieldSpec:
    name: str  # plugin field name = ONNX attribute name
    trt_type: str  # nvinfer1::PluginFieldType the ONNX parser delivers (kINT32 / kFLOAT32)
    onnx_type: str  # ONNX AttributeProto type the exporter writes (INT / INTS / FLOAT)
    plugins: tuple[str, ...]  # which creators declare it
    default: Any  # value the creator uses when the attribute is absent (encoded form)
    description: str
    config_field: bool = True  # a HIVTPConfig field of the same name


PLUGIN_FIELDS: tuple[PluginFieldSpec, ...] = (
    PluginFieldSpec(
        "score_layers", "kINT32", "INTS", (SCORE,), PAPER_SCORE_LAYERS,
        "encoder layers whose attention scores the tokens; the L axis of queries/keys must have this length",
    ),
    PluginFieldSpec(
        "regions", "kINT32", "INTS", (SELECT,), HIVTPConfig.regions,
        "(rows, cols) of the global stage's region split, each > 0 (capped by the grid)",
    ),
    PluginFieldSpec(
        "global_ratio", "kFLOAT32", "FLOAT", (SELECT,), HIVTPConfig.global_ratio,
        "fraction of each region kept by the global stage, in [0, 1] (paper mode)",
    ),
    PluginFieldSpec(
        "window", "kINT32", "INT", (SELECT,), HIVTPConfig.window,
        "side of the local stage's windows, > 0 (paper mode)",
    ),
    PluginFieldSpec(
        "budget", "kINT32", "INT", (SELECT,), 0,
        "tokens kept per image, min(budget, P); 0 encodes None = paper mode",
    ),
    PluginFieldSpec(
        "grid_h", "kINT32", "INT", (SELECT,), 0,
        "patch grid rows h (P = h * w); 0 with grid_w = 0: square grid from P", config_field=False,
    ),
    PluginFieldSpec(
        "grid_w", "kINT32", "INT", (SELECT,), 0,
        "patch grid columns w; 0 with grid_h = 0: square grid from P", config_field=False,
    ),
)

# Tensor order of each plugin's inputs and outputs (ONNX node inputs/outputs in this order).
PLUGIN_IO: dict[str, dict[str, tuple[str, ...]]] = {
    SCORE: {"inputs": ("queries", "keys"), "outputs": ("scores",)},
    SELECT: {"inputs": ("scores", "features"), "outputs": ("selected", "counts", "indices")},
}

# HIVTPConfig fields that are deliberately not plugin fields, with the reason.
CONFIG_ONLY_FIELDS: dict[str, str] = {
    "feature_layer": "chooses the hidden state wired into Select's features input at export time",
    "positions": "position ids of the pruned sequence, laid out after the vision engine (torch backend only)",
}


def fields_of(plugin: str) -> tuple[PluginFieldSpec, ...]:
    """The fields one creator declares, in declaration order."""
    return tuple(f for f in PLUGIN_FIELDS if plugin in f.plugins)


def check_fields(config: HIVTPConfig) -> None:
    """Every integer the plugins carry fits kINT32; the ONNX parser would wrap a larger one, silently."""
    values = {"budget": config.budget, "window": config.window, "regions": max(config.regions),
              "score_layers": None if isinstance(config.score_layers, str) else max(config.score_layers)}
    for name, value in values.items():
        if value is not None and value > INT32_MAX:
            raise ValueError(f"{name} {value} does not fit the engine's int32 plugin field (at most {INT32_MAX}); "
                             "values past the patch grid act as the grid itself, so pass that")


def encode(config: HIVTPConfig, grid: tuple[int, int] = (0, 0)) -> dict[str, dict[str, Any]]:
    """ONNX attributes of each plugin for `config` (score layers resolved): {"Score": {...}, "Select": {...}}."""
    check_fields(config)
    values = {
        "score_layers": list(config.layers),
        "regions": list(config.regions),
        "global_ratio": float(config.global_ratio),
        "window": int(config.window),
        "budget": 0 if config.budget is None else int(config.budget),
        "grid_h": int(grid[0]),
        "grid_w": int(grid[1]),
    }
    return {plugin: {f.name: values[f.name] for f in fields_of(plugin)} for plugin in (SCORE, SELECT)}


def _default_repr(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def readme_table() -> str:
    """The README's parameter table, one row per field (the README test compares against this)."""
    rows = ["| Field | TensorRT type | ONNX type | Plugins | Default | Description |", "|---|---|---|---|---|---|"]
    for f in PLUGIN_FIELDS:
        rows.append(
            f"| `{f.name}` | `{f.trt_type}` | `{f.onnx_type}` | {', '.join(f.plugins)} "
            f"| `{_default_repr(f.default)}` | {f.description} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())
