"""`hivtp viz`: offline on the sample image with the demo model, a valid PNG whose counts match selection."""

from __future__ import annotations

import pytest
from PIL import Image
from helpers import cli_exit_code
from transformers import AutoProcessor

from hivtp import HIVTPConfig
from hivtp.demo import sample_image_path
from hivtp.loading import load_image, load_llava
from hivtp.plugins.reference import STAGE_FILL, STAGE_GLOBAL, STAGE_LOCAL
from hivtp.viz import token_map


def test_viz_demo_writes_png(tmp_path, capsys) -> None:
    out = tmp_path / "viz.png"
    assert cli_exit_code(["viz", "--budget", "20", "--out", str(out)]) == 0
    assert f"kept 20 / 64 patches; wrote {out}" in capsys.readouterr().out
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 200
    assert [p.name for p in tmp_path.iterdir()] == ["viz.png"]


@pytest.mark.parametrize("budget", [None, 20])
def test_token_map_stages_match_selection(tiny_dirs, budget) -> None:
    model, _ = load_llava(tiny_dirs["llava_next"], dtype=None)
    processor = AutoProcessor.from_pretrained(tiny_dirs["llava_next"])
    tokens = token_map(model, processor, load_image(sample_image_path()), HIVTPConfig(budget=budget))
    assert tokens.grid == (8, 8) and tokens.scores.shape == (8, 8) and tokens.image.shape == (112, 112, 3)
    assert len(tokens.kept) == (32 if budget is None else 20)
    assert set(tokens.stages.tolist()) <= {STAGE_GLOBAL, STAGE_LOCAL, STAGE_FILL}
    assert (tokens.stages == STAGE_GLOBAL).sum() == (16 if budget is None else 20 // 8 * 4)


def test_viz_bad_image_one_line_exit_2(tmp_path, capsys) -> None:
    assert cli_exit_code(["viz", "--image", str(tmp_path / "none.png"), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip() == f"hivtp: error: image not found: {tmp_path / 'none.png'}"
