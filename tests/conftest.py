"""Shared fixtures: tiny seeded LLaVA checkpoints, saved and reloaded like downloaded ones."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    # Triton kernels run on the CPU interpreter; this must be set before anything imports triton
    # (transformers does, below), else triton builds its language in compiled mode.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PIL import Image
from transformers import AutoProcessor

from hivtp.demo import build_tiny_llava, sample_image_path
from hivtp.loading import load_llava


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default outputs go to a temporary per-user results folder, never the developer's own."""
    monkeypatch.setenv("HIVTP_RESULTS", str(tmp_path_factory.getbasetemp() / "results"))


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {kind: build_tiny_llava(root / kind, kind=kind, seed=0) for kind in ("llava", "llava_next")}


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bad files and folders of tests/adversarial_inputs.py, by name (read, never changed, by the tests)."""
    from adversarial_inputs import make_bad_world

    return make_bad_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session", params=["llava", "llava_next"])
def tiny(request: pytest.FixtureRequest, tiny_dirs: dict[str, Path]):
    """(kind, model, processor) loaded from disk with from_pretrained."""
    model, _ = load_llava(tiny_dirs[request.param], dtype=None)
    return request.param, model, AutoProcessor.from_pretrained(tiny_dirs[request.param])


@pytest.fixture(scope="session")
def two_images() -> list[Image.Image]:
    """Two different images of different sizes (different NeXT crop grids)."""
    base = Image.open(sample_image_path()).convert("RGB")
    return [base, base.rotate(90).resize((200, 120))]
