"""`hivtp generate`: the offline demo works; bad input gets one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import cli_exit_code, run_cli

from hivtp.cli import main


def test_demo_runs_offline_and_reports_tokens_and_ttft() -> None:
    result = run_cli("generate", "--max-new-tokens", "3", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "shipped tiny LLaVA-1.5" in result.stdout and "answer: red\n" in result.stdout
    assert "visual tokens kept: 32 / 64 (paper mode)" in result.stdout
    assert "TTFT:" in result.stdout


def test_budget_and_a_checkpoint_directory(tiny_dirs, capsys) -> None:
    assert main(["generate", "--model", str(tiny_dirs["llava_next"]), "--budget", "8", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "shipped tiny" not in out and "(budget mode)" in out


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    not_llava = tmp_path / "bert"
    not_llava.mkdir()
    (not_llava / "config.json").write_text(json.dumps({"model_type": "bert"}))
    no_config = tmp_path / "empty"
    no_config.mkdir()
    return {"corrupt": corrupt, "not_llava": not_llava, "no_config": no_config}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--image", "{corrupt}"], "cannot read image"),
        (["--image", "/no/such/image.png"], "image not found"),
        (["--model", "/no/such/dir"], "model directory not found"),
        (["--model", "{not_llava}"], "holds a 'bert' model"),
        (["--model", "{no_config}"], "no config.json"),
        (["--budget", "0"], "expected a positive integer, got 0"),
        (["--budget", "ten"], "expected a positive integer, got 'ten'"),
        (["--score-layers", "6,7,30"], "go beyond the vision encoder's 10 layers"),
        (["--score-layers", "middle"], "expected 'relative' or comma-separated layer indices, got 'middle'"),
        (["--score-layers", "6,-1"], "expected layer indices >= 0, got '6,-1'"),
        (["--score-layers", ""], "expected 'relative' or comma-separated layer indices, got ''"),
        (["--score-layers", "3,3"], "score_layers must not repeat a layer"),
        (["--regions", "2"], "regions must be two positive ints"),
        (["--device", "tpu9"], "unknown device 'tpu9'"),
    ],
)
def test_bad_input_one_line_exit_2(args, message, bad_files, capsys) -> None:
    assert cli_exit_code(["generate", *[a.format(**bad_files) for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("hivtp: error:")

