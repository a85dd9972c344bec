"""AOT compile contract: every kernel variant compiles for every arch, with no scratch and sane metadata.

compile_all runs in a subprocess through the module's CLI, without TRITON_INTERPRET: the CPU tests
set it in this process, which turns the kernels into interpreter objects that cannot be compiled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hivtp.plugins.kernels import aot
from hivtp.plugins.kernels.aot import ARCHS, CONTRACTS, HIDDEN_PARAMS, capability, main

MAX_SHARED = 99 * 1024  # the smallest per-block opt-in limit of the listed archs (sm_120)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("aot")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-m", "hivtp.plugins.kernels.aot", str(out)], check=True, env=env)
    return out, json.loads((out / "kernels.json").read_text())


def test_every_variant_for_every_arch(bundle):
    _, manifest = bundle
    got = [(k["variant"], k["arch"]) for k in manifest["kernels"]]
    expected = [(v.name, arch) for c in CONTRACTS for v in c.variants for arch in ARCHS]
    assert got == expected
    assert len({v.name for c in CONTRACTS for v in c.variants}) == sum(len(c.variants) for c in CONTRACTS)


def test_cubins_and_metadata(bundle):
    out, manifest = bundle
    assert manifest["hidden_params"] == list(HIDDEN_PARAMS)
    contracts = {c.kernel: c for c in CONTRACTS}
    for k in manifest["kernels"]:
        contract = contracts[k["kernel"]]
        variant = next(v for v in contract.variants if v.name == k["variant"])
        assert (out / k["cubin"]).read_bytes()[:4] == b"\x7fELF", k["cubin"]
        ptx = (out / k["ptx"]).read_text()
        assert re.search(rf"^\.target {k['arch']}\b", ptx, re.M), f"{k['ptx']} does not target {k['arch']}"
        entry = re.search(r"\.entry\s+(\w+)\s*\(([^)]*)\)", ptx)
        assert entry.group(1) == k["kernel_name"] == contract.fn.__name__
        assert entry.group(2).count(".param") == k["num_params"] == len(k["arg_names"]) + len(HIDDEN_PARAMS)
        assert k["arg_names"] == [name for name, _ in contract.params]
        assert k["num_warps"] == variant.num_warps and k["num_ctas"] == 1
        assert k["global_scratch_size"] == 0 and k["profile_scratch_size"] == 0
        assert 0 <= k["shared"] <= MAX_SHARED, f"{k['variant']} on {k['arch']} needs {k['shared']} B of shared memory"


@pytest.mark.parametrize("arch", ["sm_90", "sm_80a", "gfx942", "sm80"])
def test_unknown_arch_refused(arch: str):
    with pytest.raises(ValueError, match="unsupported arch"):
        capability(arch)
    assert main(["unused", "--arch", arch]) == 2


def test_readme_lists_the_contract():
    """README.md is what the C++ author reads: its parameter lines must be CONTRACTS, in order."""
    readme = (Path(aot.__file__).parent / "README.md").read_text()
    for contract in CONTRACTS:
        line = f"{contract.kernel}({', '.join(name for name, _ in contract.params)})"
        assert line in readme, f"README.md lacks the contract line {line}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the kernels are only interpreter objects without CUDA")
def test_interpreted_kernels_refused():
    with pytest.raises(RuntimeError, match="without TRITON_INTERPRET"):
        aot.compile_kernel(CONTRACTS[0], CONTRACTS[0].variants[0], "sm_80")


def test_capabilities():
    assert [capability(a) for a in ARCHS] == [80, 90, 100, 120]
