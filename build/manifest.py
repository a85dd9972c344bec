"""manifest.json beside the engines: what was built, from what, with which software, and each file's hash.

A TensorRT plan only runs under the TensorRT that built it, with the plugin library it was built with;
`check_manifest` refuses anything else with one line before a deserialisation fails with a long one.
Versions of torch / transformers / onnx are recorded for provenance only: they shape the build, not
the engines' runtime compatibility.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from hivtp.config import HIVTPConfig
from hivtp.outputs import read_json

MANIFEST_NAME = "manifest.json"
IMAGE_NEWLINE_FILE = "vision/image_newline.safetensors"  # LLaVA-NeXT builds: the newline row the host layout inserts
MANIFEST_FORMAT = 1
RECORDED_PACKAGES = ("hivtp", "torch", "transformers", "onnx", "tensorrt", "tensorrt_llm")
CHECKED_PACKAGES = ("hivtp", "tensorrt", "tensorrt_llm")  # the engines depend on these at run time
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
SAMPLE_BYTES = 1 << 20


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (None when not installed); read from metadata, nothing imported."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sampled_sha256(path: Path) -> str:
    """sha256 of the first and last MiB: a 15 GB checkpoint is identified in milliseconds, not minutes."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLE_BYTES))
        f.seek(max(size - SAMPLE_BYTES, 0))
        digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def checkpoint_hash(model_dir: str | Path) -> str:
    """sha256 over config.json and, per weight file (sorted): name, size and a sampled content hash."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    weights = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for path in weights:
        digest.update(f"\0{path.name}\0{path.stat().st_size}\0{_sampled_sha256(path)}".encode())
    return digest.hexdigest()


def gpu_arch() -> str | None:
    """'sm_90' style compute capability of CUDA device 0, None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm_{major}{minor}"


def output_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under directory (relative POSIX paths), the manifest itself excluded."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return {p.relative_to(directory).as_posix(): file_sha256(p) for p in files}


def write_manifest(
    directory: str | Path, *, config: HIVTPConfig, model_dir: str | Path, build: dict[str, Any],
    plugin_library: str | Path | None = None,
) -> Path:
    """Write directory/manifest.json. `build` holds the build's own facts (model_type, kmax, dtype, ...)."""
    directory = Path(directory)
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hivtp_config": config.to_dict(),
        "source": {"path": str(Path(model_dir).resolve()), "checkpoint_sha256": checkpoint_hash(model_dir)},
        "build": build,
        "versions": package_versions(),
        "gpu_arch": gpu_arch(),
        "plugin_library": None if plugin_library is None else {
            "name": Path(plugin_library).name, "sha256": file_sha256(plugin_library),
        },
        "files": output_hashes(directory),
    }
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


# manifest key -> what it must hold; anything else is not a manifest this hivtp wrote
SCHEMA: dict[str, tuple[type, ...]] = {
    "format": (int,), "hivtp_config": (dict,), "build": (dict,), "versions": (dict,), "files": (dict,),
    "plugin_library": (dict, type(None)),
}


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """manifest.json of a build output, its schema checked (a partial or edited manifest: ValueError)."""
    path = Path(directory) / MANIFEST_NAME
    manifest = read_json(path, f"{directory} holds no {MANIFEST_NAME}: not a hivtp build output")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a hivtp manifest of format {MANIFEST_FORMAT}")
    for key, types in SCHEMA.items():
        if not isinstance(manifest.get(key), types):
            raise ValueError(f"{path} is damaged: {key!r} is missing or not a {' or '.join(t.__name__ for t in types)}")
    if not all(isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in manifest["versions"].items()):
        raise ValueError(f"{path} is damaged: 'versions' must map package names to version strings")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise ValueError(f"{path} is damaged: 'files' must map relative paths to sha256 strings")
    plugin = manifest["plugin_library"]
    if plugin is not None and not all(isinstance(plugin.get(k), str) for k in ("name", "sha256")):
        raise ValueError(f"{path} is damaged: 'plugin_library' needs a name and a sha256")
    try:
        HIVTPConfig.from_dict(manifest["hivtp_config"])
    except ValueError as err:
        raise ValueError(f"{path} is damaged: {err}") from None
    return manifest


def built_engines(directory: Path, manifest: dict[str, Any]) -> tuple[Path, Path]:
    """(vision plan, decoder engine folder) a build output's manifest lists; ValueError for an --onnx-only build."""
    build = manifest["build"]
    if build.get("onnx_only") or not build.get("vision_engine") or not build.get("decoder_engine"):
        raise ValueError(f"{directory} holds no engines (built with --onnx-only): rebuild it without that flag")
    return directory / build["vision_engine"], directory / build["decoder_engine"]


def listed_files(directory: Path) -> set[str]:
    """The files a build output's manifest says hivtp wrote (the manifest included); ValueError if none."""
    return set(read_manifest(directory)["files"]) | {MANIFEST_NAME}


def check_manifest(
    directory: str | Path, plugin_library: str | Path | None = None, verify_files: bool = False
) -> dict[str, Any]:
    """The manifest of a build output, if it fits this installation; ValueError (one line) if not.

    Refused: a recorded hivtp / tensorrt / tensorrt_llm version other than the installed one, a plugin
    library whose sha256 differs from the recorded one (or none given when one was recorded) and, with
    verify_files, a missing or changed output file.
    """
    manifest = read_manifest(directory)
    installed = package_versions(CHECKED_PACKAGES)
    for name in CHECKED_PACKAGES:
        built = manifest["versions"].get(name)
        if built is not None and built != installed[name]:
            now = f"{installed[name]} is installed" if installed[name] else "it is not installed"
            raise ValueError(f"{directory} was built with {name} {built}, but {now}")
    _check_plugin(manifest, plugin_library)
    if verify_files:
        _check_files(Path(directory), manifest["files"])
    return manifest


def _check_plugin(manifest: dict[str, Any], plugin_library: str | Path | None) -> None:
    recorded = manifest.get("plugin_library")
    if recorded is None:
        return
    if plugin_library is None:
        raise ValueError(f"the engines were built with the plugin library {recorded['name']}: pass that library")
    actual = file_sha256(plugin_library)
    if actual != recorded["sha256"]:
        raise ValueError(
            f"plugin library {plugin_library} (sha256 {actual[:12]}) is not the one the engines were built "
            f"with ({recorded['name']}, sha256 {recorded['sha256'][:12]})"
        )


def _check_files(directory: Path, recorded: dict[str, str]) -> None:
    for name, digest in recorded.items():
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{path} is listed in the manifest but missing")
        if file_sha256(path) != digest:
            raise ValueError(f"{path} changed since the build (sha256 differs from the manifest)")
