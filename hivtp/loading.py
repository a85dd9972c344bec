"""Loading checkpoints and images with one clear error for each way they can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

MODEL_CLASSES = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}


def load_image(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def checkpoint_type(directory: str | Path) -> str:
    """model_type from config.json: 'llava' or 'llava_next'; anything else is refused."""
    config_path = Path(directory) / "config.json"
    if not Path(directory).is_dir():
        raise ValueError(f"model directory not found: {directory}")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except FileNotFoundError:
        raise ValueError(f"{directory} is not a HF checkpoint: no config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"cannot parse {config_path}: {err}") from None
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"{directory} holds a {model_type!r} model; HIVTP supports {sorted(MODEL_CLASSES)}")
    return model_type


def check_device(device: str) -> torch.device:
    """A torch device that exists on this machine."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (expected e.g. cpu, cuda, cuda:1)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return parsed


def load_llava(directory: str | Path, dtype: Any = "auto", device: str = "cpu") -> tuple[Any, Any]:
    """(model, processor) from a local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory."""
    model_cls = MODEL_CLASSES[checkpoint_type(directory)]
    check_device(device)
    try:
        model = model_cls.from_pretrained(directory, dtype=dtype)
        processor = AutoProcessor.from_pretrained(directory)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise ValueError(f"cannot load the checkpoint in {directory}: {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), processor
