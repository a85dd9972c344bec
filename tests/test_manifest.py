"""manifest.json: what it records, and check_manifest refusing what does not fit this installation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hivtp.build import manifest as mf
from hivtp.config import HIVTPConfig


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint-shaped directory: config.json and a 3 MiB weight file (larger than two samples)."""
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "llava"}')
    (directory / "model.safetensors").write_bytes(os.urandom(3 << 20))
    (directory / "tokenizer.json").write_text("{}")
    return directory


@pytest.fixture()
def built(tmp_path: Path, checkpoint: Path) -> tuple[Path, Path]:
    """(output dir with a manifest, the plugin library it records)."""
    out = tmp_path / "out"
    (out / "vision").mkdir(parents=True)
    (out / "vision" / "model.onnx").write_bytes(b"onnx")
    plugin = tmp_path / "libhivtp_plugin.so"
    plugin.write_bytes(b"plugin v1")
    mf.write_manifest(out, config=HIVTPConfig(budget=64), model_dir=checkpoint, build={"kmax": 64}, plugin_library=plugin)
    return out, plugin


def test_manifest_records_the_build(built, checkpoint) -> None:
    out, plugin = built
    manifest = json.loads((out / mf.MANIFEST_NAME).read_text())
    assert HIVTPConfig.from_dict(manifest["hivtp_config"]) == HIVTPConfig(budget=64)
    assert manifest["build"] == {"kmax": 64}
    assert manifest["source"]["checkpoint_sha256"] == mf.checkpoint_hash(checkpoint)
    assert manifest["files"] == {"vision/model.onnx": mf.file_sha256(out / "vision" / "model.onnx")}
    assert manifest["plugin_library"] == {"name": plugin.name, "sha256": mf.file_sha256(plugin)}
    assert set(manifest["versions"]) == set(mf.RECORDED_PACKAGES)
    assert manifest["versions"]["hivtp"] is not None and manifest["versions"]["torch"] is not None
    assert mf.check_manifest(out, plugin, verify_files=True)["build"] == {"kmax": 64}


def test_checkpoint_hash_follows_config_and_weights(checkpoint) -> None:
    before = mf.checkpoint_hash(checkpoint)
    assert mf.checkpoint_hash(checkpoint) == before
    (checkpoint / "tokenizer.json").write_text('{"changed": true}')
    assert mf.checkpoint_hash(checkpoint) == before, "only config.json and weight files count"
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # inside the last sampled MiB
    weights.write_bytes(bytes(data))
    changed = mf.checkpoint_hash(checkpoint)
    assert changed != before
    (checkpoint / "config.json").write_text('{"model_type": "llava", "x": 1}')
    assert mf.checkpoint_hash(checkpoint) not in (before, changed)


def _edit(out: Path, **changes) -> None:
    path = out / mf.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        manifest[section][key] = value
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("package", mf.CHECKED_PACKAGES)
def test_refuses_other_versions(built, package) -> None:
    out, plugin = built
    _edit(out, **{f"versions__{package}": "0.0.1"})
    with pytest.raises(ValueError, match=f"built with {package} 0.0.1, but ") as err:
        mf.check_manifest(out, plugin)
    assert "\n" not in str(err.value)


def test_provenance_versions_are_not_checked(built) -> None:
    out, plugin = built
    _edit(out, versions__torch="0.0.1", versions__transformers="0.0.1")
    mf.check_manifest(out, plugin)


def test_refuses_another_plugin_library(built, tmp_path) -> None:
    out, plugin = built
    other = tmp_path / "other.so"
    other.write_bytes(b"plugin v2")
    with pytest.raises(ValueError, match="is not the one the engines were built with"):
        mf.check_manifest(out, other)
    with pytest.raises(ValueError, match="pass that library"):
        mf.check_manifest(out)


def test_verify_files(built) -> None:
    out, plugin = built
    (out / "vision" / "model.onnx").write_bytes(b"tampered")
    mf.check_manifest(out, plugin)  # hashes are only read on request: engines are gigabytes
    with pytest.raises(ValueError, match="changed since the build"):
        mf.check_manifest(out, plugin, verify_files=True)
    (out / "vision" / "model.onnx").unlink()
    with pytest.raises(ValueError, match="missing"):
        mf.check_manifest(out, plugin, verify_files=True)


def test_refuses_what_is_no_manifest(tmp_path) -> None:
    with pytest.raises(ValueError, match="no manifest.json"):
        mf.check_manifest(tmp_path)
    (tmp_path / mf.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="cannot parse"):
        mf.check_manifest(tmp_path)
    (tmp_path / mf.MANIFEST_NAME).write_text('{"format": 99}')
    with pytest.raises(ValueError, match="not a hivtp manifest"):
        mf.check_manifest(tmp_path)
