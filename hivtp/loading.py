"""Loading checkpoints, images and devices, with one clear error for each way they can be wrong.

Images are loaded the way a user expects a viewer to show them: EXIF orientation applied, 16-bit
and float pixels scaled from their real range (not clipped), transparency composited on white (as
transformers' own `convert_rgb` does), and files that claim more than MAX_IMAGE_PIXELS refused
before they are decoded.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import transformers
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

from hivtp.checks import check_config, describe
from hivtp.config import HIVTPConfig, is_int
from hivtp.outputs import check_not_special, read_json

MODEL_CLASSES = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold (~ 9459 x 9459), refused instead of warned
DEVICE_TYPES = ("cpu", "cuda", "mps")
MAX_LAYERS = 1000  # deeper than any released tower or LLM; a larger count is a typo that would take hours to build
MAX_TILES = 64  # crops of one LLaVA-NeXT resolution (released models: at most 6); more is a typo that costs minutes per image


# ---- images ----------------------------------------------------------------------------------------


def _scaled_to_8bit(image: Image.Image) -> Image.Image:
    """Single-channel 16-bit / int32 / float pixels -> 'L', from the range their mode implies."""
    values = np.asarray(image, dtype=np.float64)  # [H, W]
    peak = values[np.isfinite(values)].max(initial=0.0)  # NaN and +-inf pixels do not set the range
    if image.mode == "F":
        top = 1.0 if peak <= 1.0 else 255.0  # float images: [0, 1] by convention
    elif image.mode.startswith("I;16"):
        top = 65535.0
    else:  # 'I' (int32): 16-bit data unless every value fits 8 bits
        top = 255.0 if peak <= 255 else 65535.0
    values = np.nan_to_num(values, nan=0.0, posinf=top, neginf=0.0)  # NaN black, +inf white (no overflow)
    scaled = np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB with the pixels' real meaning kept (see the module docstring)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _scaled_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def check_path(name: str, value: Any) -> Path:
    """A path argument of the API: a str or os.PathLike (None or a number is one ValueError, not a TypeError)."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (str or pathlib.Path), got {describe(value)}")
    return Path(value)


def _decode(source: str | Path | IO[bytes], name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    if not is_int(max_pixels) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    limit = min(max_pixels, MAX_IMAGE_PIXELS)  # above PIL's own threshold its warning would refuse it anyway
    if isinstance(source, (str, Path)):
        check_not_special(source, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:  # reads the header only
                width, height = image.size
                if width * height > limit:
                    raise Image.DecompressionBombError(f"{width} x {height}")
                return to_rgb(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"image {name} is too large: more than {limit:,} pixels") from None
    except FileNotFoundError:
        raise ValueError(f"image not found: {name}") from None
    except IsADirectoryError:
        raise ValueError(f"image {name} is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise ValueError(f"cannot read image {name}: not an image format Pillow can decode") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"cannot read image {name}: {reason}") from None


def load_image(path: str | Path) -> Image.Image:
    """An image file -> RGB PIL image (orientation applied, real range kept); ValueError if unreadable."""
    return _decode(check_path("image path", path), str(path))


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Encoded image bytes (PNG, JPEG, ...) -> RGB PIL image, with load_image's rules (a server: its own pixel limit)."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise ValueError(f"image {name}: expected non-empty encoded image bytes")
    return _decode(io.BytesIO(bytes(data)), name, max_pixels)


# ---- checkpoints -----------------------------------------------------------------------------------


def checkpoint_type(directory: str | Path) -> str:
    """model_type from config.json: 'llava' or 'llava_next'; anything else is refused."""
    config_path = check_path("the model directory", directory) / "config.json"
    if not Path(directory).is_dir():
        raise ValueError(f"model directory not found: {directory}")
    data = read_json(config_path, f"{directory} is not a HF checkpoint: no config.json")
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if not isinstance(model_type, str) or model_type not in MODEL_CLASSES:
        raise ValueError(f"{directory} holds a {model_type!r} model; HIVTP supports {sorted(MODEL_CLASSES)}")
    return model_type


def _positive(config: Any, section: str, name: str, where: str, maximum: int | None = None) -> int:
    value = getattr(config, name, None)
    if not is_int(value) or value <= 0:
        raise ValueError(f"{where}: {section}.{name} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{where}: {section}.{name} {value} is more than {maximum}")
    return value


def check_vision_config(vision_config: Any, where: str = "the checkpoint") -> None:
    """Impossible CLIP geometry (e.g. patch_size 0) -> one line, before any module is built."""
    def positive(name: str, maximum: int | None = None) -> int:
        return _positive(vision_config, "vision_config", name, where, maximum)

    image_size, patch_size = positive("image_size"), positive("patch_size")
    hidden, heads = positive("hidden_size"), positive("num_attention_heads")
    positive("num_hidden_layers", MAX_LAYERS)
    if patch_size > image_size:
        raise ValueError(f"{where}: vision_config.patch_size {patch_size} is larger than image_size {image_size}")
    if hidden % heads:
        raise ValueError(f"{where}: vision_config.hidden_size {hidden} is not a multiple of its {heads} attention heads")


def check_llava_config(config: Any, where: str) -> None:
    """What the LLM and the tower-to-LLM link need (sizes, context, image token, feature layer): wrong values
    here would otherwise surface as an IndexError deep in a forward pass, or a silent mismatch."""
    check_vision_config(config.vision_config, where)
    text = config.text_config
    for name in ("hidden_size", "num_attention_heads", "vocab_size"):
        _positive(text, "text_config", name, where)
    _positive(text, "text_config", "num_hidden_layers", where, MAX_LAYERS)
    if getattr(text, "max_position_embeddings", None) is not None:
        _positive(text, "text_config", "max_position_embeddings", where)
    token = getattr(config, "image_token_id", None)
    if not is_int(token) or not 0 <= token < text.vocab_size:
        raise ValueError(f"{where}: image_token_index must be a token id in 0..{text.vocab_size - 1}, got {token!r}")
    states = config.vision_config.num_hidden_layers + 1  # hidden_states: the embeddings, then every layer's output
    layer = config.vision_feature_layer
    layers = layer if isinstance(layer, (list, tuple)) and layer else [layer]
    if not all(is_int(x) and -states <= x < states for x in layers):
        raise ValueError(f"{where}: vision_feature_layer must be a layer in {-states}..{states - 1} "
                         f"(or a list of them) for a {states - 1}-layer tower, got {layer!r}")
    if config.model_type == "llava_next":
        check_pinpoints(config.image_grid_pinpoints, config.vision_config.image_size, f"{where}: image_grid_pinpoints")


def check_pinpoints(pinpoints: Any, side: int, what: str) -> None:
    """LLaVA-NeXT's resolutions: [height, width] pairs, each a grid of at most MAX_TILES crops of side x side."""
    def fits(pair: Any) -> bool:
        return (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(is_int(x) and x > 0 and x % side == 0 for x in pair)
                and pair[0] // side * (pair[1] // side) <= MAX_TILES)

    if not isinstance(pinpoints, (list, tuple)) or not pinpoints or not all(map(fits, pinpoints)):
        raise ValueError(f"{what} must be [height, width] pairs of positive multiples of the tower's {side}-pixel "
                         f"image size, at most {MAX_TILES} crops each, got {str(pinpoints)[:80]}")


def checkpoint_config(directory: str | Path) -> Any:
    """The checkpoint's HF config, read and sanity-checked without loading any weight."""
    checkpoint_type(directory)
    try:
        config = AutoConfig.from_pretrained(directory)
    except Exception as err:  # noqa: BLE001 - transformers 5 validates fields with huggingface_hub's own errors
        err = err.__cause__ or err
        raise ValueError(f"cannot read the config in {directory}: {str(err).splitlines()[0]}") from None
    check_llava_config(config, str(directory))
    return config


def check_device(device: str | torch.device) -> torch.device:
    """A torch device that exists on this machine and can hold weights."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r} (expected cpu, cuda, cuda:N or mps)") from None
    if parsed.type not in DEVICE_TYPES:
        raise ValueError(f"device {str(device)!r} cannot run hivtp (expected cpu, cuda, cuda:N or mps)")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but MPS is not available on this machine")
    return parsed


def check_dtype(dtype: Any) -> None:
    """A weights dtype from_pretrained takes: 'auto', None, or a floating-point torch dtype (or its name)."""
    if dtype is None or dtype == "auto":
        return
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be 'auto', None or a floating-point torch dtype (e.g. float16, bfloat16, float32), got {dtype!r}")


def load_processor(directory: str | Path) -> Any:
    """The checkpoint's processor with the PIL image processor: the pixels LLaVA was trained on, no torchvision."""
    pil = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    try:
        return AutoProcessor.from_pretrained(directory, **pil)
    except Exception as err:  # noqa: BLE001 - a damaged tokenizer.json raises the tokenizers library's bare Exception
        reason = next(iter(str(err).strip().splitlines()), "") or type(err).__name__
        raise ValueError(f"cannot load the processor in {directory}: {reason}") from None


def check_processor(processor: Any, config: Any, directory: str | Path) -> None:
    """The processor expands each image marker into as many tokens as this model's tower makes: the same
    patch size, CLS handling and (LLaVA-NeXT) resolutions; a processor_config.json that lost them would not."""
    expected = {"patch_size": config.vision_config.patch_size, "num_additional_image_tokens": 1,
                "vision_feature_select_strategy": config.vision_feature_select_strategy}
    for name, value in expected.items():
        if getattr(processor, name, None) != value:
            raise ValueError(f"{directory}: the processor's {name} is {getattr(processor, name, None)!r}, the model needs {value!r} "
                             "(processor_config.json)")
    crop = getattr(processor.image_processor, "crop_size", None)  # what each image (NeXT: each tile) is cut to
    crop = {k: crop.get(k) if isinstance(crop, dict) else getattr(crop, k, None) for k in ("height", "width")}
    side = config.vision_config.image_size
    if None not in crop.values() and tuple(crop.values()) != (side, side):
        raise ValueError(f"{directory}: the image processor crops to {crop['height']} x {crop['width']}, the model's tower "
                         f"takes {side} x {side} (preprocessor_config.json)")
    if config.model_type == "llava_next":  # the processor crops by its own copy of the resolutions
        theirs = getattr(processor.image_processor, "image_grid_pinpoints", None)
        if theirs is None or [list(p) for p in theirs] != [list(p) for p in config.image_grid_pinpoints]:
            raise ValueError(f"{directory}: the processor's image_grid_pinpoints {str(theirs)[:60]} differ from "
                             f"the model's {str(config.image_grid_pinpoints)[:60]}")


def check_checkpoint(directory: str | Path, hivtp_config: HIVTPConfig) -> Any:
    """Everything a checkpoint can be checked for without its weights (config, score layers against the
    encoder, processor) -> its HF config: what `hivtp build` and a served repository would fail on later."""
    config = checkpoint_config(directory)
    check_config(hivtp_config).check_encoder(config.vision_config.num_hidden_layers)
    check_processor(load_processor(directory), config, directory)
    return config


def load_llava(
    directory: str | Path, dtype: Any = "auto", device: str = "cpu", hivtp_config: HIVTPConfig | None = None
) -> tuple[Any, Any]:
    """(model, processor) from a local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory.

    Everything that can be checked without weights is checked first (config, device, and
    `hivtp_config` against the encoder). Weights that do not fit the config (missing, or of another
    shape) are refused: transformers would otherwise initialise them at random and only log a warning.
    """
    config = checkpoint_config(directory)
    check_device(device)
    check_dtype(dtype)
    if hivtp_config is not None:
        check_config(hivtp_config).check_encoder(config.vision_config.num_hidden_layers)
    model_cls = MODEL_CLASSES[config.model_type]
    try:
        model, info = model_cls.from_pretrained(directory, dtype=dtype, output_loading_info=True)
    except RuntimeError as err:  # torch's "size mismatch for <name>: ..." state-dict error
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err).splitlines()[0])
        raise ValueError(f"the weights in {directory} do not fit its config: {detail[:200]}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as err:  # e.g. a generation_config.json list
        raise ValueError(f"cannot load the checkpoint in {directory}: {next(iter(str(err).splitlines()), type(err).__name__)}") from None
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        names = (missing + mismatched)[:3]
        raise ValueError(f"the weights in {directory} do not fit its config: {len(missing)} missing, "
                         f"{len(mismatched)} of another shape (e.g. {', '.join(names)})")
    processor = load_processor(directory)
    check_processor(processor, config, directory)
    return model.to(device).eval(), processor
