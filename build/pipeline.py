"""`hivtp build`: HF LLaVA / LLaVA-NeXT checkpoint -> vision ONNX -> TensorRT vision engine -> TensorRT-LLM
decoder engine -> manifest.json, all in one output directory.

Everything is written into a temporary directory next to OUT and renamed into place at the end, so a
failed stage leaves a previous OUT as it was (there is a moment between the two renames of a --force
replacement when OUT is absent: POSIX has no portable atomic directory swap).

OUT/
    vision/model.onnx (+ model.onnx.data)  pixel_values [B, 3, S, S] -> features, counts, indices
    vision/model.engine                    the TensorRT plan of that graph (hivtp plugins inside)
    vision/image_newline.safetensors       LLaVA-NeXT only: the newline row the host layout inserts
    decoder/                               the TensorRT-LLM engine directory
    manifest.json                          see hivtp.build.manifest
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from hivtp.build.manifest import package_versions, write_manifest
from hivtp.config import HIVTPConfig

SUPPORTED = {"tensorrt": ("TensorRT", "10.14"), "tensorrt_llm": ("TensorRT-LLM", "1.2.1")}
SUPPORTED_TEXT = "TensorRT 10.14, TensorRT-LLM 1.2.1"
DTYPES = {"fp16": "float16", "bf16": "bfloat16"}  # CLI name -> the engine builders' name
PLUGIN_ENV = "HIVTP_PLUGIN_LIB"


@dataclass(frozen=True)
class BuildOptions:
    model_dir: Path
    output: Path
    config: HIVTPConfig
    max_batch: int = 4  # prompts per decoder batch, images per vision batch (NeXT: times its most crops)
    max_text_len: int = 512  # prompt tokens besides the visual ones
    max_new_tokens: int = 512
    dtype: str = "fp16"  # a DTYPES key: the engines' precision
    onnx_only: bool = False
    force: bool = False
    plugin_library: Path | None = None


def max_visual_tokens(model_config: Any, kmax: int) -> int:
    """Most visual tokens one image yields after pruning: a decoder request's prompt-table rows.

    LLaVA: Kmax. LLaVA-NeXT, for the worst pinpoint (rows x cols crops, an image of its exact aspect so
    unpad removes nothing): base crop Kmax + Kmax per grid crop + one newline per grid row that keeps a
    token (at most rows * h and at most the kept count). With nothing pruned this is HF's token count.
    """
    if model_config.model_type != "llava_next":
        return kmax
    side = model_config.vision_config.image_size
    h = side // model_config.vision_config.patch_size  # patch rows of one crop
    worst = 0
    for height, width in model_config.image_grid_pinpoints:
        rows, cols = height // side, width // side
        worst = max(worst, kmax + rows * cols * kmax + min(rows * h, rows * cols * kmax))
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
    installed = package_versions(tuple(SUPPORTED))
    for package, (label, version) in SUPPORTED.items():
        found = installed[package]
        if found is None:
            raise ValueError(
                f"the TensorRT stages need {package}, which is not installed (supported: {SUPPORTED_TEXT}); "
                "pass --onnx-only to write only the ONNX and the manifest"
            )
        if found != version and not found.startswith(version + "."):
            raise ValueError(f"{label} {found} is installed; hivtp engines need {label} {version} ({SUPPORTED_TEXT})")


def plugin_library(path: Path | None) -> Path:
    """The hivtp plugin library for the TensorRT stages: --plugin-lib, else $HIVTP_PLUGIN_LIB."""
    path = path or (Path(os.environ[PLUGIN_ENV]) if os.environ.get(PLUGIN_ENV) else None)
    if path is None:
        raise ValueError(f"the TensorRT stages need the hivtp plugin library: pass --plugin-lib PATH or set {PLUGIN_ENV}")
    if not path.is_file():
        raise ValueError(f"plugin library not found: {path}")
    return path.resolve()


def _check_output(options: BuildOptions) -> Path:
    output, model_dir = options.output.resolve(), options.model_dir.resolve()
    if output == model_dir or output in model_dir.parents:
        raise ValueError(f"--output {options.output} would replace the checkpoint {options.model_dir}")
    if output.exists() and not options.force:
        raise ValueError(f"{options.output} exists: pass --force to replace it")
    return output


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextmanager
def staging(output: Path) -> Iterator[Path]:
    """A scratch directory next to output; renamed onto output on success, deleted on any failure."""
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.building-", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; OUT should get the usual permissions
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if output.exists() or output.is_symlink():
        old = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
        output.rename(old)
        work.rename(output)
        _remove(old)
    else:
        work.rename(output)


def _builder(module: str, function: str) -> Callable[..., Any]:
    """A stage function of another hivtp.build module (they import tensorrt / tensorrt_llm lazily)."""
    import importlib

    try:
        return getattr(importlib.import_module(f"hivtp.build.{module}"), function)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"hivtp.build.{module}.{function} is not available in this installation: {err}") from None


def _export_stage(options: BuildOptions, vision_dir: Path) -> tuple[Any, Any]:
    """Load the checkpoint in its own dtype, export the vision ONNX (fp32: its weights exactly), keep NeXT's newline."""
    from safetensors.torch import save_file

    from hivtp.build.export import export_vision
    from hivtp.loading import load_llava

    model, _ = load_llava(options.model_dir, dtype="auto")
    vision_batch = options.max_batch * max_crops(model.config)
    exported = export_vision(model, options.config, vision_dir / "model.onnx", vision_batch)
    if model.config.model_type == "llava_next":
        newline = model.model.image_newline.detach().float().contiguous()  # [D]
        save_file({"image_newline": newline}, str(vision_dir / "image_newline.safetensors"))
    return exported, model.config


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
        max_multimodal_len=limits["max_multimodal_len"],
    )
    bar.update()


def decoder_limits(options: BuildOptions, model_config: Any, kmax: int) -> dict[str, int]:
    """Engine sizes from the PRUNED visual token count (one image per prompt)."""
    per_image = max_visual_tokens(model_config, kmax)
    max_input_len = options.max_text_len + per_image
    return {
        "max_vision_batch": options.max_batch * max_crops(model_config),
        "max_visual_tokens_per_image": per_image,
        "max_multimodal_len": options.max_batch * per_image,
        "max_input_len": max_input_len,
        "max_seq_len": max_input_len + options.max_new_tokens,
    }


def build(options: BuildOptions) -> Path:
    """Run every stage into a scratch directory, then put it in place at options.output."""
    output = _check_output(options)
    from hivtp.loading import checkpoint_type

    model_type = checkpoint_type(options.model_dir)
    if not options.onnx_only:
        require_engine_packages()
        options = replace(options, plugin_library=plugin_library(options.plugin_library))
    require_export_packages()
    stages = 2 if options.onnx_only else 4
    with staging(output) as work, tqdm(total=stages, desc="hivtp build", unit="stage", disable=None) as bar:
        bar.set_postfix_str("ONNX")
        (work / "vision").mkdir()
        exported, model_config = _export_stage(options, work / "vision")
        limits = decoder_limits(options, model_config, exported.kmax)
        bar.update()
        if not options.onnx_only:
            _engine_stages(options, work, exported, limits, bar)
        bar.set_postfix_str("manifest")
        facts = {
            "model_type": model_type, "dtype": options.dtype, "max_batch": options.max_batch, **limits,
            "kmax": exported.kmax, "grid": list(exported.grid), "image_size": exported.image_size,
            "hidden_size": exported.hidden_size, "onnx_only": options.onnx_only, "onnx": "vision/model.onnx",
            "vision_engine": None if options.onnx_only else "vision/model.engine",
            "decoder_engine": None if options.onnx_only else "decoder",
        }
        write_manifest(work, config=exported.config, model_dir=options.model_dir, build=facts,
                       plugin_library=options.plugin_library)
        bar.update()
    return output
