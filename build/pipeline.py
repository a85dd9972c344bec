"""`hivtp build`: HF LLaVA / LLaVA-NeXT checkpoint -> vision ONNX -> TensorRT vision engine -> TensorRT-LLM
decoder engine -> manifest.json, all in one output directory.

Everything is written into a scratch folder next to OUT and swapped into place at the end
(hivtp.build.staging), so a failed or killed run leaves the previous OUT as it was. `--force` only
ever replaces an earlier hivtp build (hivtp.outputs.check_build_output).

OUT/
    vision/model.onnx (+ model.onnx.data)  pixel_values [B, 3, S, S] -> features, counts, indices
    vision/model.engine                    the TensorRT plan of that graph (hivtp plugins inside, unless --select-impl onnx)
    vision/image_newline.safetensors       LLaVA-NeXT only: the newline row the host layout inserts
    decoder/                               the TensorRT-LLM engine directory (one rank<i>.engine per tensor-parallel rank)
    manifest.json                          see hivtp.build.manifest
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from hivtp.build.manifest import package_versions, write_manifest
from hivtp.build.staging import staging
from hivtp.config import HIVTPConfig
from hivtp.outputs import check_build_output

SUPPORTED = {"tensorrt": ("TensorRT", "10.14"), "tensorrt_llm": ("TensorRT-LLM", "1.2.1")}
SUPPORTED_TEXT = "TensorRT 10.14, TensorRT-LLM 1.2.1"
DTYPES = {"fp16": "float16", "bf16": "bfloat16"}  # CLI name -> the engine builders' name (and the ONNX's)
SELECT_IMPLS = ("plugin", "onnx")  # = hivtp.build.standard_ops.SELECT_IMPLS (this module stays light)
PLUGIN_ENV = "HIVTP_PLUGIN_LIB"
TEXT_LEN, NEW_TOKENS = 512, 512  # defaults of --max-text-len / --max-new-tokens (capped by the model's positions)


@dataclass(frozen=True)
class BuildOptions:
    model_dir: Path
    output: Path
    config: HIVTPConfig
    max_batch: int = 4  # prompts per decoder batch, images per vision batch (NeXT: times its most crops)
    max_text_len: int | None = None  # prompt tokens besides the visual ones; None: TEXT_LEN, capped (decoder_limits)
    max_new_tokens: int | None = None  # None: NEW_TOKENS, capped (decoder_limits)
    dtype: str = "fp16"  # a DTYPES key: the engines' precision, and the exported ONNX's dtype
    onnx_only: bool = False
    force: bool = False
    plugin_library: Path | None = None
    select_impl: str = "plugin"  # a SELECT_IMPLS value: hivtp plugins, or standard ONNX ops (no plugin library)
    tp_size: int = 1  # tensor-parallel ranks of the decoder engine (one engine per rank)


def max_visual_tokens(model_config: Any, kmax: int) -> int:
    """Most visual tokens one image yields after pruning: a decoder request's prompt-table rows.

    LLaVA: Kmax. LLaVA-NeXT, for the worst pinpoint (rows x cols crops): either an image of its exact
    aspect (unpad removes nothing): base crop Kmax + Kmax per grid crop + one newline per grid row that
    keeps a token (at most rows * h and at most the kept count), which is HF's count with nothing pruned;
    or an image so thin that unpad leaves rows of width 0: base crop Kmax + a newline for each of the
    rows * h rows.
    """
    if model_config.model_type != "llava_next":
        return kmax
    side = model_config.vision_config.image_size
    h = side // model_config.vision_config.patch_size  # patch rows of one crop
    worst = 0
    for height, width in model_config.image_grid_pinpoints:
        rows, cols = height // side, width // side
        worst = max(worst, kmax + rows * cols * kmax + min(rows * h, rows * cols * kmax), kmax + rows * h)
    return worst


def max_crops(model_config: Any) -> int:
    """Vision-batch rows one image needs: 1, or for LLaVA-NeXT the base crop plus its largest crop grid."""
    if model_config.model_type != "llava_next":
        return 1
    side = model_config.vision_config.image_size
    return max(1 + (height // side) * (width // side) for height, width in model_config.image_grid_pinpoints)


def require_export_packages() -> None:
    """The ONNX stage's packages (an optional extra: the torch backend does not need them)."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"the ONNX export needs {' and '.join(missing)}: pip install onnx onnxscript")


def require_engine_packages() -> None:
    """One line naming the missing (or unsupported) package and the supported versions."""
    from hivtp.build.tensorrt_engine import release_matches

    installed = package_versions(tuple(SUPPORTED))
    for package, (label, version) in SUPPORTED.items():
        found = installed[package]
        if found is None:
            raise ValueError(
                f"the TensorRT stages need {package}, which is not installed (supported: {SUPPORTED_TEXT}); "
                "pass --onnx-only to write only the ONNX and the manifest"
            )
        if not release_matches(found, version):
            raise ValueError(
                f"{label} {found} is installed; hivtp engines need a {label} {version} release "
                f"(the installed {package} distribution's version is checked; supported: {SUPPORTED_TEXT})"
            )


def plugin_library(path: Path | None) -> Path:
    """The hivtp plugin library for the TensorRT stages: --plugin-lib, else $HIVTP_PLUGIN_LIB."""
    path = path or (Path(os.environ[PLUGIN_ENV]) if os.environ.get(PLUGIN_ENV) else None)
    if path is None:
        raise ValueError(f"the TensorRT stages need the hivtp plugin library: pass --plugin-lib PATH or set {PLUGIN_ENV}")
    if not path.is_file():
        raise ValueError(f"plugin library not found: {path}")
    return path.resolve()


def _builder(module: str, function: str) -> Callable[..., Any]:
    """A stage function of another hivtp.build module (they import tensorrt / tensorrt_llm lazily)."""
    import importlib

    try:
        return getattr(importlib.import_module(f"hivtp.build.{module}"), function)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"hivtp.build.{module}.{function} is not available in this installation: {err}") from None


def _export_stage(options: BuildOptions, work: Path) -> Any:
    """Load the checkpoint, export work/vision/model.onnx in the engine's dtype (strong typing), keep NeXT's newline."""
    import torch
    from safetensors.torch import save_file

    from hivtp.build.export import export_vision
    from hivtp.build.manifest import IMAGE_NEWLINE_FILE
    from hivtp.loading import load_llava

    model, _ = load_llava(options.model_dir, dtype="auto")
    vision_batch = options.max_batch * max_crops(model.config)
    exported = export_vision(
        model, options.config, work / "vision" / "model.onnx", vision_batch, dtype=getattr(torch, DTYPES[options.dtype]),
        select_impl=options.select_impl,
    )
    if model.config.model_type == "llava_next":
        newline = model.model.image_newline.detach().float().contiguous()  # [D]
        save_file({"image_newline": newline}, str(work / IMAGE_NEWLINE_FILE))
    return exported


def _engine_stages(options: BuildOptions, work: Path, exported: Any, limits: dict[str, int], bar: tqdm) -> None:
    trt_dtype = DTYPES[options.dtype]
    bar.set_postfix_str("vision engine")
    _builder("tensorrt_engine", "build_vision_engine")(
        exported.path, work / "vision" / "model.engine", plugin_library=options.plugin_library,
        max_batch=limits["max_vision_batch"], dtype=trt_dtype, image_shape=(3, exported.image_size, exported.image_size),
    )
    bar.update()
    bar.set_postfix_str("decoder engine")
    _builder("trtllm_decoder", "build_decoder_engine")(
        options.model_dir, work / "decoder", dtype=trt_dtype, max_batch=options.max_batch,
        max_input_len=limits["max_input_len"], max_seq_len=limits["max_seq_len"],
        max_multimodal_len=limits["max_multimodal_len"], tp_size=options.tp_size,
    )
    bar.update()


def decoder_limits(options: BuildOptions, model_config: Any, kmax: int) -> dict[str, int]:
    """Engine sizes from the PRUNED visual token count (one image per prompt), within the model's positions.

    max_seq_len = --max-text-len + visual tokens + --max-new-tokens must fit the language model's
    max_position_embeddings (trtllm-build only warns). Left at their defaults, the two are capped to
    fit; a value the user gave that does not fit is refused with one line.
    """
    per_image = max_visual_tokens(model_config, kmax)
    positions = int(model_config.text_config.max_position_embeddings)
    text, new = options.max_text_len or TEXT_LEN, options.max_new_tokens or NEW_TOKENS
    max_input_len = text + per_image
    max_seq_len = max_input_len + new
    if max_seq_len > positions:
        if options.max_text_len is not None or options.max_new_tokens is not None:
            raise ValueError(
                f"--max-text-len {text} + {per_image} visual tokens + --max-new-tokens {new} = {max_seq_len} tokens, "
                f"more than the checkpoint's max_position_embeddings ({positions})"
            )
        if per_image + 2 > positions:
            raise ValueError(f"{per_image} visual tokens per image leave no room for text in {positions} positions")
        max_input_len, max_seq_len = min(max_input_len, positions - 1), positions
    return {
        "max_vision_batch": options.max_batch * max_crops(model_config),
        "max_visual_tokens_per_image": per_image,
        "max_multimodal_len": options.max_batch * per_image,
        "max_input_len": max_input_len,
        "max_seq_len": max_seq_len,
        "max_position_embeddings": positions,
    }


def planned_limits(options: BuildOptions, model_config: Any) -> dict[str, int]:
    """The engine limits from the checkpoint's config, checked before any stage runs (no weights loaded)."""
    from hivtp.plugins.geometry import selection_layout
    from hivtp.runtime.hf import patch_grid

    kmax = selection_layout(patch_grid(model_config.vision_config), options.config).kmax
    limits = decoder_limits(options, model_config, kmax)
    if options.tp_size != 1:
        from hivtp.build.trtllm_decoder import check_tensor_parallel

        check_tensor_parallel(model_config.text_config, options.tp_size)
    return limits


def build(options: BuildOptions) -> Path:
    """Run every stage into a scratch directory, then put it in place at options.output."""
    output = check_build_output(options.output, options.model_dir, options.force)
    from hivtp.build.trtllm_decoder import check_positions
    from hivtp.loading import check_checkpoint
    from hivtp.plugins.plugin_fields import check_fields

    model_config = check_checkpoint(options.model_dir, options.config)  # everything but the weights, before any stage
    check_positions(options.config)  # the API can ask for the torch-only ablation; engines cannot run it
    check_fields(options.config)  # the plugins' int32 fields
    model_type = model_config.model_type
    if options.select_impl not in SELECT_IMPLS:
        raise ValueError(f"select_impl must be one of {SELECT_IMPLS}, got {options.select_impl!r}")
    if options.select_impl == "onnx" and options.plugin_library is not None:
        raise ValueError("--plugin-lib is for the plugin graph: --select-impl onnx builds without a plugin library")
    limits = planned_limits(options, model_config)
    if not options.onnx_only:
        require_engine_packages()
        if options.select_impl == "plugin":
            options = replace(options, plugin_library=plugin_library(options.plugin_library))
    require_export_packages()
    stages = 2 if options.onnx_only else 4
    with staging(output, options.force) as work, tqdm(total=stages, desc="hivtp build", unit="stage", disable=None) as bar:
        bar.set_postfix_str("ONNX")
        (work / "vision").mkdir()
        exported = _export_stage(options, work)
        bar.update()
        if not options.onnx_only:
            _engine_stages(options, work, exported, limits, bar)
        bar.set_postfix_str("manifest")
        facts = {
            "model_type": model_type, "dtype": options.dtype, "max_batch": options.max_batch, **limits,
            "kmax": exported.kmax, "grid": list(exported.grid), "image_size": exported.image_size,
            "hidden_size": exported.hidden_size, "onnx_only": options.onnx_only, "onnx": "vision/model.onnx",
            "select_impl": options.select_impl, "tp_size": options.tp_size,
            "vision_engine": None if options.onnx_only else "vision/model.engine",
            "decoder_engine": None if options.onnx_only else "decoder",
        }
        write_manifest(work, config=exported.config, model_dir=options.model_dir, build=facts,
                       plugin_library=options.plugin_library)
        bar.update()
    return output
