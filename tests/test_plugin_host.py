"""Builds the TensorRT plugin (plugins/hivtpPlugin) with CMake and runs its host unit tests.

No GPU and no TensorRT library are needed: the plugin compiles against TensorRT 10.14 headers fetched
by plugins/hivtpPlugin/fetch_trt_headers.sh, links libcudart only, and the C++ tests replace CUDA with
hooks. Skips (with the reason) only when cmake or nvcc is missing; the GPU smoke tests also need CUDA.

The geometry fixture tests/data/plugin_geometry_cases.json comes from the Python reference
(plugins/geometry.py); `python tests/test_plugin_host.py --write-fixture` regenerates it, and
`test_geometry_fixture_matches_reference` fails when it drifts from the reference.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hivtp.config import HIVTPConfig
from hivtp.plugins.geometry import selection_geometry

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "hivtpPlugin"
BUILD_DIR = ROOT / ".build-plugin"  # gitignored; reused between runs so rebuilds are incremental
TRITON_BUILD_DIR = ROOT / ".build-plugin" / "triton"  # the library with the real Triton AOT table
FIXTURE = ROOT / "tests" / "data" / "plugin_geometry_cases.json"
HEADERS = PLUGIN_DIR / ".trt-headers" / "include"

# (name, grid, config): awkward grids, capped regions, the 0.29 float edge, both modes.
GEOMETRY_CASES = (
    ("paper_24x24_default", (24, 24), HIVTPConfig()),
    ("paper_27x27_default", (27, 27), HIVTPConfig()),
    ("paper_5x7_r2x3_w3", (5, 7), HIVTPConfig(regions=(2, 3), window=3, global_ratio=0.3)),
    ("paper_20x20_ratio029", (20, 20), HIVTPConfig(global_ratio=0.29)),
    ("paper_3x3_regions_capped", (3, 3), HIVTPConfig(regions=(4, 4), global_ratio=0.5)),
    ("paper_1x10_r1x3_w4", (1, 10), HIVTPConfig(regions=(1, 3), window=4, global_ratio=0.4)),
    ("paper_9x6_ratio1_w1", (9, 6), HIVTPConfig(regions=(3, 1), window=1, global_ratio=1.0)),
    ("paper_8x8_ratio0", (8, 8), HIVTPConfig(global_ratio=0.0, window=3)),
    ("budget_24x24_64", (24, 24), HIVTPConfig(budget=64)),
    ("budget_24x24_192", (24, 24), HIVTPConfig(budget=192)),
    ("budget_27x27_100_r3x3", (27, 27), HIVTPConfig(budget=100, regions=(3, 3))),
    ("budget_7x5_over_P", (7, 5), HIVTPConfig(budget=1000, regions=(2, 2))),
    ("budget_2x2_r4x4", (2, 2), HIVTPConfig(budget=3, regions=(4, 4))),
    ("budget_6x11_17", (6, 11), HIVTPConfig(budget=17, regions=(2, 3))),
)


def geometry_cases() -> dict:
    """The fixture: each case's inputs and what plugins/geometry.py computes (+ select.py's window_start)."""
    cases = []
    for name, grid, config in GEOMETRY_CASES:
        geo = selection_geometry(grid, config, torch.device("cpu"))
        sizes = torch.bincount(geo.window_of, minlength=geo.num_windows)  # [W]
        cases.append({
            "name": name, "grid": list(grid), "regions": list(config.regions), "global_ratio": config.global_ratio,
            "window": config.window, "budget": config.budget,
            "expected": {
                "region_of": geo.region_of.tolist(), "region_start": geo.region_start.tolist(),
                "region_quota": geo.region_quota.tolist(), "window_of": geo.window_of.tolist(),
                "window_start": (sizes.cumsum(0) - sizes).tolist(), "num_windows": geo.num_windows,
                "num_global": geo.num_global, "kmax": geo.kmax,
            },
        })
    return {"generator": "tests/test_plugin_host.py --write-fixture (from plugins/geometry.py)", "cases": cases}


def _fixture_text() -> str:
    return json.dumps(geometry_cases(), separators=(",", ":")) + "\n"


def test_geometry_fixture_matches_reference():
    assert FIXTURE.exists(), f"{FIXTURE} missing: run python tests/test_plugin_host.py --write-fixture"
    assert json.loads(FIXTURE.read_text()) == json.loads(_fixture_text()), (
        "plugin_geometry_cases.json drifted from plugins/geometry.py: run python tests/test_plugin_host.py --write-fixture"
    )


def _generator():
    spec = importlib.util.spec_from_file_location("generate_kernels", PLUGIN_DIR / "generate_kernels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


TEST_KERNELS = PLUGIN_DIR / "tests" / "test_kernels.json"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_ctas", 2, "cluster launches"),
        ("global_scratch_size", 64, "no scratch"),
        ("profile_scratch_size", 8, "no scratch"),
        ("arg_types", ["*fp16", "*fp16", "*fp32", "bool"] + ["i32"] * 2 + ["fp32"] + ["i32"] * 8, "no C++ launcher kind"),
        ("num_params", 3, "num_params 3 < 15"),
        ("arch", "sm90", "arch must look like"),
        ("grid", None, "lacks ['grid']"),
        ("grid", '(B, 1, 1)"; x', "not a plain formula"),
    ],
)
def test_generator_refuses_what_the_launcher_cannot_run(tmp_path: Path, field: str, value, message: str):
    records = json.loads(TEST_KERNELS.read_text())
    records[0][field] = value
    (tmp_path / "bad.json").write_text(json.dumps(records))
    result = subprocess.run([sys.executable, str(PLUGIN_DIR / "generate_kernels.py"), "--out-dir", str(tmp_path / "out"),
                             "--source", f"json:{tmp_path / 'bad.json'}"], capture_output=True, text=True)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out" / "hivtpKernelTableData.h").exists()


def test_generator_copies_metadata(tmp_path: Path):
    gen = _generator()
    records = [rec for r in json.loads(TEST_KERNELS.read_text()) for rec in gen.with_ptx(r, gen.to_record(r))]
    ptx = [r for r in records if r.arch == "compute_80"]
    assert len(ptx) == 2 and all(r.cubin.endswith(b"\0") and b".target sm_80" in r.cubin for r in ptx)
    assert gen.main(["--out-dir", str(tmp_path), "--source", f"json:{TEST_KERNELS}"]) == 0
    header = (tmp_path / gen.HEADER_NAME).read_text()
    for i, r in enumerate(records):
        assert (f'{{"{r.kernel}", "{r.variant}", "{r.arch}", "{r.kernel_name}", hivtp_cubin_{i}, {len(r.cubin)}, '
                f"{r.num_warps}, {r.num_ctas}, {r.shared}, {r.num_params}, kArgs{i}, {len(r.arg_names)}, ") in header
        assert (tmp_path / "cubins" / gen._file_name(i, r)).read_bytes() == r.cubin
    assert gen.main(["--out-dir", str(tmp_path / "empty"), "--source", "empty"]) == 0
    assert "kNumKernelEntries = 0;" in (tmp_path / "empty" / gen.HEADER_NAME).read_text()


def _tools_or_skip() -> None:
    missing = [tool for tool in ("cmake", "nvcc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"plugin host tests need {' and '.join(missing)} on PATH (CUDA toolkit + CMake)")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def build_plugin(build_dir: Path = BUILD_DIR, kernel_source: str = "empty") -> Path:
    """Configure + build the library and the host tests; returns the build dir. Skips only without cmake/nvcc."""
    _tools_or_skip()
    if not (HEADERS / "NvInferRuntime.h").exists():  # fetched once (PyPI: kernel-lens==2.0.1), then reused
        _run([str(PLUGIN_DIR / "fetch_trt_headers.sh")], env={**os.environ, "PIP": f"{sys.executable} -m pip"})
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    # the AOT compile never runs on Triton's interpreter (conftest turns it on for the CPU kernel tests)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    _run(["cmake", "-S", str(PLUGIN_DIR), "-B", str(build_dir), *generator, f"-DHIVTP_PYTHON={sys.executable}",
          f"-DHIVTP_KERNEL_SOURCE={kernel_source}", "-DCMAKE_BUILD_TYPE=Release"], env=env)
    _run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)], env=env)
    return build_dir


@pytest.fixture(scope="session")
def plugin_build() -> Path:
    return build_plugin()


def test_host_unit_tests(plugin_build: Path):
    result = _run([str(plugin_build / "hivtp_host_tests"), str(FIXTURE)])
    assert "OK: 0 failure(s)" in result.stdout, result.stdout + result.stderr


def test_library_needs_cudart_not_nvinfer(plugin_build: Path):
    result = _run(["ctest", "--test-dir", str(plugin_build), "--output-on-failure", "-R", "hivtp_no_nvinfer"])
    assert "100% tests passed" in result.stdout, result.stdout


def test_generated_table_is_a_build_output(plugin_build: Path):
    assert (plugin_build / "generated" / "hivtpKernelTableData.h").exists()
    in_source = [p for p in PLUGIN_DIR.rglob("hivtpKernelTableData.h")
                 if not any((parent / "CMakeCache.txt").exists() for parent in p.parents)]
    assert not in_source, f"the generated table must never land in the source tree: {in_source}"


def test_triton_table_matches_launchers():
    """The real table (aot.compile_all, all archs) builds, embeds ELF cubins and matches the C++ launchers."""
    pytest.importorskip("triton")
    try:
        import hivtp.plugins.kernels.aot  # noqa: F401
    except ImportError as e:
        pytest.skip(f"plugins/kernels/aot.py is not importable: {e}")
    build = build_plugin(TRITON_BUILD_DIR, kernel_source="triton")
    result = _run(["ctest", "--test-dir", str(build), "--output-on-failure", "-R", "hivtp_table_contract|hivtp_no_nvinfer"])
    assert "100% tests passed" in result.stdout, result.stdout
    table = _run([str(build / "hivtp_table_check")]).stdout
    for kernel in ("score", "score_reduce", "select", "gather"):
        assert f"ok    {kernel} " in table, table


def _bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous().cpu()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@pytest.fixture(scope="module")
def gpu_smoke() -> Path:
    if not torch.cuda.is_available():
        pytest.skip("the plugin's GPU smoke test needs a CUDA GPU (host tests cover the rest)")
    if os.environ.get("HIVTP_GPU_SMOKE"):  # a prebuilt binary (e.g. built on a machine with the pinned triton)
        return Path(os.environ["HIVTP_GPU_SMOKE"])
    pytest.importorskip("triton")
    return build_plugin(TRITON_BUILD_DIR, kernel_source="triton") / "hivtp_gpu_smoke"


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_gpu_score_matches_reference(gpu_smoke: Path, tmp_path: Path, dtype: str):
    from hivtp.plugins.reference import importance_scores_from_qk

    L, B, H, N, d = 3, 2, 4, 577, 64
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(L, B, H, N, d, generator=gen).to(DTYPES[dtype])  # [L, B, H, N, d]
    k = torch.randn(L, B, H, N, d, generator=gen).to(DTYPES[dtype])  # [L, B, H, N, d]
    (tmp_path / "in.bin").write_bytes(_bytes(q) + _bytes(k))
    _run([str(gpu_smoke), "score", str(L), str(B), str(H), str(N), str(d), dtype, str(tmp_path / "in.bin"),
          str(tmp_path / "out.bin")])
    got = torch.frombuffer(bytearray((tmp_path / "out.bin").read_bytes()), dtype=torch.float32).view(B, N - 1)
    torch.testing.assert_close(got, importance_scores_from_qk(q, k), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("budget", [None, 64])
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_gpu_select_matches_reference(gpu_smoke: Path, tmp_path: Path, budget: int | None, dtype: str):
    from hivtp.plugins.reference import gather_kept, select_tokens

    B, (h, w), D = 3, (24, 24), 160
    config = HIVTPConfig(budget=budget)
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(B, h * w, generator=gen)  # [B, P]
    features = torch.randn(B, h * w, D, generator=gen).to(DTYPES[dtype])  # [B, P, D]
    (tmp_path / "in.bin").write_bytes(_bytes(scores) + _bytes(features))
    _run([str(gpu_smoke), "select", str(B), str(h), str(w), str(D), dtype, *map(str, config.regions),
          repr(config.global_ratio), str(config.window), str(budget or 0), str(tmp_path / "in.bin"),
          str(tmp_path / "out.bin")])
    raw = (tmp_path / "out.bin").read_bytes()
    kmax = int.from_bytes(raw[:4], "little")
    elem = features.element_size()
    sel_end = 4 + B * kmax * D * elem
    selected = torch.frombuffer(bytearray(raw[4:sel_end]), dtype=features.dtype).view(B, kmax, D)
    counts = torch.frombuffer(bytearray(raw[sel_end : sel_end + 4 * B]), dtype=torch.int32)
    indices = torch.frombuffer(bytearray(raw[sel_end + 4 * B :]), dtype=torch.int32).view(B, kmax)
    want_indices, want_counts = select_tokens(scores, (h, w), config)
    assert torch.equal(indices.long(), want_indices) and torch.equal(counts.long(), want_counts)
    assert torch.equal(selected, gather_kept(features, want_indices))


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-fixture"]:
        FIXTURE.write_text(_fixture_text())
        print(f"wrote {FIXTURE}")
    else:
        sys.exit("usage: python tests/test_plugin_host.py --write-fixture")
