"""`hivtp fidelity --images` (agreement mode): runs offline, baselines keep exactly K tokens, and with
nothing pruned every method reproduces the full model's answer (KL 0). Shapes mode: test_shipped_models."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import cli_exit_code

from hivtp.demo import sample_image_path
from hivtp.fidelity import METHODS, baseline_indices
from hivtp.loading import load_image


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    image = load_image(sample_image_path())
    image.save(folder / "a.png")
    image.rotate(90).resize((200, 120)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_fidelity_agreement_mode(image_folder, tiny_dirs, tmp_path, capsys) -> None:
    out = tmp_path / "fidelity.json"
    argv = ["fidelity", "--images", str(image_folder), "--model", str(tiny_dirs["llava"]), "--budgets", "64,8",
            "--max-new-tokens", "3", "--out", str(out)]
    assert cli_exit_code(argv) == 0
    assert "2 images" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert {"device", "date_utc", "commit", "rows", "per_image"} <= set(record)
    rows = {(r["budget"], r["method"]): r for r in record["rows"]}
    assert set(rows) == {(k, m) for k in (64, 8) for m in METHODS}
    assert all(r["images"] == 2 for r in rows.values())
    for method in METHODS:  # budget 64 = all 64 patches: nothing pruned
        assert rows[(64, method)]["same_answer_rate"] == 1.0
        assert rows[(64, method)]["mean_first_token_kl"] == pytest.approx(0.0, abs=1e-5)
    assert all(r["mean_first_token_kl"] >= -1e-6 for r in rows.values())


@pytest.mark.parametrize("method", ["uniform", "random"])
def test_baselines_keep_exactly_k_sorted_unique(method) -> None:
    generator = torch.Generator().manual_seed(0)
    for k in (1, 7, 64, 100):
        indices = baseline_indices(method, 3, 64, k, generator)
        assert indices.shape == (3, min(k, 64))
        for row in indices:
            assert row.unique().tolist() == row.tolist() and 0 <= row.min() and row.max() < 64


def test_empty_folder_one_line_exit_2(tmp_path, capsys) -> None:
    assert cli_exit_code(["fidelity", "--images", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("hivtp: error: no images (.png")


@pytest.mark.parametrize("extra", [["--selection-only"], ["--positions", "renumbered"]])
def test_shapes_options_are_refused_with_images_one_line(image_folder, tiny_dirs, capsys, extra) -> None:
    assert cli_exit_code(["fidelity", "--images", str(image_folder), "--model", str(tiny_dirs["llava"]), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hivtp: error: {extra[0]} has no effect with --images") and err.count("\n") == 1


@torch.inference_mode()
@pytest.mark.parametrize("method", ["uniform", "random", "cls"])
def test_baselines_run_on_llava_next(tiny_dirs, method) -> None:
    """Baselines swap only scoring / selection, so they keep K per crop on NeXT too."""
    from hivtp import HIVTPConfig
    from hivtp.fidelity import method_setup
    from hivtp.runtime.hf import prune_inputs
    from hivtp.loading import load_llava

    model, processor = load_llava(tiny_dirs["llava_next"])
    inputs = processor(images=[load_image(sample_image_path())], text=["<image> what ?"], return_tensors="pt")
    args = (model, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"], inputs["image_sizes"])
    hivtp_run = prune_inputs(*args, HIVTPConfig(budget=8))
    baseline = prune_inputs(*args, *method_setup(method, model, HIVTPConfig(budget=8), torch.Generator().manual_seed(0)))
    assert baseline.counts.tolist() == hivtp_run.counts.tolist() == [8] * len(baseline.counts)
    assert not torch.equal(baseline.indices, hivtp_run.indices)
