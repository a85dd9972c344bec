"""Bad files a careless or hostile user hands hivtp: images, checkpoints, build folders, manifests.

`make_bad_world(root)` writes them under root and returns name -> path, so test tables can name
them with `{name}` placeholders.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

from PIL import Image

from helpers import encoded
from hivtp.demo import shipped_model


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that claims width x height pixels (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + png_chunk(b"IEND", b"")


def _image_files(root: Path) -> dict[str, Path]:
    files = {
        "empty_file": b"",
        "text_file": b"this is not an image\n",
        "png_magic_only": b"\x89PNG\r\n\x1a\n",
        "bomb_png": png_claiming(30000, 30000),
        "wide_bomb_png": png_claiming(200000, 500),
        "zero_width_png": png_claiming(0, 10),
        "html_as_png": b"<html><body>hi</body></html>",
    }
    out = {}
    for name, data in files.items():
        out[name] = root / f"{name}.png"
        out[name].write_bytes(data)
    out["truncated_png"] = root / "truncated.png"
    out["truncated_png"].write_bytes(encoded(Image.new("RGB", (64, 64), (200, 10, 10)), "PNG")[:60])
    out["truncated_jpeg"] = root / "truncated.jpg"
    jpeg = encoded(Image.new("RGB", (64, 64), (10, 200, 10)), "JPEG")
    out["truncated_jpeg"].write_bytes(jpeg[: len(jpeg) // 3])
    out["folder_named_png"] = root / "folder.png"
    out["folder_named_png"].mkdir()
    out["fifo_png"] = root / "fifo.png"  # reading a pipe with no writer blocks forever
    os.mkfifo(out["fifo_png"])
    out["loop_png"] = root / "loop.png"  # a symbolic link to itself
    out["loop_png"].symlink_to("loop.png")
    out["json_beside_folder_png"] = root / "folder.json"  # not written: the JSON whose figure would be folder.png
    out["json_beside_fifo_png"] = root / "fifo.json"
    return out


def _checkpoint(root: Path, name: str, edit_config=None, weights: bytes | None = None, kind: str = "llava") -> Path:
    """A copy of a shipped model with its config edited and / or its weights replaced."""
    directory = root / name
    shutil.copytree(shipped_model(kind), directory)
    if edit_config is not None:
        config = json.loads((directory / "config.json").read_text())
        edit_config(config)
        (directory / "config.json").write_text(json.dumps(config))
    if weights is not None:
        (directory / "model.safetensors").write_bytes(weights)
    return directory


def _bad_checkpoints(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    empty = root / "empty_dir"
    empty.mkdir()
    out["empty_dir"] = empty
    for name, text in {
        "config_not_json": "{not json",
        "config_is_a_list": "[1, 2, 3]",
        "config_bert": json.dumps({"model_type": "bert"}),
        "config_no_type": json.dumps({"hidden_size": 3}),
        "config_binary": "\udcff",
    }.items():
        directory = root / name
        directory.mkdir()
        (directory / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        out[name] = directory

    def vision(key, value):
        return lambda config: config["vision_config"].__setitem__(key, value)

    edits = {
        "patch_size_0": vision("patch_size", 0),
        "patch_size_negative": vision("patch_size", -14),
        "patch_size_string": vision("patch_size", "14"),
        "patch_larger_than_image": vision("patch_size", 500),
        "image_size_0": vision("image_size", 0),
        "hidden_not_divisible": vision("num_attention_heads", 3),
        "layers_0": vision("num_hidden_layers", 0),
        "hidden_mismatch": vision("hidden_size", 96),
        "text_hidden_mismatch": lambda config: config["text_config"].__setitem__("hidden_size", 96),
        "fewer_text_layers_in_weights": lambda config: config["text_config"].__setitem__("num_hidden_layers", 6),
        "model_type_list": lambda config: config.__setitem__("model_type", ["llava"]),
        "feature_layer_beyond": lambda config: config.__setitem__("vision_feature_layer", 100),
        "feature_layer_string": lambda config: config.__setitem__("vision_feature_layer", "last"),
        "context_string": lambda config: config["text_config"].__setitem__("max_position_embeddings", "x"),
        "vocab_0": lambda config: config["text_config"].__setitem__("vocab_size", 0),
        "image_token_beyond_vocab": lambda config: config.__setitem__("image_token_index", 10**9),
        "layers_huge": vision("num_hidden_layers", 10**12),  # would build for hours
        "text_layers_huge": lambda config: config["text_config"].__setitem__("num_hidden_layers", 10**9),
    }
    for name, edit in edits.items():
        out[name] = _checkpoint(root, name, edit)
    out["truncated_weights"] = _checkpoint(root, "truncated_weights", weights=(shipped_model("llava") / "model.safetensors").read_bytes()[:5000])
    out["garbage_weights"] = _checkpoint(root, "garbage_weights", weights=b"\0" * 4096)
    out["next_patch_size_0"] = _checkpoint(root, "next_patch_size_0", vision("patch_size", 0), kind="llava_next")
    for name, pinpoints in {"pinpoints_empty": [], "pinpoints_string": "x", "pinpoints_not_tiles": [[113, 113]],
                            "pinpoints_huge": [[112000, 112000]]}.items():
        out[name] = _checkpoint(root, name, lambda config, p=pinpoints: config.__setitem__("image_grid_pinpoints", p), kind="llava_next")
    out["pinpoints_processor_differs"] = _checkpoint(root, "pinpoints_processor_differs", kind="llava_next")
    processor = out["pinpoints_processor_differs"] / "preprocessor_config.json"
    processor.write_text(json.dumps({**json.loads(processor.read_text()), "image_grid_pinpoints": [[112, 112]]}))
    for name, (file, text) in {  # the files beside config.json: tokenizer, processor, generation config, chat template
        "tokenizer_garbage": ("tokenizer.json", "{not json"), "tokenizer_missing": ("tokenizer.json", None),
        "processor_config_missing": ("processor_config.json", None), "preprocessor_list": ("preprocessor_config.json", "[1, 2]"),
        "preprocessor_missing": ("preprocessor_config.json", None), "generation_config_list": ("generation_config.json", "[1, 2]"),
        "chat_template_garbage": ("chat_template.jinja", "{not a template with the image"),
    }.items():
        out[name] = _checkpoint(root, name)
        (out[name] / file).unlink()
        if text is not None:
            (out[name] / file).write_text(text)
    config_only = root / "config_only"
    config_only.mkdir()
    shutil.copy(shipped_model("llava") / "config.json", config_only / "config.json")
    out["config_only"] = config_only
    return out


def _manifests(root: Path) -> dict[str, Path]:
    """Build folders with partial or malformed manifests."""
    base = {"format": 1, "hivtp_config": {}, "build": {}, "versions": {}, "files": {}, "plugin_library": None}
    variants = {
        "manifest_list": [1, 2],
        "manifest_format_2": {**base, "format": 2},
        "manifest_no_versions": {k: v for k, v in base.items() if k != "versions"},
        "manifest_no_files": {k: v for k, v in base.items() if k != "files"},
        "manifest_versions_list": {**base, "versions": ["tensorrt"]},
        "manifest_files_numbers": {**base, "files": {"vision/model.onnx": 3}},
        "manifest_plugin_partial": {**base, "plugin_library": {"name": "x.so"}},
        "manifest_plugin_string": {**base, "plugin_library": "x.so"},
        "manifest_bad_config": {**base, "hivtp_config": {"budget": -4}},
        "manifest_unknown_config": {**base, "hivtp_config": {"speed": "fast"}},
        "manifest_version_number": {**base, "versions": {"tensorrt": 10}},
    }
    out = {}
    for name, data in variants.items():
        directory = root / name
        directory.mkdir()
        (directory / "manifest.json").write_text(json.dumps(data))
        out[name] = directory
    broken = root / "manifest_not_json"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    out["manifest_not_json"] = broken
    return out


def make_bad_world(root: Path) -> dict[str, Path]:
    """Every bad file and folder the adversarial tests name."""
    root.mkdir(parents=True, exist_ok=True)
    world = {**_image_files(root), **_bad_checkpoints(root), **_manifests(root)}
    not_a_build = root / "not_a_build"
    not_a_build.mkdir()
    (not_a_build / "thesis.tex").write_text("years of work")
    world["not_a_build"] = not_a_build
    a_file = root / "a_file.txt"
    a_file.write_text("keep me")
    world["a_file"] = a_file
    world["link_to_build"] = root / "link_to_build"
    world["link_to_build"].symlink_to(not_a_build)
    world["loop_dir"] = root / "loop_dir"  # a symbolic-link loop where a folder is expected
    world["loop_dir"].symlink_to("loop_dir")
    world["dangling"] = root / "dangling"  # a link to nothing, where an output folder would be created
    world["dangling"].symlink_to(root / "no-such-target")
    world["fifo_config"] = _checkpoint(root, "fifo_config")  # config.json is a pipe
    (world["fifo_config"] / "config.json").unlink()
    os.mkfifo(world["fifo_config"] / "config.json")
    return world
