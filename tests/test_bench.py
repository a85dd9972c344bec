"""`hivtp bench`: the e2e stage on the tiny random model writes a valid table, JSON and PNG; the torch
backend generates what the stock model generates; select/score run on the CPU; bad input: exit 2."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from PIL import Image

from helpers import cli_exit_code

from hivtp import HIVTPConfig, apply
from hivtp.runtime.compiled import CompiledLM
from hivtp.runtime.torch_backend import TorchBackend
from hivtp.timing import measure, measure_interleaved, summarize, write_atomic

FAST = ["--warmup", "0", "--repeats", "1"]


def test_e2e_tiny_writes_table_json_and_png(tmp_path, capsys) -> None:
    argv = ["bench", "--random-init", "tiny", "--stage", "e2e", "--new-tokens", "3", "--out-dir", str(tmp_path), *FAST]
    assert cli_exit_code(argv) == 0
    out = capsys.readouterr().out
    assert "random weights" in out and "TTFT" in out and "-50%" in out
    (json_path,) = tmp_path.glob("e2e-tiny-*.json")
    record = json.loads(json_path.read_text())
    for key in ("device", "date_utc", "commit", "torch", "transformers", "dtype", "image_size", "rows"):
        assert key in record
    kept = {row["config"]: row["kept_tokens_per_image"] for row in record["rows"]}
    assert kept == {"full": 64, "paper": 32, "budget-32": 32, "budget-16": 16, "budget-8": 8}
    for row in record["rows"]:
        assert row["ttft"]["median_ms"] > 0 and row["bound_ms"] > 0 and row["decode_tokens_per_s"] > 0
        assert row["ttft_over_bound"] == pytest.approx(row["ttft"]["median_ms"] / row["bound_ms"])
    with Image.open(json_path.with_suffix(".png")) as png:
        assert png.format == "PNG" and png.size[0] > 300
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("stage", ["select", "score"])
def test_kernel_stages_on_cpu_report_reference_only(stage, tmp_path, capsys) -> None:
    argv = ["bench", "--random-init", "tiny", "--stage", stage, "--batch", "1,3", "--out-dir", str(tmp_path), *FAST]
    assert cli_exit_code(argv) == 0
    assert "not timed (no CUDA device)" in capsys.readouterr().out
    (json_path,) = tmp_path.glob(f"{stage}-tiny-*.json")
    rows = json.loads(json_path.read_text())["rows"]
    assert [(r["impl"], r["batch"]) for r in rows] == [("reference", 1), ("reference", 3)]
    assert all(r["meets_target"] is None and r["share_of_encoder"] > 0 for r in rows)
    assert ("gb_per_s" in rows[0]) == (stage == "score")


@pytest.mark.parametrize("kind", ["tiny", "llava_next"])
def test_vision_stage_times_stock_floor_and_hivtp_side_by_side(kind, tiny_dirs, tmp_path, capsys) -> None:
    source = ["--random-init", "tiny"] if kind == "tiny" else ["--model", str(tiny_dirs[kind])]
    argv = ["bench", *source, "--stage", "vision", "--batch", "1,2", "--out-dir", str(tmp_path), "--warmup", "0", "--repeats", "3"]
    assert cli_exit_code(argv) == 0
    out = capsys.readouterr().out
    assert "hivtp/floor" in out and "hivtp/stock" in out and "interleaved rounds" in out
    (json_path,) = tmp_path.glob("vision-*.json")
    record = json.loads(json_path.read_text())
    assert record["stage"] == "vision" and record["rounds"] == 3 and record["commit"]
    assert [row["batch"] for row in record["rows"]] == [1, 2]
    for row in record["rows"]:
        assert all(len(row["samples_ms"][path]) == 3 and row[path]["repeats"] == 3 for path in ("stock", "floor", "hivtp"))
        assert all(len(row["cpu_samples_ms"][path]) == 3 for path in ("stock", "floor", "hivtp"))  # CPU: CPU time too
        for clock in (row, row["cpu_time"]):
            assert clock["hivtp_over_floor"] == pytest.approx(clock["hivtp"]["median_ms"] / clock["floor"]["median_ms"])
            assert clock["hivtp_over_stock"] == pytest.approx(clock["hivtp"]["median_ms"] / clock["stock"]["median_ms"])
        assert 0 < row["kept_per_crop"] <= row["kmax"] < row["patches_per_crop"]
    crops = [row["crops"] for row in record["rows"]]
    assert crops[1] == 2 * crops[0] and (crops[0] == 1 if kind == "tiny" else crops[0] > 1)  # NeXT: base + crops
    with Image.open(json_path.with_suffix(".png")) as png:
        assert png.format == "PNG"


def test_interleaved_timing_rotates_the_order() -> None:
    calls: list[str] = []
    samples = measure_interleaved({n: (lambda n=n: calls.append(n)) for n in "abc"}, torch.device("cpu"), warmup=1, rounds=3)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert {n: len(v) for n, v in samples.wall_ms.items()} == {"a": 3, "b": 3, "c": 3}
    assert {n: len(v) for n, v in samples.cpu_ms.items()} == {"a": 3, "b": 3, "c": 3}
    with pytest.raises(ValueError, match="rounds > 0"):
        measure_interleaved({"a": lambda: None}, torch.device("cpu"), warmup=0, rounds=0)


def test_torch_backend_full_equals_stock_generate_and_pruned_equals_wrapper(tiny, two_images) -> None:
    kind, model, processor = tiny
    prompts = ["what color is the circle ?", "describe the picture"]
    full = TorchBackend(model, processor, None)
    prepared = full.prepare(two_images, prompts)
    prefill = full.prefill(prepared, full.vision(prepared))
    ours = torch.cat([prefill.first_tokens[:, None], full.decode(prefill, 3)], dim=1)  # [B, 4]
    stock = model.generate(**prepared.inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    torch.testing.assert_close(ours, stock[:, prepared.inputs["input_ids"].shape[1]:], rtol=0, atol=0)

    config = HIVTPConfig(budget=8)
    pruned = TorchBackend(model, processor, config)
    vision = pruned.vision(prepared)
    wrapped = apply(model, config).generate(**prepared.inputs, max_new_tokens=1, do_sample=False)
    torch.testing.assert_close(pruned.prefill(prepared, vision).first_tokens, wrapped[:, -1], rtol=0, atol=0)
    assert (vision.kept_tokens < vision.full_tokens).all()


@torch.inference_mode()
def test_compiled_backend_generates_what_the_eager_one_does(tiny, two_images) -> None:
    """--compile's prefill / decode on a static KV cache: the same tokens as the eager loop, full and pruned.

    backend "eager" runs dynamo's tracing and the static cache without inductor's code generation
    (minutes on a CPU); CUDA graphs of the vision step are CUDA-only (scripts/gpu_perf.sh)."""
    kind, model, processor = tiny
    prompts = ["what color is the circle ?", "describe the picture"]
    compiled = CompiledLM(model, max_new_tokens=4, backend="eager")
    for config in (None, HIVTPConfig(budget=8)):
        eager, fast = TorchBackend(model, processor, config), TorchBackend(model, processor, config, compiled=compiled)
        prepared = eager.prepare(two_images, prompts)
        want = eager.prefill(prepared, eager.vision(prepared))
        want = torch.cat([want.first_tokens[:, None], eager.decode(want, 4)], dim=1)  # [B, 5]
        got = fast.prefill(prepared, fast.vision(prepared))
        got = torch.cat([got.first_tokens[:, None], fast.decode(got, 4)], dim=1)  # [B, 5]
        assert torch.equal(got, want), (config, got, want)
        steps = []  # a server whose requests all ended stops the decode early (on_step returns True)
        early = fast.decode(fast.prefill(prepared, fast.vision(prepared)), 4, on_step=lambda t: steps.append(t) or len(steps) == 2)
        assert torch.equal(early, want[:, 1:3]) and len(steps) == 2
    with pytest.raises(ValueError, match="sized the KV cache for 4 new tokens, asked for 5"):
        fast.decode(fast.prefill(prepared, fast.vision(prepared)), 5)


def test_timing_stats_and_atomic_write(tmp_path) -> None:
    stats = summarize([float(x) for x in range(1, 11)])
    assert (stats.median_ms, stats.p90_ms, stats.repeats) == (5.5, 9.0, 10)
    calls = []
    assert measure(lambda state: calls.append(state), torch.device("cpu"), warmup=2, repeats=3, setup=lambda: 7).repeats == 3
    assert calls == [7] * 5

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "x.json", broken)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args,message",
    [
        (["--random-init", "llava-1.5-7b", "--device", "cpu"], "needs a GPU"),
        (["--backend", "trtllm", "--engine", "/nonexistent"], "needs tensorrt_llm 1.2.1"),
        (["--backend", "trtllm"], "needs --engine DIR"),
        (["--random-init", "tiny", "--budget", "8", "--budgets", "4"], "not both"),
        (["--backend", "trtllm", "--stage", "vision", "--engine", "x"], "times the e2e stage only"),
        (["--random-init", "tiny", "--stage", "vision", "--compile"], "--compile applies to the torch backend's e2e"),
        (["--random-init", "tiny", "--stage", "vision", "--prompt", "x"], "in the vision stage"),
        (["--random-init", "tiny", "--batch", "0"], "expected a positive integer, got 0"),
        (["--random-init", "tiny", "--model", "x"], "not allowed with argument"),
        (["--stage", "e2e"], "pass --model DIR (a checkpoint) or --random-init"),
    ],
)
def test_bad_input_one_line_exit_2(args, message, capsys) -> None:
    if "tensorrt_llm" in message and importlib.util.find_spec("tensorrt_llm") is not None:
        pytest.skip("tensorrt_llm is installed here")
    code = cli_exit_code(["bench", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
