"""hivtp_llava's own parts, without lmms-eval: model_args parsing, the pruned model as lmms-eval's
llava_hf calls it, the entry point, the task folder, and the shipped models' chat template with the
string prompts of llava_hf's simple class. The real harness runs in tests/test_lmms_eval.py."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import torch
from transformers import AutoProcessor

from hivtp import HIVTPConfig, HIVTPModel
from hivtp.demo import shipped_model
from hivtp.generate import build_prompt
from hivtp.lmms import MODEL_NAME, SHAPES_TASK, tasks_dir
from hivtp.lmms.pruning import EvalModel, check_batch_size, split_model_args, unprune
from hivtp.loading import load_llava
from hivtp.runtime.layout import prune_sequence
from hivtp.shapes import held_out

LLAVA_HF_ARGS = ("pretrained", "device", "dtype", "batch_size", "device_map")


def test_model_args_as_lmms_eval_parses_them() -> None:
    rest, config = split_model_args(
        {"pretrained": "/m", "device": "cpu", "budget": 192, "score_layers": "5/6/7", "regions": "3x2",
         "global_ratio": 0.5, "window": 3}, LLAVA_HF_ARGS)
    assert rest == {"pretrained": "/m", "device": "cpu"}
    assert config == HIVTPConfig(budget=192, score_layers=(5, 6, 7), regions=(3, 2), global_ratio=0.5, window=3)
    assert split_model_args({"pretrained": "/m"}, LLAVA_HF_ARGS) == ({"pretrained": "/m"}, HIVTPConfig())
    for paper in ("none", "None", "paper"):
        assert split_model_args({"budget": paper}, LLAVA_HF_ARGS)[1].budget is None
    assert split_model_args({"score_layers": 8, "global_ratio": 1, "regions": "2/2"}, LLAVA_HF_ARGS)[1] == HIVTPConfig(
        score_layers=(8,), global_ratio=1.0)
    assert split_model_args({"score_layers": "relative"}, LLAVA_HF_ARGS)[1] == HIVTPConfig()  # the default, by name
    assert split_model_args({"budget": 10**30}, LLAVA_HF_ARGS)[1].budget == 10**30  # keeps every patch


@pytest.mark.parametrize("args, message", [
    ({"bugdet": 1, "hivtp_budget": 2}, r"unknown model_args \['bugdet', 'hivtp_budget'\]; HIVTP options: budget"),
    ({"budget": ""}, "budget: expected a positive integer, or none / paper for paper mode, got ''"),
    ({"budget": 0}, "budget must be a positive int"),
    ({"budget": -3.0}, "budget must be a positive int or None, got -3$"),  # how lmms-eval reads budget=-3
    ({"budget": 1e400}, "budget: expected a positive integer, or none / paper for paper mode, got inf"),
    ({"budget": 19.5}, "budget: expected a positive integer"),
    ({"budget": True}, "budget: expected a positive integer"),
    ({"score_layers": "6/seven/8"}, "expected numbers separated by /"),
    ({"score_layers": "6,7"}, "expected numbers separated by /"),
    ({"score_layers": "6/6"}, "must not repeat a layer"),
    ({"score_layers": "6.5/7"}, "score_layers must be .relative. or a non-empty tuple"),
    ({"score_layers": ""}, "score_layers must be .relative. or a non-empty tuple"),
    ({"score_layers": -1.0}, r"score_layers must be .relative. or a non-empty tuple of layer indices >= 0, got \(-1,\)"),
    ({"regions": "2x2x2"}, "regions must be two positive ints"),
    ({"regions": "0x2"}, "regions must be two positive ints"),
    ({"global_ratio": "half"}, "global_ratio: expected a number in"),
    ({"global_ratio": float("inf")}, "global_ratio must be a number in"),
    ({"global_ratio": float("nan")}, "global_ratio must be a number in"),
    ({"window": 0}, "window must be a positive int"),
    ({"window": "2"}, "window: expected a positive integer"),
])
def test_bad_model_args_get_one_clear_value_error(args, message) -> None:
    with pytest.raises(ValueError, match=f"^hivtp_llava: .*{message}"):
        split_model_args(args, LLAVA_HF_ARGS)


def test_batch_size_must_be_one() -> None:
    check_batch_size(1)
    check_batch_size("1")
    for bad in (2, "auto", "4", 0, ""):
        with pytest.raises(ValueError, match="batch_size must be 1"):
            check_batch_size(bad)


def test_unprune_puts_every_kept_position_back() -> None:
    ids = torch.tensor([[0, 0, 5, 9, 9, 9, 9, 6], [5, 9, 9, 9, 9, 7, 7, 6]])  # 9: image token; row 0 left padded
    seq = prune_sequence(ids, (ids != 0).long(), 9, full_lengths=torch.tensor([4, 4]), kept_lengths=torch.tensor([1, 3]),
                         pad_token_id=0)
    values = torch.arange(8) + 100 * torch.arange(2)[:, None]  # [B, S]
    shrunk = seq.shrink(values, fill=-1)[..., None].expand(-1, -1, 3).float()  # [B, T, 3]
    back = unprune(shrunk, seq.source_positions, 8)  # [B, S, 3]
    kept = torch.zeros(2, 8, dtype=torch.bool)
    for b, row in enumerate(seq.source_positions):
        kept[b, row[row >= 0]] = True
    assert kept.int().tolist() == [[0, 0, 1, 1, 0, 0, 0, 1], [1, 1, 1, 1, 0, 1, 1, 1]]  # pads and pruned image slots dropped
    assert torch.equal(back[kept], values[kept].float()[:, None].expand(-1, 3)) and (back[~kept] == 0).all()


@pytest.fixture(scope="module")
def shipped_llava():
    return load_llava(shipped_model("llava"))


def test_eval_model_forward_gives_logits_at_prompt_positions(shipped_llava) -> None:
    model, processor = shipped_llava
    samples = held_out(2)
    inputs = processor(images=[s.image() for s in samples], text=[build_prompt(processor, s.question) for s in samples],
                       padding=True, return_tensors="pt")
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.inference_mode():
        stock = model(**inputs, labels=labels)
        everything = EvalModel(model, HIVTPConfig(budget=64))(**inputs, labels=labels)  # 64 patches: nothing pruned
        pruned = EvalModel(model, HIVTPConfig(budget=8))(**inputs, labels=labels)
        plain = HIVTPModel(model, HIVTPConfig(budget=8))(**inputs, labels=labels)  # [B, T, V]: the pruned layout
    assert everything.logits.shape == stock.logits.shape == pruned.logits.shape
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(everything.logits[real], stock.logits[real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(everything.loss, stock.loss, rtol=1e-4, atol=1e-4)
    assert plain.logits.shape[1] < pruned.logits.shape[1]
    torch.testing.assert_close(pruned.loss, plain.loss)
    # the last position (the answer's logits) is text: the pruned layout's last row, back at the prompt's end
    torch.testing.assert_close(pruned.logits[:, -1], plain.logits[:, -1])


def test_eval_model_keeps_generate_errors(shipped_llava) -> None:
    model, processor = shipped_llava
    wrapped = EvalModel(model, HIVTPConfig())
    inputs = processor(images=[held_out(1)[0].image()], text=["USER: no image token ASSISTANT:"], return_tensors="pt")
    with pytest.raises(ValueError, match="image tokens and image features do not match"):
        wrapped.generate(**inputs, max_new_tokens=1)
    assert len(wrapped.errors) == 1 and "do not match" in str(wrapped.errors[0])


def test_entry_point_and_task_folder() -> None:
    (point,) = [ep for ep in entry_points(group="lmms_eval.models") if ep.name == MODEL_NAME]
    assert point.value == "hivtp.lmms:manifest"
    folder = tasks_dir()
    assert {p.name for p in (folder / SHAPES_TASK).iterdir()} >= {f"{SHAPES_TASK}.yaml", "utils.py", "shapes.parquet"}
    printed = subprocess.run([sys.executable, "-m", "hivtp.lmms"], capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and printed.stdout == f"{folder}\n"
    refused = subprocess.run([sys.executable, "-m", "hivtp.lmms", "--tasks"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stdout == "" and refused.stderr.startswith("hivtp: error: unrecognized arguments")


def test_missing_task_folder_is_one_line(monkeypatch, capsys) -> None:
    import hivtp.lmms.__main__ as cli

    def missing() -> None:
        raise ValueError("hivtp's lmms-eval tasks are missing")

    monkeypatch.setattr(cli, "tasks_dir", missing)
    assert cli.main([]) == 2
    assert capsys.readouterr().err == "hivtp: error: hivtp's lmms-eval tasks are missing\n"


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_shipped_chat_template_renders_string_prompts_like_list_prompts(kind) -> None:
    """lmms-eval's simple llava_hf sends "<image>\\nquestion" as one string; the chat class sends parts."""
    tokenizer = AutoProcessor.from_pretrained(shipped_model(kind)).tokenizer
    for sample in held_out(5):
        parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]
        string = [{"role": "user", "content": f"<image>\n{sample.question}"}]
        rendered = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in (parts, string)]
        assert rendered[0] == rendered[1] == f"USER: {sample.question} <image> ASSISTANT:"
