"""Hostile and careless Python API calls: each one raises ValueError with a message that names the
problem, never a TypeError / IndexError / torch error from deep inside, and never a silent result."""

from __future__ import annotations

import math

import pytest
import torch

import hivtp
from hivtp import HIVTPConfig
from hivtp.build.manifest import check_manifest
from hivtp.demo import shipped_model
from hivtp.loading import check_device, decode_image, load_image, load_llava
from hivtp.plugins.reference import importance_scores_from_qk

GRID = (8, 8)
OK_SCORES = torch.rand(2, 64)


@pytest.fixture(scope="module")
def models():
    """The shipped LLaVA-1.5 and LLaVA-NeXT with valid processor outputs for one image."""
    from PIL import Image

    out = {}
    for kind in ("llava", "llava_next"):
        model, processor = load_llava(shipped_model(kind))
        inputs = processor(images=[Image.new("RGB", (112, 112))], text=["USER: what ? <image> ASSISTANT:"], return_tensors="pt")
        out[kind] = (model, dict(inputs))
    return out


CONFIG_CASES = [
    ({"budget": 0}, "budget"), ({"budget": -1}, "budget"), ({"budget": 1.5}, "budget"), ({"budget": True}, "budget"),
    ({"budget": "3"}, "budget"), ({"score_layers": ()}, "score_layers"), ({"score_layers": (-1,)}, "score_layers"),
    ({"score_layers": "678"}, "score_layers"), ({"score_layers": (1, 1)}, "repeat"), ({"score_layers": (1.0,)}, "score_layers"),
    ({"score_layers": None}, "score_layers"), ({"score_layers": (True,)}, "score_layers"), ({"regions": (0, 2)}, "regions"),
    ({"regions": (2,)}, "regions"), ({"regions": "2x2"}, "regions"), ({"regions": (True, 2)}, "regions"),
    ({"regions": (2, 2, 2)}, "regions"), ({"global_ratio": 1.5}, "global_ratio"), ({"global_ratio": -0.1}, "global_ratio"),
    ({"global_ratio": math.nan}, "global_ratio"), ({"global_ratio": "0.25"}, "global_ratio"), ({"global_ratio": True}, "global_ratio"),
    ({"window": 0}, "window"), ({"window": 2.0}, "window"), ({"window": None}, "window"), ({"feature_layer": "x"}, "feature_layer"),
    ({"feature_layer": 1.5}, "feature_layer"),
]


@pytest.mark.parametrize("fields, message", CONFIG_CASES, ids=[str(f) for f, _ in CONFIG_CASES])
def test_config_refuses(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        HIVTPConfig(**fields)


TOWER_CASES = [  # (config, num_layers, feature_layer, message): a tower described with the wrong types
    (HIVTPConfig(), 24, [], "non-empty list"), (HIVTPConfig(), 24, "x", "feature_layer"), (HIVTPConfig(), 24, None, "feature layer"),
    (HIVTPConfig(), 24, [-2, 1.5], "feature_layer"), (HIVTPConfig(), "24", -2, "at least one layer"),
    (HIVTPConfig(score_layers=(1,)), "24", -2, "at least one layer"), (HIVTPConfig(score_layers=(1,)), None, -2, "at least one layer"),
    (HIVTPConfig(score_layers=(1,)), 24, "x", "feature_layer"),
]


@pytest.mark.parametrize("config, num_layers, feature_layer, message", TOWER_CASES, ids=range(len(TOWER_CASES)))
def test_for_tower_refuses(config, num_layers, feature_layer, message) -> None:
    with pytest.raises(ValueError, match=message):
        config.for_tower(num_layers, feature_layer)
    if not isinstance(config.score_layers, str) and not isinstance(num_layers, int):
        with pytest.raises(ValueError, match=message):
            config.check_encoder(num_layers)


@pytest.mark.parametrize("data", [[("budget", 3)], "budget=3", 3, None, {"speed": "fast"}, {"budget": 0}])
def test_config_from_dict_refuses(data) -> None:
    with pytest.raises(ValueError):
        HIVTPConfig.from_dict(data)


SELECT_CASES = [
    (torch.zeros(2, 64, dtype=torch.complex64), GRID, HIVTPConfig(), "real floating-point"),
    (torch.zeros(2, 64, dtype=torch.int64), GRID, HIVTPConfig(), "real floating-point"),
    (torch.zeros(2, 64, dtype=torch.bool), GRID, HIVTPConfig(), "real floating-point"),
    (torch.zeros(64), GRID, HIVTPConfig(), "2 dimensions"),
    (torch.zeros(1, 2, 64), GRID, HIVTPConfig(), "2 dimensions"),
    (torch.zeros(2, 63), GRID, HIVTPConfig(), "do not match"),
    (torch.zeros(2, 0), GRID, HIVTPConfig(), "do not match"),
    ([[0.1] * 64], GRID, HIVTPConfig(), "torch.Tensor"),
    (None, GRID, HIVTPConfig(), "torch.Tensor"),
    (OK_SCORES.numpy(), GRID, HIVTPConfig(), "torch.Tensor"),
    (OK_SCORES, (8,), HIVTPConfig(), "grid"), (OK_SCORES, (8, 8, 1), HIVTPConfig(), "grid"),
    (OK_SCORES, (8.0, 8.0), HIVTPConfig(), "grid"), (OK_SCORES, (0, 64), HIVTPConfig(), "grid"),
    (OK_SCORES, (-8, -8), HIVTPConfig(), "grid"), (OK_SCORES, "8x8", HIVTPConfig(), "grid"),
    (OK_SCORES, (True, 64), HIVTPConfig(), "grid"), (OK_SCORES, None, HIVTPConfig(), "grid"),
    (OK_SCORES, GRID, {"budget": 8}, "HIVTPConfig"), (OK_SCORES, GRID, None, "HIVTPConfig"),
    (OK_SCORES, GRID, "paper", "HIVTPConfig"), (OK_SCORES, GRID, 8, "HIVTPConfig"),
]


@pytest.mark.parametrize("scores, grid, config, message", SELECT_CASES, ids=range(len(SELECT_CASES)))
def test_select_tokens_refuses(scores, grid, config, message) -> None:
    with pytest.raises(ValueError, match=message):
        hivtp.select_tokens(scores, grid, config)


IMPORTANCE_CASES = [
    ([], "empty"), ((), "empty"), ("attn", "torch.Tensor"), (None, "torch.Tensor"), ([1.0, 2.0], "torch.Tensor"),
    (torch.rand(1, 1, 1, 5, 4), "square"), (torch.rand(1, 1, 1, 1, 1), "N >= 2"), (torch.rand(1, 1, 5, 5), "5 dimensions"),
    (torch.ones(1, 1, 1, 5, 5, dtype=torch.int32), "real floating-point"),
    (torch.ones(1, 1, 1, 5, 5, dtype=torch.complex64), "real floating-point"),
    ([torch.rand(1, 1, 3, 3), torch.rand(1, 1, 4, 4)], "differ in shape"), ([torch.rand(1, 3, 3)], "4 dimensions"),
    (torch.rand(1, 1, 0, 5, 5), "no heads"), (torch.rand(0, 1, 2, 5, 5), "no layers"),  # a mean over nothing: NaN scores
    ([torch.rand(1, 2, 5, 5), torch.rand(1, 2, 5, 5, device="meta")], "one device"),
]


@pytest.mark.parametrize("attentions, message", IMPORTANCE_CASES, ids=range(len(IMPORTANCE_CASES)))
def test_importance_scores_refuses(attentions, message) -> None:
    with pytest.raises(ValueError, match=message):
        hivtp.importance_scores(attentions)


QK = torch.rand(1, 1, 2, 5, 4)
QK_CASES = [
    (QK, torch.rand(1, 1, 2, 6, 4)), (QK[0], QK[0]), (QK.long(), QK.long()), ("q", QK), (QK, None),
    (torch.rand(1, 1, 2, 1, 4), torch.rand(1, 1, 2, 1, 4)), (QK.to(torch.complex64), QK.to(torch.complex64)),
    (torch.rand(1, 1, 2, 5, 0), torch.rand(1, 1, 2, 5, 0)), (torch.rand(1, 1, 0, 5, 4), torch.rand(1, 1, 0, 5, 4)),
    (torch.rand(0, 1, 2, 5, 4), torch.rand(0, 1, 2, 5, 4)), (QK, QK.to("meta")),
]


@pytest.mark.parametrize("queries, keys", QK_CASES, ids=range(len(QK_CASES)))
def test_scores_from_qk_refuses(queries, keys) -> None:
    with pytest.raises(ValueError):
        importance_scores_from_qk(queries, keys)


@pytest.mark.parametrize("block_size", [0, -1, 2.5, True, "64"])
def test_scores_from_qk_refuses_a_bad_block_size(block_size) -> None:
    with pytest.raises(ValueError, match="block_size"):
        importance_scores_from_qk(QK, QK, block_size)


def test_negative_zero_ratio_is_zero() -> None:
    assert str(HIVTPConfig(global_ratio=-0.0).global_ratio) == "0.0"


@pytest.mark.parametrize("config", [{"budget": 8}, "paper", 8, [6, 7, 8], (6, 7, 8)])
def test_apply_refuses_a_config_that_is_not_one(models, config) -> None:
    with pytest.raises(ValueError, match="HIVTPConfig"):
        hivtp.apply(models["llava"][0], config)


@pytest.mark.parametrize("model", [None, {"model": 1}, "llava", torch.nn.Linear(2, 2)])
def test_apply_refuses_what_is_not_llava(model) -> None:
    with pytest.raises(ValueError, match="LLaVA"):
        hivtp.apply(model, HIVTPConfig())


def prune_cases():
    """(kind, field -> bad value, message): one processor output broken at a time."""
    ids = torch.tensor([[1, 2, 3]])
    return [
        ("llava", {"input_ids": [[1, 2, 3]]}, "input_ids"), ("llava", {"input_ids": ids[0]}, "input_ids"),
        ("llava", {"input_ids": ids.float()}, "input_ids"), ("llava", {"attention_mask": torch.ones(1, 2, dtype=torch.long)}, "attention_mask"),
        ("llava", {"attention_mask": torch.ones(3, dtype=torch.long)}, "attention_mask"),
        ("llava", {"attention_mask": torch.ones(1, 999)}, "attention_mask"),
        ("llava", {"pixel_values": torch.rand(1, 3, 224, 224)}, "pixel_values"), ("llava", {"pixel_values": torch.rand(3, 112, 112)}, "pixel_values"),
        ("llava", {"pixel_values": torch.ones(1, 3, 112, 112, dtype=torch.uint8)}, "pixel_values"),
        ("llava", {"pixel_values": None}, "pixel_values"), ("llava", {"pixel_values": torch.rand(1, 1, 112, 112)}, "pixel_values"),
        ("llava_next", {"image_sizes": torch.tensor([[0, 0]])}, "positive"), ("llava_next", {"image_sizes": torch.tensor([[-5, 112]])}, "positive"),
        ("llava_next", {"image_sizes": torch.tensor([[112, 112, 3]])}, "image_sizes"), ("llava_next", {"image_sizes": None}, "image_sizes"),
        ("llava_next", {"image_sizes": torch.tensor([[112.0, 112.0]])}, "image_sizes"),
        ("llava_next", {"image_sizes": torch.tensor([[112, 112], [112, 112]])}, "image_sizes"),
        ("llava_next", {"image_sizes": torch.tensor([112, 112])}, "image_sizes"),
        ("llava_next", {"pixel_values": torch.rand(1, 5, 3, 224, 224)}, "pixel_values"),
        ("llava", {"input_ids": ids[:0], "attention_mask": None}, "no prompt"),  # batch 0
        ("llava", {"input_ids": ids.to(torch.uint8), "attention_mask": None}, "int64 or int32"),
        ("llava", {"input_ids": ids.to(torch.int16), "attention_mask": None}, "int64 or int32"),
        ("llava", {"pixel_values": torch.rand(1, 3, 112, 112, device="meta")}, "one device"),
        ("llava_next", {"pixel_values": torch.rand(1, 5, 3, 112, 112, device="meta")}, "one device"),
    ]


PRUNE_CASES = prune_cases()


@pytest.mark.parametrize("kind, broken, message", PRUNE_CASES, ids=range(len(PRUNE_CASES)))
def test_prune_inputs_refuses(models, kind, broken, message) -> None:
    model, inputs = models[kind]
    args = {**inputs, **broken}
    with pytest.raises(ValueError, match=message):
        hivtp.prune_inputs(model, args["input_ids"], args.get("attention_mask"), args["pixel_values"],
                           args.get("image_sizes"), HIVTPConfig())


@pytest.mark.parametrize("ops", ["triton", 3, {"score": None}])
def test_ops_that_are_not_prune_ops_are_refused(models, ops) -> None:
    model, inputs = models["llava"]
    with pytest.raises(ValueError, match="PruneOps"):
        hivtp.apply(model, HIVTPConfig(), ops=ops)
    with pytest.raises(ValueError, match="PruneOps"):
        hivtp.prune_inputs(model, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"], None, HIVTPConfig(), ops)


def test_prune_inputs_accepts_a_bool_mask(models) -> None:
    model, inputs = models["llava"]
    pruned = hivtp.prune_inputs(model, inputs["input_ids"], inputs["attention_mask"].bool(), inputs["pixel_values"], None, HIVTPConfig())
    assert int(pruned.kept_tokens[0]) == 32


MANIFESTS = ["manifest_list", "manifest_format_2", "manifest_no_versions", "manifest_no_files", "manifest_versions_list",
             "manifest_files_numbers", "manifest_plugin_partial", "manifest_plugin_string", "manifest_bad_config",
             "manifest_unknown_config", "manifest_version_number", "manifest_not_json", "empty_dir", "a_file"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_check_manifest_refuses_partial_or_malformed(world, name) -> None:
    with pytest.raises(ValueError):
        check_manifest(world[name], verify_files=True)


IMAGES = ["empty_file", "text_file", "png_magic_only", "bomb_png", "wide_bomb_png", "zero_width_png", "html_as_png",
          "truncated_png", "truncated_jpeg", "folder_named_png", "not_a_build", "fifo_png", "loop_png"]


@pytest.mark.parametrize("name", IMAGES)
def test_load_image_refuses(world, name) -> None:
    with pytest.raises(ValueError, match="image"):
        load_image(world[name])
    if world[name].is_file():
        with pytest.raises(ValueError, match="image"):
            decode_image(world[name].read_bytes(), name)


@pytest.mark.parametrize("data", [b"", "a string", None, 42, bytearray()])
def test_decode_image_refuses_what_is_not_bytes(data) -> None:
    with pytest.raises(ValueError, match="image"):
        decode_image(data)


CHECKPOINTS = ["empty_dir", "config_not_json", "config_is_a_list", "config_bert", "config_no_type", "config_binary",
               "patch_size_0", "patch_size_negative", "patch_size_string", "patch_larger_than_image", "image_size_0",
               "hidden_not_divisible", "layers_0", "hidden_mismatch", "text_hidden_mismatch", "fewer_text_layers_in_weights",
               "truncated_weights", "garbage_weights", "next_patch_size_0", "config_only", "a_file", "fifo_config",
               "model_type_list", "feature_layer_beyond", "feature_layer_string", "context_string", "vocab_0",
               "image_token_beyond_vocab", "layers_huge", "text_layers_huge", "pinpoints_empty", "pinpoints_string",
               "pinpoints_not_tiles", "pinpoints_huge", "pinpoints_processor_differs", "tokenizer_garbage", "tokenizer_missing",
               "processor_config_missing", "preprocessor_list", "preprocessor_missing", "generation_config_list"]


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_load_llava_refuses(world, name) -> None:
    with pytest.raises(ValueError):
        load_llava(world[name])


LOAD_CASES = [  # load_llava's arguments of the wrong kind: (directory, keyword arguments, message)
    (None, {}, "must be a path"), (123, {}, "must be a path"), (b"/tmp", {}, "must be a path"),
    ("{llava}", {"dtype": "float8"}, "dtype"), ("{llava}", {"dtype": torch.int32}, "dtype"), ("{llava}", {"dtype": 5}, "dtype"),
    ("{llava}", {"hivtp_config": "paper"}, "HIVTPConfig"), ("{llava}", {"hivtp_config": {"budget": 4}}, "HIVTPConfig"),
]


@pytest.mark.parametrize("directory, kwargs, message", LOAD_CASES, ids=range(len(LOAD_CASES)))
def test_load_llava_refuses_arguments_of_the_wrong_kind(directory, kwargs, message) -> None:
    directory = str(shipped_model("llava")) if directory == "{llava}" else directory
    with pytest.raises(ValueError, match=message):
        load_llava(directory, **kwargs)


@pytest.mark.parametrize("path", [None, 123, 4.5, ["a.png"]])
def test_load_image_refuses_what_is_not_a_path(path) -> None:
    with pytest.raises(ValueError, match="must be a path"):
        load_image(path)


@pytest.mark.parametrize("max_pixels", [0, -1, "x", 1.5, None, True])
def test_decode_image_refuses_a_bad_pixel_limit(max_pixels) -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(b"\x89PNG\r\n\x1a\n", "x", max_pixels)


@pytest.mark.parametrize("device", ["meta", "xpu", "tpu", "", "CUDA", "cuda:abc", "mps", "-1", 3.5, None])
def test_check_device_refuses(device) -> None:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="device"):
        check_device(device)
