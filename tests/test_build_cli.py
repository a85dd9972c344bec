"""`hivtp build` end to end on tiny checkpoints: --onnx-only output, --force, atomic replacement, the
TensorRT stages' one-line refusal without TensorRT, and decoder sizes from the pruned token count."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from helpers import lacking
from hivtp.build import pipeline
from hivtp.commands.build import main as build_main
from hivtp.build.manifest import MANIFEST_NAME, check_manifest
from hivtp.config import HIVTPConfig
from hivtp.loading import load_llava

HAVE_TRT = all(importlib.util.find_spec(p) is not None for p in ("tensorrt", "tensorrt_llm"))
needs_export = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("onnx", "onnxscript")), reason="needs onnx and onnxscript"
)


def run(capsys, *argv: str | Path) -> tuple[int, str]:
    """`hivtp build` in-process -> (exit code, stderr)."""
    code = build_main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hivtp: error: "), stderr
    return lines[0]


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".building-" in p.name or ".old-" in p.name or p.name.endswith(".lock")]


class Build(NamedTuple):
    code: int
    err: str
    out: Path


@pytest.fixture(scope="module")
def default_build(tiny_dirs, tmp_path_factory) -> Build:
    """`hivtp build --onnx-only` of the tiny LLaVA with every other option at its default, through cli.main."""
    from hivtp import cli

    out = tmp_path_factory.mktemp("default") / "out"
    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli.main(["build", "--model", str(tiny_dirs["llava"]), "--output", str(out), "--onnx-only"])
    return Build(code, err.getvalue(), out)


@needs_export
@pytest.mark.parametrize("kind, extra", [("llava", []), ("llava_next", ["--budget", "10"])])
def test_onnx_only_end_to_end(capsys, tiny_dirs, tmp_path, kind, extra) -> None:
    import onnx

    from hivtp.build.export import exported_config

    out = tmp_path / "out"
    code, err = run(capsys, "--model", tiny_dirs[kind], "--output", out, "--onnx-only", "--max-batch", "2", *extra)
    assert code == 0, err
    manifest = check_manifest(out, verify_files=True)
    facts = manifest["build"]
    config = HIVTPConfig(budget=10) if extra else HIVTPConfig()  # default score layers: relative
    resolved = HIVTPConfig.from_dict(manifest["hivtp_config"])
    assert resolved == config.for_tower(10, -2) == exported_config(out / facts["onnx"])
    assert resolved.score_layers == (2, 3, 4)  # the 10-layer tower's analogue of 6-8 of 24, recorded as built
    assert facts["model_type"] == kind and facts["onnx_only"] and facts["vision_engine"] is None
    onnx.checker.check_model(str(out / facts["onnx"]))
    if kind == "llava":
        assert facts["kmax"] == 32 and facts["max_multimodal_len"] == 2 * 32 and facts["max_vision_batch"] == 2
    else:  # worst pinpoint 2x2 crops: base 10 + 4 * 10 + min(2 * 8 rows, 40) newlines
        assert facts["kmax"] == 10 and facts["max_visual_tokens_per_image"] == 66
        assert facts["max_multimodal_len"] == 2 * 66 and facts["max_vision_batch"] == 2 * 5
        assert "vision/image_newline.safetensors" in manifest["files"]
    assert facts["max_input_len"] == 512 + facts["max_visual_tokens_per_image"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700), "the scratch directory's 0700 must not leak"
    assert not leftovers(tmp_path)


@pytest.fixture(scope="module")
def earlier_build(tiny_dirs, tmp_path_factory) -> Path:
    """An --onnx-only build of the tiny LLaVA: what --force may replace."""
    out = tmp_path_factory.mktemp("earlier") / "build"
    pipeline.build(pipeline.BuildOptions(model_dir=tiny_dirs["llava"], output=out, config=HIVTPConfig(budget=5), onnx_only=True))
    return out


@pytest.fixture()
def old_output(earlier_build, tmp_path: Path) -> Path:
    """A fresh copy of the earlier build; its manifest tells it apart from a new one."""
    out = tmp_path / "out"
    shutil.copytree(earlier_build, out)
    return out


def manifest_bytes(out: Path) -> bytes:
    return (out / MANIFEST_NAME).read_bytes()


@needs_export
def test_existing_output_needs_force(capsys, tiny_dirs, old_output) -> None:
    before = manifest_bytes(old_output)
    code, err = run(capsys, "--model", tiny_dirs["llava"], "--output", old_output, "--onnx-only")
    assert code == 2 and "pass --force" in one_error_line(err)
    assert manifest_bytes(old_output) == before
    code, err = run(capsys, "--model", tiny_dirs["llava"], "--output", old_output, "--onnx-only", "--force")
    assert code == 0, err
    assert manifest_bytes(old_output) != before and check_manifest(old_output)["hivtp_config"]["budget"] is None
    assert not leftovers(old_output.parent)


@needs_export
def test_failing_stage_leaves_the_old_output(capsys, tiny_dirs, old_output) -> None:
    """A stage that refuses (score layers the tower lacks): exit 2, one line, previous OUT untouched."""
    before = sorted(p.relative_to(old_output) for p in old_output.rglob("*")), manifest_bytes(old_output)
    argv = ["--model", tiny_dirs["llava"], "--output", old_output, "--onnx-only", "--force", "--score-layers", "1,40"]
    code, err = run(capsys, *argv)
    assert code == 2 and "score_layers" in one_error_line(err)
    assert (sorted(p.relative_to(old_output) for p in old_output.rglob("*")), manifest_bytes(old_output)) == before
    assert not leftovers(old_output.parent)


@needs_export
def test_crash_in_a_stage_leaves_the_old_output(tiny_dirs, old_output, tmp_path) -> None:
    """Any exception (here: truncated weights) removes the scratch directory and keeps OUT."""
    before = manifest_bytes(old_output)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["llava"], broken)
    (broken / "model.safetensors").write_bytes((tiny_dirs["llava"] / "model.safetensors").read_bytes()[:1000])
    options = pipeline.BuildOptions(model_dir=broken, output=old_output, config=HIVTPConfig(), onnx_only=True, force=True)
    with pytest.raises(Exception):
        pipeline.build(options)
    assert manifest_bytes(old_output) == before
    assert not leftovers(tmp_path)


def test_output_must_not_be_the_checkpoint(capsys, tiny_dirs) -> None:
    code, err = run(capsys, "--model", tiny_dirs["llava"], "--output", tiny_dirs["llava"], "--onnx-only", "--force")
    assert code == 2 and "would replace the checkpoint" in one_error_line(err)
    assert (tiny_dirs["llava"] / "config.json").is_file()


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt and tensorrt_llm are installed: the refusal cannot happen")
def test_trt_stages_without_tensorrt_exit_2(capsys, tiny_dirs, tmp_path) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "--model", tiny_dirs["llava"], "--output", out)
    line = one_error_line(err)
    assert code == 2 and "not installed" in line and "TensorRT 10.14" in line and "TensorRT-LLM 1.2.1" in line
    assert "--onnx-only" in line
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize(
    "argv, message",
    [(["--dtype", "fp32"], "invalid choice"), (["--max-batch", "0"], "positive integer"), (["--tp-size", "0"], "positive integer"),
     (["--tp-size", "two"], "positive integer"), (["--select-impl", "triton"], "invalid choice"),
     (["--max-new-tokens", ""], "positive integer")],
)
def test_bad_arguments_one_line(capsys, tiny_dirs, tmp_path, argv, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_main(["--model", str(tiny_dirs["llava"]), "--output", str(tmp_path / "o"), *argv])
    assert exit_info.value.code == 2 and message in one_error_line(capsys.readouterr().err)


@torch.inference_mode()
def test_max_visual_tokens_bounds_the_pruned_count(tiny_dirs, two_images) -> None:
    """NeXT: nothing pruned on an image of a pinpoint's aspect gives HF's count; pruned counts stay below."""
    import hivtp

    model, processor = load_llava(tiny_dirs["llava_next"], dtype=torch.float32)
    square = two_images[0]  # 224 x 224: the 2x2 pinpoint, no padding
    for config in (HIVTPConfig(budget=10**6), HIVTPConfig(), HIVTPConfig(budget=3)):
        kmax = hivtp.select_tokens(torch.zeros(1, 64), (8, 8), config)[0].shape[1]
        bound = pipeline.max_visual_tokens(model.config, kmax)
        for image in (square, two_images[1]):
            inputs = processor(images=[image], text=["<image> describe"], return_tensors="pt")
            pruned = hivtp.prune_inputs(model, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"],
                                        inputs["image_sizes"], config)
            assert int(pruned.kept_tokens[0]) <= bound
            if config.budget == 10**6 and image is square:
                assert int(pruned.full_tokens[0]) == bound


@needs_export
def test_hivtp_cli_has_build(default_build) -> None:
    code, _, out = default_build
    assert code == 0 and (out / MANIFEST_NAME).is_file()


NO_ENGINE_BUILD = lacking("tensorrt 10.14 and tensorrt_llm 1.2.1", HAVE_TRT, pipeline.PLUGIN_ENV)


@pytest.mark.skipif(bool(NO_ENGINE_BUILD), reason=NO_ENGINE_BUILD)
def test_full_build_with_tensorrt(capsys, tiny_dirs, tmp_path) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "--model", tiny_dirs["llava"], "--output", out, "--max-batch", "2", "--max-text-len", "64",
                    "--max-new-tokens", "8")
    assert code == 0, err
    manifest = check_manifest(out, os.environ[pipeline.PLUGIN_ENV], verify_files=True)
    assert (out / manifest["build"]["vision_engine"]).is_file() and (out / "decoder" / "config.json").is_file()
    assert json.loads((out / "decoder" / "config.json").read_text())["build_config"]["max_prompt_embedding_table_size"] == 64


@needs_export
def test_default_limits_fit_the_model_positions(default_build) -> None:
    """Defaults (512 text + 32 visual + 512 new = 1056) exceed the tiny model's 1024 positions: capped, not built past."""
    code, err, out = default_build
    assert code == 0, err
    facts = check_manifest(out)["build"]
    assert facts["max_position_embeddings"] == 1024
    assert facts["max_seq_len"] == 1024 and facts["max_input_len"] == 512 + 32


@needs_export
@pytest.mark.parametrize("argv", [["--max-new-tokens", "600"], ["--max-text-len", "1000"]])
def test_explicit_limits_past_the_positions_are_refused(capsys, tiny_dirs, tmp_path, argv) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "--model", tiny_dirs["llava"], "--output", out, "--onnx-only", *argv)
    assert code == 2 and "max_position_embeddings (1024)" in one_error_line(err)
    assert not out.exists() and not leftovers(tmp_path)


@needs_export
def test_plugin_free_onnx_only_build(capsys, tiny_dirs, tmp_path) -> None:
    """--select-impl onnx: no hivtp node, no plugin library, the engine dtype in the graph."""
    import onnx

    out = tmp_path / "out"
    code, err = run(capsys, "--model", tiny_dirs["llava_next"], "--output", out, "--onnx-only", "--select-impl", "onnx",
                    "--budget", "6", "--dtype", "bf16")
    assert code == 0, err
    manifest = check_manifest(out, verify_files=True)
    facts = manifest["build"]
    assert facts["select_impl"] == "onnx" and facts["tp_size"] == 1 and manifest["plugin_library"] is None
    graph = onnx.load(str(out / facts["onnx"])).graph
    assert {n.domain for n in graph.node} == {""}
    # strongly typed bf16: a bf16 graph whose one fp32 island is the patch conv (opset 18 has no bf16 Conv)
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    assert types[graph.input[0].name] == onnx.TensorProto.BFLOAT16
    (conv,) = [n for n in graph.node if n.op_type == "Conv"]
    assert {types[name] for name in conv.input} == {onnx.TensorProto.FLOAT}
    # every MatMul of the tower and projector is bf16; the scores' own Q K^T are fp32 by design (in every dtype)
    fp32 = {n.name for n in graph.node if n.op_type == "MatMul" and types[n.input[0]] == onnx.TensorProto.FLOAT}
    bf16 = {n.name for n in graph.node if n.op_type == "MatMul" and types[n.input[0]] == onnx.TensorProto.BFLOAT16}
    assert len(fp32) == len(manifest["hivtp_config"]["score_layers"]) and len(bf16) > 4 * len(fp32)


@needs_export
def test_default_export_is_in_the_engine_dtype(default_build) -> None:
    import onnx

    code, _, out = default_build
    assert code == 0
    graph = onnx.load(str(out / "vision" / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert check_manifest(out)["build"]["select_impl"] == "plugin"


@pytest.mark.parametrize(
    "argv, message",
    [(["--tp-size", "3"], "tp_size 3 does not divide the language model's num_attention_heads (4)"),
     (["--select-impl", "onnx", "--plugin-lib", "/x/libhivtp_plugin.so"], "--select-impl onnx builds without")],
)
def test_build_refuses_before_any_stage(capsys, tiny_dirs, tmp_path, argv, message) -> None:
    """Checked before the TensorRT packages are even looked for (so this runs without them)."""
    out = tmp_path / "out"
    code, err = run(capsys, "--model", tiny_dirs["llava"], "--output", out, *argv)
    assert code == 2 and message in one_error_line(err)
    assert not out.exists() and not leftovers(tmp_path)

