"""mypy --strict on build/tensorrt_engine.py against tensorrt-stubs: the TensorRT calls that CI cannot run
are at least checked against the API's signatures.

Pins (CI installs them): `mypy==2.4.1` and `tensorrt-stubs==10.13.0.35.1` with `--no-deps` (its
dependency is the real `tensorrt`, which is not installable without NVIDIA's libraries). These are the
newest stubs published; they describe TensorRT 10.13, one minor before the 10.14 we target, and every
call used here exists unchanged in 10.14's python/src/infer/pyCore.cpp.

The stubs are generated and not valid Python in five signatures (parameters named `in`, a defaulted
parameter before a required one, all in plugin / layer classes this file never touches), which stops
mypy outright. The test therefore checks a copy in which those five lines are repaired and nothing
else, and runs a negative control to prove the stubs are really consulted (a wrong argument type and
a misspelt method must be reported).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "build" / "tensorrt_engine.py"
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")
MYPY_CONFIG = """\
[mypy]
strict = True
follow_imports = silent
incremental = False
[mypy-tensorrt.*,tensorrt_bindings.*]
ignore_errors = True
[mypy-tensorrt_libs]
ignore_missing_imports = True
"""


def stub_root() -> Path | None:
    try:
        dist = metadata.distribution("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        return None
    init = Path(str(dist.locate_file("tensorrt/__init__.pyi")))
    return init.parent.parent if init.is_file() else None


def repaired_stubs(root: Path, out: Path) -> int:
    """Copy the stub packages to out, repairing only `def` lines that do not parse; return how many."""
    repaired = 0
    for package in STUB_PACKAGES:
        shutil.copytree(root / package, out / package)
    for path in out.rglob("*.pyi"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not line.lstrip().startswith("def ") or _parses(line):
                continue
            fixed = re.sub(r"([(,] *)in:", r"\1in_:", line)  # `in` is a keyword
            if not _parses(fixed):
                fixed = re.sub(r" = [^,)]+(?=[,)])", "", fixed)  # defaults before a required parameter
            assert _parses(fixed), f"cannot repair {path.name}: {line.strip()}"
            lines[i] = fixed
            repaired += 1
        path.write_text("\n".join(lines) + "\n")
        ast.parse(path.read_text())
    return repaired


def _parses(line: str) -> bool:
    try:
        ast.parse(line.strip() + " ...")
    except SyntaxError:
        return False
    return True


def run_mypy(target: Path, stubs: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG)
    env = {**os.environ, "MYPYPATH": str(stubs)}
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"), str(target)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy not installed (CI: pip install mypy==2.4.1)")
    root = stub_root()
    if root is None:
        pytest.skip("tensorrt-stubs not installed (CI: pip install --no-deps tensorrt-stubs==10.13.0.35.1)")
    out = tmp_path_factory.mktemp("trt-stubs")
    assert repaired_stubs(root, out) <= 10, "the stubs changed a lot: review the repair before trusting it"
    return out


def test_tensorrt_engine_type_checks_against_the_stubs(stubs: Path, tmp_path: Path) -> None:
    done = run_mypy(TARGET, stubs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_stubs_are_really_consulted(stubs: Path, tmp_path: Path) -> None:
    source = TARGET.read_text()
    broken = source.replace("parser.parse_from_file(str(onnx_path))", "parser.parse_from_file(onnx_path)")
    broken = broken.replace("config.add_optimization_profile(", "config.add_optimization_profiles(")
    assert broken.count("onnx_path)") and broken != source
    target = tmp_path / "broken_engine.py"
    target.write_text(broken)
    done = run_mypy(target, stubs, tmp_path)
    assert done.returncode != 0
    assert '"parse_from_file" of "OnnxParser" has incompatible type "Path"' in done.stdout, done.stdout
    assert '"IBuilderConfig" has no attribute "add_optimization_profiles"' in done.stdout, done.stdout
