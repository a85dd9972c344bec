"""`hivtp bench`'s shared pieces: models, sizes, sample image and output names for every stage
(`e2e`, `vision`, `select`, `score`; `serve` in runtime/triton/bench.py).

Models come from a checkpoint (`--model DIR`) or from `--random-init NAME`: the real architecture's
dimensions (configs shipped in hivtp/data/configs, `tiny` = the demo's config) with seeded random
weights, so timings need no download; the output says so. 7B random models are built directly on the
GPU in fp16/bf16 (fp32 7B weights do not fit a CPU host's memory), and refused on the CPU, except for
the vision stage, which builds the vision path alone (tower, projector, newline: it fits a CPU).
The stages live in bench_e2e.py, bench_vision.py and bench_kernels.py.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from PIL import Image
from transformers import LlavaConfig, LlavaNextConfig

from hivtp.commands.bench import PRESETS
from hivtp.config import HIVTPConfig
from hivtp.demo import NEXT_PINPOINTS, sample_image_path, tiny_config, tiny_processor, tiny_tokenizer
from hivtp.loading import MODEL_CLASSES, check_device, checkpoint_config, load_image, load_llava
from hivtp.outputs import fresh_name
from hivtp.timing import available_memory_bytes

# budgets per image (per crop for NeXT); tiny has an 8x8 grid, so its budgets are scaled down
PRESET_BUDGETS = {"tiny": (32, 16, 8), "llava-1.5-7b": (192, 128, 64), "llava-next-7b": (128, 64, 32)}
MODEL_TYPE_BUDGETS = {"llava": (192, 128, 64), "llava_next": (128, 64, 32)}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CONFIG_CLASSES = {"llava": LlavaConfig, "llava_next": LlavaNextConfig}
T = TypeVar("T")


def preset_config(name: str, vocab_size: int, image_token_id: int) -> Any:
    """HF config of a preset; the image token id is the demo tokenizer's (dimensions unchanged)."""
    if name == "tiny":
        return tiny_config("llava", vocab_size, image_token_id)
    data = json.loads((resources.files("hivtp") / "data" / "configs" / f"{name}.json").read_text())
    data.pop("_source", None)
    config_cls = CONFIG_CLASSES[data.pop("model_type")]
    data["image_token_index"] = image_token_id
    data["text_config"] = {**data["text_config"], "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    return config_cls(**data)


def source_config(args: argparse.Namespace) -> Any:
    """The HF config of --model or --random-init, read without building any module."""
    if args.model:
        return checkpoint_config(args.model)
    tokenizer = tiny_tokenizer()
    return preset_config(args.random_init, len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"))


def check_sizes(hf_config: Any, config: HIVTPConfig, batches: tuple[int, ...], crops: int, device: torch.device,
                dtype: torch.dtype) -> None:
    """Refuse, before anything is built, what cannot run: score layers past the encoder, or a batch whose
    vision tower alone needs more memory than the device has free (a lower bound: hidden states + pixels)."""
    vision = hf_config.vision_config
    config.check_encoder(vision.num_hidden_layers)
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    per_image = ((vision.num_hidden_layers + 1) * tokens * vision.hidden_size + 3 * vision.image_size**2) * crops
    need = max(batches) * per_image * torch.finfo(dtype).bits // 8
    free = available_memory_bytes(device)
    if need > free:
        raise ValueError(f"--batch {max(batches)} needs at least {need / 2**30:,.1f} GiB for the vision tower alone; "
                         f"{device} has {free / 2**30:,.1f} GiB free")


def build_on(device: torch.device, dtype: torch.dtype, build: Callable[[], T]) -> T:
    """Construct modules with their parameters created directly on `device` in `dtype`."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            return build()
    finally:
        torch.set_default_dtype(previous)


def random_llava(
    name: str, device: torch.device, dtype: torch.dtype, seed: int = 0, vision_only: bool = False
) -> tuple[Any, Any]:
    """(model, processor) with random weights, built on `device` in `dtype` (no fp32 copy on the host).

    vision_only: the language model shrinks to no layers and the demo vocabulary; the tower, the
    projector and NeXT's image_newline keep their real sizes, so a 7B preset's vision path fits a CPU.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown --random-init {name!r}; expected one of {', '.join(PRESETS)}")
    if name != "tiny" and device.type != "cuda" and not vision_only:
        raise ValueError(f"--random-init {name} needs a GPU (fp16 weights are ~14 GB); use --random-init tiny on the CPU")
    tokenizer = tiny_tokenizer()
    config = preset_config(name, len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"))
    if vision_only:
        config.text_config.num_hidden_layers = 0
        config.text_config.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    model = build_on(device, dtype, lambda: MODEL_CLASSES[config.model_type](config))
    vision = config.vision_config
    pinpoints = getattr(config, "image_grid_pinpoints", NEXT_PINPOINTS)
    processor = tiny_processor(config.model_type, tokenizer, vision.image_size, vision.patch_size, pinpoints)
    return model.eval(), processor


def resolve_device(text: str | None) -> torch.device:
    """--device, checked like every hivtp command's; default: cuda if available, else cpu."""
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(text)


def resolve_dtype(text: str | None, device: torch.device) -> torch.dtype:
    if text in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[text]


def load_model(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype, vision_only: bool = False
) -> tuple[Any, Any, str]:
    """(model, processor, label) from --model or --random-init (vision_only: the language model shrunk away)."""
    if args.model:
        model, processor = load_llava(args.model, dtype=dtype, device=str(device))
        return model, processor, Path(args.model).name
    model, processor = random_llava(args.random_init, device, dtype, vision_only=vision_only)
    return model, processor, args.random_init


def default_budgets(args: argparse.Namespace, model_type: str) -> tuple[int, ...]:
    if args.budgets:
        return args.budgets
    if args.random_init:
        return PRESET_BUDGETS[args.random_init]
    return MODEL_TYPE_BUDGETS[model_type]


def configurations(budgets: tuple[int, ...], paper: HIVTPConfig) -> list[tuple[str, HIVTPConfig | None]]:
    """full (stock, nothing scored or pruned), HIVTP paper mode, then one row per budget."""
    return [("full", None), ("paper", paper)] + [(f"budget-{k}", replace(paper, budget=k)) for k in budgets]


def bench_image(path: Path | None, hf_config: Any) -> Image.Image:
    """The sample image (or --image). NeXT: resized to the largest square pinpoint, e.g. 672x672 =
    base + 2x2 crops, so a per-crop budget K gives 5K tokens before newlines."""
    image = load_image(path or sample_image_path())
    pinpoints = getattr(hf_config, "image_grid_pinpoints", None) if hf_config is not None else None
    side = max((h for h, w in pinpoints or () if h == w), default=None)
    return image.resize((side, side)) if path is None and side else image


def output_path(args: argparse.Namespace, stage: str, label: str, meta: dict[str, Any]) -> Path:
    """A new JSON name in --out-dir (the PNG goes beside it): stage-model-device-<UTC time>.json."""
    device = "CPU" if meta["device"].startswith("CPU") else meta["device"]
    slug = "".join(c if c.isalnum() or c in "-._" else "-" for c in f"{stage}-{label}-{device}")
    return fresh_name(Path(args.out_dir), slug, ".json")
