"""Helpers shared by the tests: running hivtp (in process or as a subprocess), skip reasons, encoded images, a torch vision-engine stand-in."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from hivtp.cli import main


def cli_exit_code(argv: list[str]) -> int:
    """hivtp's exit code for argv: main()'s return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


def run_python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in a fresh process, with this interpreter."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`hivtp ARGS` in a fresh Python process."""
    return run_python("-m", "hivtp.cli", *args, timeout=timeout)


def assert_one_error_line(stderr: str) -> None:
    """What every hivtp entry point prints for bad input: one `hivtp: error:` line."""
    assert stderr.startswith("hivtp: error: ") and stderr.count("\n") == 1, stderr


def cli_result(capture: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`hivtp ARGS` run in this process (cli_exit_code), shaped like a subprocess result.

    capture is capsys (what Python writes) or capfd (also what libraries write to the file descriptors);
    stdout and stderr hold this command's output only."""
    capture.readouterr()
    code = cli_exit_code(list(args))
    out, err = capture.readouterr()
    return subprocess.CompletedProcess(["hivtp", *args], code, out, err)


def lacking(package: str, have: bool, env: str) -> str:
    """The skip reason: exactly what this machine lacks for a real-engine test ('' when nothing)."""
    import torch

    lacks = [f"{package} (not installed)" * (not have), "a CUDA GPU (none here)" * (not torch.cuda.is_available()),
             f"${env} (not set)" * (not os.environ.get(env))]
    return "needs " + ", ".join(x for x in lacks if x) if any(lacks) else ""


def encoded(image, fmt: str = "PNG", **save) -> bytes:  # type: ignore[no-untyped-def]
    """A PIL image as fmt's file bytes; save: the format's options (exif=, quality=, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def torch_vision(model, config):  # type: ignore[no-untyped-def]
    """The vision engine's contract (pixel_values -> selected, counts, indices) computed by the torch reference:
    a stand-in for the engine's *numbers*, so that the host-side assembly around it is tested on the CPU."""
    import torch

    from hivtp.runtime.hf import select_and_project

    def run(pixel_values: torch.Tensor):  # type: ignore[no-untyped-def]
        _, indices, counts, selected = select_and_project(model, pixel_values, config)
        return selected, counts.to(torch.int32), indices.to(torch.int32)  # the engine's int32 outputs

    return run
