"""A real TensorRT builder in CI: TensorRT-RTX parses and builds the plugin-free vision graph (both shipped
models, paper and budget mode, and a CLIP-L/14-336-sized tower with random weights) through
`build_vision_engine`, the function `hivtp build` runs, with only the TensorRT module swapped.

TensorRT-RTX builds on a CPU-only machine; nothing is run or faked. CI installs it and runs these once,
under transformers 4.57.3 (`HIVTP_TENSORRT_RTX=1`); the CLIP-L build takes about 2 minutes on 2 cores.
Engine sizes and build times: `python -m hivtp.build.rtx_check` (table + JSON).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
import torch

pytest.importorskip("onnxscript")
from hivtp.build.export import export_vision  # noqa: E402
from hivtp.build.rtx_check import CLIP_L_BUDGET, MODES, build_one, clip_l_llava, tensorrt_rtx  # noqa: E402
from hivtp.build.tensorrt_engine import build_vision_engine  # noqa: E402
from hivtp.demo import shipped_model  # noqa: E402
from hivtp.loading import load_llava  # noqa: E402


def _rtx_or_reason() -> tuple[object | None, str]:
    if os.environ.get("HIVTP_TENSORRT_RTX") != "1":
        return None, "TensorRT-RTX builds run once per CI run (under transformers 4.57.3): set HIVTP_TENSORRT_RTX=1"
    try:
        return tensorrt_rtx(), ""
    except ValueError as err:
        return None, str(err)


RTX, REASON = _rtx_or_reason()
pytestmark = pytest.mark.skipif(RTX is None, reason=REASON)


@pytest.fixture(scope="module")
def shipped() -> dict[str, object]:
    return {kind: load_llava(shipped_model(kind), dtype=torch.float32)[0] for kind in ("llava", "llava_next")}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_shipped_models_parse_and_build(shipped, kind, mode, dtype, tmp_path) -> None:
    """Strongly typed in both engine dtypes (bf16 included: its graph is bf16 but for the fp32 patch conv)."""
    row = build_one(RTX, shipped[kind], kind, mode, MODES[mode], dtype, 4, tmp_path)
    engine = tmp_path / f"{kind}-{mode}.engine"
    assert engine.is_file() and abs(engine.stat().st_size / 1e6 - row.engine_mb) < 0.01
    assert row.kmax == (32 if mode == "paper" else 16) and row.dtype == str(dtype).removeprefix("torch.")


def test_clip_l_tower_with_a_dynamic_batch_profile(tmp_path) -> None:
    """LLaVA-1.5-7B's vision path at full size (CLIP ViT-L/14-336, 577 tokens, projector to 4096): fp16, batch 1..8."""
    model = clip_l_llava()
    row = build_one(RTX, model, "clip-l", "budget", CLIP_L_BUDGET, torch.float16, 8, tmp_path)
    graph = onnx.load(str(tmp_path / "clip-l-budget.onnx"), load_external_data=False).graph
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value, "the batch dimension must stay dynamic"
    assert row.kmax == 192 and row.engine_mb > 500  # fp16 weights of a 300M-parameter tower + projector


def test_the_plugin_graph_fails_to_parse_with_every_error_listed(shipped, tmp_path) -> None:
    """Without the hivtp plugins registered the parser cannot import Score / Select: one line naming the nodes."""
    info = export_vision(shipped["llava"], MODES["paper"], tmp_path / "plugin.onnx", 4, dtype=torch.float16)
    with pytest.raises(ValueError) as err:
        build_vision_engine(info.path, tmp_path / "x.engine", None, 4, "float16", (3, 112, 112), tensorrt_module=RTX)
    message = str(err.value)
    assert "\n" not in message and "cannot parse" in message  # (the parser's own descriptions span lines)
    assert "Score): " in message and "Select): " in message and "Plugin not found" in message
    assert not (tmp_path / "x.engine").exists()


def test_a_graph_of_another_dtype_is_refused(shipped, tmp_path) -> None:
    """Strong typing: the graph's dtype is the engine's precision, so an fp32 graph is no fp16 engine."""
    info = export_vision(shipped["llava"], MODES["budget"], tmp_path / "fp32.onnx", 4, select_impl="onnx")
    for engine_dtype in ("float16", "bfloat16"):  # (bf16 used to mean the fp32 graph with the BF16 flag)
        with pytest.raises(ValueError, match=f"exported in .*FLOAT.* {engine_dtype} engine"):
            build_vision_engine(info.path, tmp_path / "x.engine", None, 4, engine_dtype, (3, 112, 112), tensorrt_module=RTX)
    with pytest.raises(ValueError, match=r"has shape .* expected \[batch, \*\[3, 224, 224\]\]"):
        build_vision_engine(info.path, tmp_path / "x.engine", None, 4, "float32", (3, 224, 224), tensorrt_module=RTX)
    assert build_vision_engine(info.path, tmp_path / "x.engine", None, 4, "float32", (3, 112, 112), tensorrt_module=RTX) > 0
    assert Path(tmp_path / "x.engine").stat().st_size > 0
