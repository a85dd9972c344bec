"""Every Triton op is complete: kernel + launcher, a torch reference, a test, a benchmark, an AOT contract."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from hivtp.plugins import reference
from hivtp.plugins.kernels import aot

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "plugins" / "kernels"
# launcher -> its reference function (reference.py predates the kernels and keeps its own names)
REFERENCES = {"score": "importance_scores_from_qk", "select": "select_tokens", "gather": "gather_kept"}
NOT_OPS = {"__init__", "aot"}
OPS = sorted(p.stem for p in KERNELS.glob("*.py") if p.stem not in NOT_OPS)


def test_ops_found():
    assert OPS == ["score", "select"]


@pytest.mark.parametrize("op", OPS)
def test_op_has_every_part(op: str):
    module = importlib.import_module(f"hivtp.plugins.kernels.{op}")
    assert callable(getattr(module, op, None)), f"kernels/{op}.py has no launcher {op}()"
    assert hasattr(module, f"{op}_kernel"), f"kernels/{op}.py has no {op}_kernel"
    assert (REPO / "tests" / f"test_kernel_{op}.py").is_file(), f"no tests/test_kernel_{op}.py"
    assert (REPO / "plugins" / "benchmarks" / f"bench_{op}.py").is_file(), f"no plugins/benchmarks/bench_{op}.py"


@pytest.mark.parametrize("launcher", sorted(REFERENCES))
def test_launcher_has_reference(launcher: str):
    assert callable(getattr(reference, REFERENCES[launcher], None)), f"reference.{REFERENCES[launcher]} is missing"


def test_every_kernel_is_compiled_ahead_of_time():
    """The plugin only ships what aot.CONTRACTS lists: a *_kernel missing there would silently not ship."""
    defined = {
        name for op in OPS for name in vars(importlib.import_module(f"hivtp.plugins.kernels.{op}"))
        if name.endswith("_kernel")
    }
    assert {contract.fn.__name__ for contract in aot.CONTRACTS} == defined
