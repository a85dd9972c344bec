"""scripts/gpu_perf.sh runs only where a GPU is lent, for minutes of a short budget: a renamed option or a
refused combination there would cost the whole run. So here, without a GPU: the script is valid bash, and
every `hivtp.cli bench` line in it parses and passes the command's own argument checks."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from helpers import assert_one_error_line, run_python
from hivtp.cli import build_parser
from hivtp.commands.bench import check_arguments

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_perf.sh"


def bench_lines() -> list[list[str]]:
    """The argument lists after `python3 -m hivtp.cli` in the script's steps."""
    lines = [shlex.split(line.split("-m hivtp.cli", 1)[1]) for line in SCRIPT.read_text().splitlines()
             if line.startswith("step ") and "-m hivtp.cli " in line]
    assert len(lines) == 5, "the script's bench steps changed: update this test"
    return lines


def test_the_script_is_valid_bash() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("argv", bench_lines(), ids=lambda argv: " ".join(argv[:6]))
def test_every_bench_step_passes_the_argument_checks(argv, tmp_path) -> None:
    argv = [tmp_path / "bench" if previous == "--out-dir" else a for previous, a in zip(["", *argv], argv)]
    args = build_parser().parse_args([str(a) for a in argv])
    check_arguments(args)  # raises ValueError on a refused combination
    assert args.out_dir == tmp_path / "bench" and args.random_init in ("llava-1.5-7b", "llava-next-7b")
    if args.stage == "e2e":
        assert args.repeats >= 20  # the TTFT rows need 20+ repeats


def test_the_judge_reads_the_committed_result_files() -> None:
    """scripts/gpu_targets.py over files the benchmarks wrote before (V1 on the CPU, the H200 e2e rows of
    2026-11-26): one judged line per row, each with the row's own verdict."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("gpu_targets", SCRIPT.parent / "gpu_targets.py")
    assert spec and spec.loader
    judge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(judge)
    results = SCRIPT.parents[1] / "results" / "bench"
    for name in ("vision-llava-1.5-7b-CPU-2026-11-29.json", "e2e-llava-1.5-7b-NVIDIA-H200-2026-11-26.json"):
        record = json.loads((results / name).read_text())
        judged = judge.targets_of(results / name, record)
        assert [j["met"] for j in judged] == [row["meets_target"] for row in record["rows"]], name
        assert all(j["source"] == name and j["goal"].startswith("<=") for j in judged)


@pytest.mark.parametrize("argv", [
    ["gpu_targets.py"], ["gpu_targets.py", "{dir}/missing.json"], ["gpu_targets.py", "{dir}/list.json"],
    ["gpu_targets.py", "{dir}/rowless.json"], ["gpu_check_kernels.py"],
])
def test_the_gpu_scripts_refuse_in_one_line(argv, tmp_path) -> None:
    """No file, a bad file, no CUDA: one `hivtp: error:` line and exit 2, as every hivtp entry point."""
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "rowless.json").write_text('{"stage": "e2e"}')
    done = run_python(str(SCRIPT.parent / argv[0]), *[a.format(dir=tmp_path) for a in argv[1:]])
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr)
