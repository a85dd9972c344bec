"""What a careful user expects where the adversarial tests only check refusals: images loaded as a
viewer shows them, LLaVA-NeXT on any aspect ratio HF accepts, builds that survive a kill, outputs that
never replace what was not asked for, options that are honoured."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hivtp
from helpers import assert_one_error_line, cli_exit_code, encoded, run_cli, run_python
from hivtp.build import pipeline
from hivtp.build.manifest import MANIFEST_NAME, read_manifest
from hivtp.build.staging import exchange, recover, staging
from hivtp.config import HIVTPConfig
from hivtp.demo import shipped_model
from hivtp.loading import decode_image, load_image, load_llava
from hivtp.outputs import fresh_name


# ---- images ----------------------------------------------------------------------------------------


def test_16_bit_greyscale_keeps_its_range(tmp_path) -> None:
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)  # [1, 4]
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 64, 128, 255]  # clipped to white before


def test_float_pixels_nan_and_inf_keep_the_range_and_warn_nothing(tmp_path) -> None:
    import warnings

    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[np.nan, np.inf, 0.5, -np.inf, 1.0]], dtype=np.float32)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would be a second stderr line
        pixels = np.asarray(load_image(path))[0, :, 0]
    assert pixels.tolist() == [0, 255, 128, 0, 255]  # [0, 1] data: one inf pixel does not darken the rest


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": how phones store portrait photos
    loaded = decode_image(encoded(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (20, 40)
    top = np.asarray(loaded)[2, 10]  # the left strip is now at the top
    assert top[2] > 200 and top[0] < 60


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(decode_image(encoded(clear))).reshape(-1, 3).tolist()[0] == [255, 255, 255]
    half = Image.new("LA", (4, 4), (0, 128))
    assert 120 <= np.asarray(decode_image(encoded(half)))[0, 0, 0] <= 135


def test_the_server_decodes_images_as_generate_does() -> None:
    """`hivtp serve` (Preprocessing) loads request bytes with hivtp.loading's rules, under its own pixel limit."""
    from hivtp.runtime.triton.models import decode_image as served

    rotated = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6
    for data in (encoded(rotated, "JPEG", exif=exif.tobytes(), quality=95), encoded(Image.new("RGBA", (4, 4), (10, 20, 30, 0))),
                 encoded(Image.fromarray(np.array([[0, 257 * 64, 65535]], dtype=np.uint16)))):
        array = np.frombuffer(data, dtype=np.uint8)
        assert np.array_equal(np.asarray(served(array, 1 << 20, 1 << 20)), np.asarray(decode_image(data)))
    with pytest.raises(ValueError, match="more than 100 pixels"):
        served(np.frombuffer(encoded(Image.new("RGB", (20, 20))), dtype=np.uint8), 1 << 20, 100)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "1"])
def test_plain_modes_match_pil(mode) -> None:
    image = Image.new("RGB", (6, 6), (12, 200, 77)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = encoded(image, fmt)
    assert np.array_equal(np.asarray(decode_image(data)), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


# ---- LLaVA-NeXT: every aspect ratio HF accepts, token for token with nothing pruned ----------------


@pytest.fixture(scope="module")
def next_model():
    return load_llava(shipped_model("llava_next"))


@pytest.mark.parametrize("size", [(2, 2000), (20, 2000), (2000, 2), (2000, 20), (3, 1000), (1000, 3), (5, 5), (112, 224), (300, 7)])
@torch.inference_mode()
def test_next_extreme_aspect_ratios_equal_stock_hf(next_model, size) -> None:
    model, processor = next_model
    image = Image.new("RGB", size, (160, 40, 200))
    inputs = processor(images=[image], text=["USER: what color ? <image> ASSISTANT:"], return_tensors="pt")
    stock = model(**inputs).logits
    pruned = hivtp.apply(model, HIVTPConfig(budget=10**6))
    torch.testing.assert_close(pruned(**inputs).logits, stock, rtol=1e-4, atol=1e-4)
    assert torch.equal(pruned.last_pruned.kept_tokens, pruned.last_pruned.full_tokens)
    for config in (HIVTPConfig(), HIVTPConfig(budget=3)):  # and pruning runs, within the build's bound
        kept = hivtp.prune_inputs(model, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"],
                                  inputs["image_sizes"], config).kept_tokens
        kmax = hivtp.select_tokens(torch.zeros(1, 64), (8, 8), config)[0].shape[1]
        assert int(kept[0]) <= pipeline.max_visual_tokens(model.config, kmax)


# ---- builds: --force, interrupted swaps, two builds at once -----------------------------------------


def fake_build(folder: Path, tag: str) -> Path:
    """A folder that passes read_manifest, told apart by `tag`."""
    (folder / "vision").mkdir(parents=True)
    (folder / "vision" / "model.onnx").write_text(tag)
    manifest = {"format": 1, "hivtp_config": {}, "build": {"tag": tag}, "versions": {}, "plugin_library": None,
                "files": {"vision/model.onnx": "0" * 64}}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def tag_of(folder: Path) -> str:
    return read_manifest(folder)["build"]["tag"]


def test_interrupted_swap_restores_the_old_build(tmp_path, capsys) -> None:
    out = tmp_path / "engines"
    fake_build(tmp_path / ".engines.old-1a2b3c4d", "old")  # killed after OUT -> .old, before scratch -> OUT
    fake_build(tmp_path / ".engines.building-abcd1234", "new, never confirmed")
    recover(out)
    assert tag_of(out) == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["engines"]
    assert "restored the previous build" in capsys.readouterr().err


def test_leftovers_beside_a_complete_build_are_removed(tmp_path, capsys) -> None:
    out = fake_build(tmp_path / "engines", "current")
    (tmp_path / ".engines.old-99999999" / "vision").mkdir(parents=True)  # killed while deleting the old build
    (tmp_path / ".engines.building-zzzzzzzz").mkdir()  # killed mid-stage
    (tmp_path / ".engines.old-notours").mkdir()  # not our name pattern: kept
    recover(out)
    assert tag_of(out) == "current"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".engines.old-notours", "engines"]
    assert capsys.readouterr().err.count("hivtp: note: removed") == 2


def test_a_failed_build_restored_from_an_old_one_still_needs_force(tmp_path) -> None:
    out = tmp_path / "engines"
    fake_build(tmp_path / ".engines.old-1a2b3c4d", "old")
    with pytest.raises(ValueError, match="pass --force"), staging(out, force=False):
        pass
    assert tag_of(out) == "old"


def test_swap_replaces_and_a_crash_keeps(tmp_path) -> None:
    out = fake_build(tmp_path / "engines", "old")
    with pytest.raises(RuntimeError), staging(out, force=True) as work:
        fake_build(work, "half")
        raise RuntimeError("killed")
    assert tag_of(out) == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["engines"]
    with staging(out, force=True) as work:
        fake_build(work, "new")
    assert tag_of(out) == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["engines"]


def test_exchange_is_atomic_where_the_system_has_it(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if exchange(a, b):
        assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
    else:
        assert (a / "x").read_text() == "a"  # unsupported: nothing moved, the fallback runs instead


def test_two_builds_of_one_output_do_not_race(tmp_path) -> None:
    out = tmp_path / "engines"
    with staging(out, force=False) as work:
        fake_build(work, "first")
        with pytest.raises(ValueError, match="another hivtp build"), staging(out, force=True):
            pass
        assert work.is_dir()  # the second build did not clean up the first one's scratch folder
    assert tag_of(out) == "first"


def test_force_with_the_build_as_working_directory_is_refused(tmp_path, monkeypatch, capsys) -> None:
    out = fake_build(tmp_path / "engines", "mine")
    monkeypatch.chdir(out)
    assert cli_exit_code(["build", "--model", str(shipped_model("llava")), "--output", ".", "--onnx-only", "--force"]) == 2
    assert "current directory" in capsys.readouterr().err and tag_of(out) == "mine"


# ---- outputs: per-user defaults, never a silent overwrite ------------------------------------------


def test_default_names_never_collide(tmp_path) -> None:
    first = fresh_name(tmp_path, "e2e", ".json")
    first.write_text("{}")
    second = fresh_name(tmp_path, "e2e", ".json")
    assert second != first and not second.exists()


def test_viz_writes_to_the_per_user_folder_by_default(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HIVTP_RESULTS", str(tmp_path / "per-user"))
    monkeypatch.chdir(tmp_path)
    assert cli_exit_code(["viz"]) == 0 and cli_exit_code(["viz"]) == 0
    assert len(list((tmp_path / "per-user" / "viz").glob("*.png"))) == 2  # two runs, two files
    assert not (tmp_path / "results").exists()  # never ./results, where the repository keeps its own
    assert str(tmp_path / "per-user" / "viz") in capsys.readouterr().out


# ---- options are honoured -------------------------------------------------------------------------


def test_fidelity_honours_budget_and_fewer_questions_than_kinds(tmp_path, capsys) -> None:
    out = tmp_path / "f.json"
    assert cli_exit_code(["fidelity", "--questions", "3", "--budget", "4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["budget"] for r in rows} == {None, 4} and "-" in capsys.readouterr().out


def test_generate_reports_a_median_ttft_or_none(capsys) -> None:
    assert cli_exit_code(["generate", "--max-new-tokens", "2", "--ttft-repeats", "2"]) == 0
    assert "median after a warm-up" in capsys.readouterr().out
    assert cli_exit_code(["generate", "--max-new-tokens", "2", "--ttft-repeats", "0"]) == 0
    assert "TTFT" not in capsys.readouterr().out


def test_help_and_version_do_not_import_torch() -> None:
    code = "import sys; from hivtp.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("hivtp ")


def test_every_option_has_help() -> None:
    from hivtp.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"hivtp {name} {action.option_strings} has no help text"


@pytest.mark.parametrize("argv", [
    ["-m", "hivtp.build.rtx_check", "--json", "{dir}"],
    ["-m", "hivtp.build.ort_check", "--model", "{dir}", "--onnx", "{dir}/missing.onnx"],
    ["-m", "hivtp.build.ort_check", "--model", str(shipped_model("llava")), "--onnx", str(Path(hivtp.__file__).parent / "data" / "sample.png")],
    ["-m", "hivtp.lmms", "--tasks"],
    [str(Path(__file__).parents[1] / "scripts" / "bench_cli.py"), "--repeats", "0"],
    [str(Path(__file__).parents[1] / "scripts" / "bench_cli.py"), "--repeats", "99999999999"],  # hours of runs
])
def test_other_entry_points_refuse_in_one_line(argv, tmp_path) -> None:
    """`python -m` tools and scripts end as the CLI does (hivtp.cli.one_line_errors): one line, exit 2."""
    done = run_python(*[a.format(dir=tmp_path) for a in argv])
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr)


# ---- clients: a server that never answers ----------------------------------------------------------


def test_ask_gives_up_on_a_silent_server_within_its_timeout(capsys) -> None:
    """A loopback listener that accepts connections and never answers: `hivtp ask --timeout 1` is one line
    within seconds (the gRPC stream's graceful stop used to wait for the pending answer, 20 s or more)."""
    import socket
    import time

    pytest.importorskip("tritonclient.grpc")
    with socket.create_server(("127.0.0.1", 0)) as listener:  # the kernel completes the handshake; nothing answers
        start = time.monotonic()
        code = cli_exit_code(["ask", "--url", f"127.0.0.1:{listener.getsockname()[1]}", "--timeout", "1"])
        elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no answer from the server within 1 s" in err, err
    assert elapsed < 8, elapsed
