"""The trained tiny models shipped in hivtp/data/models: the inference path still reaches the accuracy
their model cards state (a regression test of loading, prompting and pruning, not of training)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import cli_exit_code

from hivtp import HIVTPConfig
from hivtp.demo import SHIPPED, shipped_model
from hivtp.fidelity import accuracy, encode, predict
from hivtp.loading import load_llava
from hivtp.runtime.hf import apply
from hivtp.shapes import held_out

QUESTIONS = held_out(200)  # the first 200 of the 1000 the model cards report


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request: pytest.FixtureRequest):
    directory = shipped_model(request.param)
    model, processor = load_llava(directory)
    return directory, model, processor


def test_accuracy_is_at_least_the_model_cards_minus_3_points(shipped) -> None:
    directory, model, processor = shipped
    card = json.loads((directory / "training.json").read_text())["held_out_accuracy"]
    predictions = predict(model, processor, encode(processor, QUESTIONS))
    measured = accuracy(QUESTIONS, predictions.answers)
    assert measured["overall"] >= card["overall"] - 0.03, (measured, card)
    assert predictions.visual_tokens == (64 if model.config.model_type == "llava" else 136)  # NeXT: base + one real crop + 8 newlines


def test_weights_are_small_enough_to_ship(shipped) -> None:
    directory, _, _ = shipped
    assert (directory / "model.safetensors").stat().st_size <= 10 * 2**20
    assert "Held-out accuracy" in (directory / "README.md").read_text()


@torch.inference_mode()
def test_a_budget_of_every_patch_is_the_full_model(shipped) -> None:
    _, model, processor = shipped
    samples = QUESTIONS[:40]
    batches = encode(processor, samples)
    full = predict(model, processor, batches)
    kept = predict(apply(model, HIVTPConfig(budget=64)), processor, batches)
    assert kept.answers == full.answers and kept.visual_tokens == full.visual_tokens
    assert kept.kept_patches == [set(range(64))] * len(samples) and full.kept_patches is None


@torch.inference_mode()
def test_pruned_accuracy_follows_selection(shipped) -> None:
    """The random-drop continuation (stage 3) taught the decoder pruned sequences: at 16 of 64 tokens HIVTP
    keeps nearly every subject and most of the accuracy, random keeps a quarter of them and far less.
    Floors sit well below `hivtp fidelity --questions 2000` (README) to allow for 200 questions."""
    from hivtp.fidelity import method_setup

    _, model, processor = shipped
    batches = encode(processor, QUESTIONS)
    config = HIVTPConfig(budget=16)
    hivtp = accuracy(QUESTIONS, predict(apply(model, config), processor, batches).answers)["overall"]
    random_config, ops = method_setup("random", model, config, torch.Generator().manual_seed(0))
    random = accuracy(QUESTIONS, predict(apply(model, random_config, ops), processor, batches).answers)["overall"]
    assert hivtp >= 0.8 and hivtp - random >= 0.2, (hivtp, random)


def test_fidelity_on_a_small_sample(tmp_path, capsys) -> None:
    """CI's quick shapes run: every row, both layouts, CIs and subject columns; at budget 64 nothing is pruned."""
    out = tmp_path / "fidelity.json"
    assert cli_exit_code(["fidelity", "--questions", "10", "--budgets", "64,4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hivtp-paper" in printed and "orig. positions" in printed and "per question kind" in printed
    record = json.loads(out.read_text())
    assert {"device", "commit", "date_utc", "rows", "positions"} <= set(record) and out.with_suffix(".png").is_file()
    rows = {(r["model"], r["method"], r["budget"]): r for r in record["rows"]}
    for name in SHIPPED.values():
        full = rows[(name, "full", None)]
        assert {"accuracy", "accuracy_ci", "per_kind", "per_kind_ci", "tokens_kept"} <= set(full)
        assert full["accuracy_ci"][0] <= full["accuracy"] <= full["accuracy_ci"][1]
        assert rows[(name, "hivtp-rel", 4)]["layers"] == "2,3,4" and rows[(name, "hivtp-abs", 4)]["layers"] == "6,7,8"
        for method in ("hivtp-rel", "hivtp-abs", "uniform", "random", "cls", "oracle"):
            at_64 = rows[(name, method, 64)]
            assert at_64["accuracy"] == at_64["original_positions"]["accuracy"] == full["accuracy"]  # nothing pruned
            assert at_64["subject_recall"] == at_64["all_subjects_kept"] == 1.0
            assert rows[(name, method, 4)]["tokens_kept"] < full["tokens_kept"]
        assert rows[(name, "oracle", 4)]["subject_recall"] == rows[(name, "objects", None)]["all_subjects_kept"] == 1.0


def test_selection_only_needs_no_decoder(tmp_path, capsys) -> None:
    out = tmp_path / "selection.json"
    assert cli_exit_code(["fidelity", "--questions", "20", "--budgets", "8", "--selection-only", "--out", str(out)]) == 0
    assert "accuracy" not in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert rows and all("accuracy" not in r and 0 <= r["subject_recall"] <= 1 for r in rows)
    assert not out.with_suffix(".png").exists()
