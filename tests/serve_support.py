"""What the server tests share: finding a tritonserver and a serving environment, free loopback ports, images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hivtp.runtime.triton.server import Ports, children, find_tritonserver, python_env_version
from hivtp.runtime.triton.server import free_ports as pick_free_ports

HOST = "127.0.0.1"  # every server in the tests binds loopback only


def serving_setup() -> tuple[Path, Path]:
    """(tritonserver, Python environment for its stub), or skip with the reason."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc,http] is not installed (the serve extra)")
    try:
        server = find_tritonserver()
    except ValueError as err:
        pytest.skip(str(err))
    env = Path(os.environ.get("HIVTP_SERVE_PYTHON_ENV") or sys.prefix)
    _, numpy_version = python_env_version(env)
    if int(numpy_version.split(".")[0]) >= 2 and "pytriton" in str(server):
        pytest.skip(f"the serving environment {env} has numpy {numpy_version}; set HIVTP_SERVE_PYTHON_ENV to one with numpy<2 (.ci/run makes it)")
    return server, env


def free_ports() -> Ports:
    return pick_free_ports(HOST)




def sample_variants() -> list:
    """Eight different images of different sizes (NeXT: different crop grids) from the bundled sample."""
    from PIL import Image

    from hivtp.demo import sample_image_path

    base = Image.open(sample_image_path()).convert("RGB")
    variants = [base, base.rotate(90), base.rotate(180), base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return variants + [v.resize((200, 120)) if i % 2 else v.resize((96, 160)) for i, v in enumerate(variants)]


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(child for child, _, _ in children(current))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
