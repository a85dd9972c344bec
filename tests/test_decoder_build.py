"""The decoder build's pure parts: the checkpoint view TensorRT-LLM 1.2.1's converter reads, version parsing,
position limits and tensor-parallel arguments. Nothing here runs or fakes TensorRT-LLM: the view is read with
the same transformers call its converter makes (`LlavaConfig.from_pretrained(dir).text_config`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoConfig, LlavaConfig, LlavaNextConfig

from hivtp.build.tensorrt_engine import release_matches
from hivtp.build.trtllm_decoder import (
    build_decoder_engine,
    check_decoder_limits,
    check_tensor_parallel,
    converter_view,
    text_architecture,
)
from hivtp.demo import shipped_model

CONFIG_CLASSES = {"llava": LlavaConfig, "llava_next": LlavaNextConfig}


def converter_text_config(directory: Path, kind: str):
    """What tensorrt_llm/models/llama/config.py::LLaMAConfig.from_hugging_face reads (@89fd9b74)."""
    return CONFIG_CLASSES[kind].from_pretrained(str(directory)).text_config


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_the_converter_view_names_the_text_architecture(kind, tmp_path) -> None:
    source = shipped_model(kind)
    before = (source / "config.json").read_bytes()
    assert converter_text_config(source, kind).architectures is None  # the bug: architectures[0] -> TypeError
    view = converter_view(source, tmp_path)
    assert "llava" in str(view)  # the converter picks LLaVA's weight names only for such paths
    assert converter_text_config(view, kind).architectures[0] == "LlamaForCausalLM"
    for item in source.iterdir():
        linked = view / item.name
        assert linked.exists(), item.name
        if item.name != "config.json":
            assert linked.is_symlink() and linked.resolve() == item.resolve()
    assert (source / "config.json").read_bytes() == before, "the checkpoint itself must not change"
    ours = json.loads((view / "config.json").read_text())
    theirs = json.loads(before)
    ours["text_config"].pop("architectures")
    assert ours == theirs, "only text_config.architectures may differ"


def test_an_existing_architecture_is_kept_and_a_missing_text_config_gets_llama(tmp_path) -> None:
    named = tmp_path / "named"
    shutil.copytree(shipped_model("llava"), named, symlinks=True)
    config = json.loads((named / "config.json").read_text())
    config["text_config"]["architectures"] = ["MistralForCausalLM"]
    config["text_config"]["model_type"] = "mistral"
    (named / "config.json").write_text(json.dumps(config))
    (tmp_path / "a").mkdir()
    assert converter_text_config(converter_view(named, tmp_path / "a"), "llava").architectures == ["MistralForCausalLM"]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"model_type": "llava"}))  # LlavaConfig's default text model
    (tmp_path / "b").mkdir()
    assert converter_text_config(converter_view(bare, tmp_path / "b"), "llava").architectures == ["LlamaForCausalLM"]


def test_text_architecture_refuses_a_model_type_without_a_causal_lm() -> None:
    assert text_architecture({"model_type": "mistral"}) == "MistralForCausalLM"
    with pytest.raises(ValueError, match="no causal LM class"):
        text_architecture({"model_type": "clip_vision_model"})


@pytest.mark.parametrize(
    "found, wanted, ok",
    [("1.2.1", "1.2.1", True), ("1.2.1.post1", "1.2.1", True), ("1.2.1+cu130", "1.2.1", True),
     ("1.2.10", "1.2.1", False), ("1.2.1rc1", "1.2.1", False), ("1.2", "1.2.1", False), ("1.2.1.dev0", "1.2.1", False),
     ("10.14.1.48", "10.14", True), ("10.14", "10.14", True), ("10.140.0", "10.14", False), ("10.1", "10.14", False),
     ("", "10.14", False), ("not a version", "10.14", False)],
)
def test_release_matches_compares_release_numbers(found, wanted, ok) -> None:
    assert release_matches(found, wanted) is ok


def test_decoder_limits_refuse_positions_the_model_does_not_have() -> None:
    check_decoder_limits("float16", 2, 1000, 1024, 64, max_positions=1024)
    with pytest.raises(ValueError, match=r"max_seq_len \(1025\) exceeds the model's max_position_embeddings \(1024\)"):
        check_decoder_limits("float16", 2, 1000, 1025, 64, max_positions=1024)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"max_seq_len": 5000}, "max_position_embeddings"), ({"tp_size": 0}, "tp_size must be a positive int"),
     ({"tp_size": 3}, "tp_size 3 does not divide the language model's num_attention_heads")],
)
def test_decoder_build_checks_its_arguments_before_tensorrt_llm(kwargs, match, tmp_path) -> None:
    """Explicit limits past the positions, bad tp_size: one line before any package is needed."""
    with pytest.raises(ValueError, match=match):
        build_decoder_engine(shipped_model("llava"), tmp_path / "decoder", "float16", 2, max_multimodal_len=64, **kwargs)
    assert not (tmp_path / "decoder").exists()


def test_tensor_parallel_needs_whole_heads_and_equal_mlp_slices() -> None:
    text = AutoConfig.from_pretrained(str(shipped_model("llava"))).text_config
    check_tensor_parallel(text, 1)
    check_tensor_parallel(text, text.num_attention_heads)
    for tp_size, match in [(0, "positive"), (True, "positive"), (text.num_attention_heads + 1, "does not divide")]:
        with pytest.raises(ValueError, match=match):
            check_tensor_parallel(text, tp_size)
    grouped = type(text)(num_attention_heads=32, num_key_value_heads=8, intermediate_size=11008, hidden_size=4096)
    check_tensor_parallel(grouped, 16)  # 8 kv heads replicated over 16 ranks
    with pytest.raises(ValueError, match="key/value heads"):
        check_tensor_parallel(type(text)(num_attention_heads=36, num_key_value_heads=12, intermediate_size=36 * 8,
                                         hidden_size=36 * 8), 9)
