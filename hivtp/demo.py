"""Tiny LLaVA-1.5 / LLaVA-NeXT: seeded random checkpoints for tests, and the trained ones we ship.

No model hub is reachable from CI or from a fresh machine. Tests and speed benchmarks build real HF
checkpoints (model, word-level tokenizer, processor) from configs with seeded random weights, save
them and load them back with `from_pretrained(dir)`. The demo, `hivtp viz` and `hivtp fidelity` use
the same architecture trained on the synthetic shapes task (`shipped_model`; recipe in
scripts/train_tiny_llava.py), so they answer questions correctly on every machine.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

try:  # transformers 5: the PIL image processors (the default ones need torchvision, and say so on every use)
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    from transformers import LlavaNextImageProcessorPil as LlavaNextImageProcessor
except ImportError:  # transformers 4: the default classes are the PIL ones
    from transformers import CLIPImageProcessor, LlavaNextImageProcessor

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
WORDS = (
    "a an the is are of in on to and what which how many where color shape left right top bottom "
    "red green blue yellow white black circle square triangle star one two three four five yes no "
    "picture image describe there this that shapes object at or USER ASSISTANT : ? . ,"
).split()
IMAGE_SIDE, PATCH = 112, 14  # an 8x8 patch grid: 64 patches + CLS
NEXT_PINPOINTS = [[112, 224], [224, 112], [224, 224]]
# "USER: question <image> ASSISTANT:": text before the image, so the image tokens can see the question
# under causal attention, which the shipped models' training relies on (scripts/train_tiny_llava.py).
# LLaVA-1.5's own training data puts <image> before or after the question. Content may be a list of
# parts (processors, lmms-eval's chat llava_hf) or one string with its own "<image>" tokens (lmms-eval's
# simple llava_hf sends "<image>\nquestion"): both render the same, text first.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: "
    "{% if m['content'] is string %}"
    "{{ m['content'].replace('<image>', '').strip() }} {% for _ in range(m['content'].count('<image>')) %}<image> {% endfor %}"
    "{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }} {% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% endif %}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


SHIPPED = {"llava": "shapes-llava", "llava_next": "shapes-llava-next"}  # trained: scripts/train_tiny_llava.py


def shipped_model(kind: str = "llava") -> Path:
    """Directory of the trained tiny model shipped with the package (hivtp/data/models/)."""
    path = Path(str(resources.files("hivtp") / "data" / "models" / SHIPPED[kind]))
    if not (path / "config.json").is_file():
        raise ValueError(f"the shipped {kind} model is missing ({path}); reinstall hivtp or pass --model DIR")
    return path


def sample_image_path() -> Path:
    return Path(str(resources.files("hivtp") / "data" / "sample.png"))


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        padding_side="left", model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def tiny_config(kind: str, vocab_size: int, image_token_id: int, text_hidden: int = 64, text_layers: int = 2):
    """CLIP tower (10 layers, hidden 64, CLS + 8x8 patches) and a Llama decoder of the given size."""
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=10, num_attention_heads=4,
        image_size=IMAGE_SIDE, patch_size=PATCH, projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=text_hidden, intermediate_size=2 * text_hidden, num_hidden_layers=text_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0,
        bos_token_id=2, eos_token_id=3,
    )
    common = dict(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=image_token_id,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    if kind == "llava":
        return LlavaConfig(**common)
    if kind == "llava_next":
        return LlavaNextConfig(image_grid_pinpoints=NEXT_PINPOINTS, **common)
    raise ValueError(f"unknown tiny model kind {kind!r} (expected 'llava' or 'llava_next')")


def tiny_processor(
    kind: str, tokenizer: PreTrainedTokenizerFast, image_side: int = IMAGE_SIDE, patch: int = PATCH,
    pinpoints: list[list[int]] = NEXT_PINPOINTS,
):
    """Processor for the demo tokenizer; image_side / patch / pinpoints let random-init 7B shapes reuse it."""
    image_args = dict(
        size={"shortest_edge": image_side}, crop_size={"height": image_side, "width": image_side},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    # num_additional_image_tokens=1 counts the CLS token (transformers 4.57 expands one token too few otherwise)
    proc_args = dict(
        tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    if kind == "llava":
        return LlavaProcessor(image_processor=CLIPImageProcessor(**image_args), **proc_args)
    image_processor = LlavaNextImageProcessor(image_grid_pinpoints=pinpoints, **image_args)
    return LlavaNextProcessor(image_processor=image_processor, **proc_args)


def build_tiny_llava(directory: Path, kind: str = "llava", seed: int = 0) -> Path:
    """Write a tiny seeded checkpoint (model, tokenizer, processor) to `directory`; return it."""
    directory = Path(directory)
    tokenizer = tiny_tokenizer()
    config = tiny_config(kind, vocab_size=len(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model_cls = LlavaForConditionalGeneration if kind == "llava" else LlavaNextForConditionalGeneration
    model = model_cls(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tiny_processor(kind, tokenizer).save_pretrained(directory)
    (directory / "hivtp_demo.json").write_text(json.dumps({"kind": kind, "seed": seed, "weights": "random"}))
    return directory
