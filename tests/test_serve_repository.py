"""The Triton repository hivtp writes (both flavours), the serve / ask / bench-serve command lines, request checks.

No server is needed except in the test marked so (the server's own loader on the engine flavour); the
engine flavour's TensorRT and TensorRT-LLM models cannot run here, so what is checked is what can be:
the configs parse as Triton's ModelConfig, the loader reads them up to the missing backends, and the
request tensors the Python models produce equal `runtime/trtllm.py`'s.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from hivtp.config import HIVTPConfig
from hivtp.demo import shipped_model
from hivtp.runtime.triton.repository import (
    ENSEMBLE, LISTING, TORCH_LLM, TRTLLM, VISION, VISION_PLAN, ServeOptions, repository_models, write_repository,
)
from helpers import cli_result, encoded, run_cli, torch_vision
from serve_support import HOST, free_ports, sample_variants, serving_setup


def parse(text: str):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def type_name(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(value)


def kind_name(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.ModelInstanceGroup.Kind.Name(value)


def make_engine_output(root: Path, kind: str, tp_size: int = 1, budget: int | None = None) -> Path:
    """A `hivtp build` output's layout and manifest around a file that is NOT a TensorRT plan (nothing here
    can build one): enough for the repository writer and for the server's loader to read the configs."""
    from hivtp.build.manifest import write_manifest
    from hivtp.loading import load_llava

    out = root / f"engines-{kind}-tp{tp_size}"
    (out / "vision").mkdir(parents=True)
    (out / "decoder").mkdir()
    (out / "vision" / "model.engine").write_bytes(b"not a TensorRT plan: repository test placeholder\n")
    model, _ = load_llava(shipped_model(kind), dtype="float32")
    if kind == "llava_next":
        from safetensors.torch import save_file

        save_file({"image_newline": model.model.image_newline.detach().float().contiguous()}, str(out / "vision" / "image_newline.safetensors"))
    config = HIVTPConfig(budget=budget)
    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    kmax = budget or grid * grid
    build = {
        "model_type": kind, "dtype": "fp16", "max_batch": 4, "max_vision_batch": 4 * (5 if kind == "llava_next" else 1),
        "kmax": kmax, "grid": [grid, grid], "image_size": model.config.vision_config.image_size,
        "hidden_size": model.config.text_config.hidden_size, "onnx_only": False, "onnx": "vision/model.onnx",
        "vision_engine": "vision/model.engine", "decoder_engine": "decoder", "tp_size": tp_size,
    }
    write_manifest(out, config=config, model_dir=shipped_model(kind), build=build)
    return out


@pytest.fixture(scope="module")
def engine_outputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engines")
    return {kind: make_engine_output(root, kind) for kind in ("llava", "llava_next")}


def check_ensemble_wiring(models: dict[str, tuple[str, str | None]]) -> None:
    """Every step names a model of the repository, uses its input/output names, and consumes tensors that exist."""
    configs = {name: parse(text) for name, (text, _) in models.items()}
    ensemble = configs[ENSEMBLE]
    available = {t.name for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) <= {t.name for t in model.input}, step.model_name
        assert set(step.output_map) <= {t.name for t in model.output}, step.model_name
        assert set(step.input_map.values()) <= available, step.model_name
        available |= set(step.output_map.values())
        required = {t.name for t in model.input if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses {required - set(step.input_map)}"
    assert {t.name for t in ensemble.output} <= available


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_torch_repository_parses_as_triton_configs(kind) -> None:
    options = ServeOptions(model_dir=shipped_model(kind), instances=3, gpus=(0, 1))
    models = repository_models(options)
    assert set(models) == {ENSEMBLE, "preprocessing", VISION, TORCH_LLM, "postprocessing"}
    check_ensemble_wiring(models)
    llm = parse(models[TORCH_LLM][0])
    assert llm.model_transaction_policy.decoupled and llm.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, list(g.gpus)) for g in llm.instance_group] == [(3, [0, 1])]
    assert [(g.count, kind_name(g.kind)) for g in parse(models["preprocessing"][0]).instance_group] == [(3, "KIND_CPU")]


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_engine_repository_parses_and_follows_trtllm_names(engine_outputs, kind) -> None:
    models = repository_models(ServeOptions(engine_dir=engine_outputs[kind]))
    assert set(models) == {ENSEMBLE, "preprocessing", VISION, VISION_PLAN, TRTLLM, "postprocessing"}
    check_ensemble_wiring(models)
    plan, llm = parse(models[VISION_PLAN][0]), parse(models[TRTLLM][0])
    assert plan.platform == "tensorrt_plan" and [t.name for t in plan.output] == ["features", "counts", "indices"]
    assert llm.backend == "tensorrtllm" and llm.model_transaction_policy.decoupled
    assert llm.parameters["gpt_model_path"].string_value == str((engine_outputs[kind] / "decoder").resolve())
    assert llm.parameters["exclude_input_in_output"].string_value == "true"
    table = next(t for t in llm.input if t.name == "prompt_embedding_table")
    assert type_name(table.data_type) == "TYPE_FP16" and table.allow_ragged_batch


def test_tensor_parallel_decoder_placement(tmp_path) -> None:
    from hivtp.runtime.triton.engine_repository import leader_mode_command

    engines = make_engine_output(tmp_path, "llava", tp_size=2)
    llm = parse(repository_models(ServeOptions(engine_dir=engines, gpus=(0, 1, 2, 3)))[TRTLLM][0])
    assert llm.parameters["gpu_device_ids"].string_value == "0,1;2,3"  # two instances, two ranks each
    assert llm.instance_group[0].count == 2
    with pytest.raises(ValueError, match="multiple of 2"):
        repository_models(ServeOptions(engine_dir=engines, gpus=(0, 1, 2)))
    argv = ["tritonserver", "--model-repository=R", "--backend-config=python,shm-region-prefix-name=p_"]
    command = leader_mode_command(argv, 2)
    assert command[:4] == ["mpirun", "--allow-run-as-root", "-n", "1"] and command.count(":") == 1
    assert "--load-model=tensorrt_llm" in command and "--backend-config=python,shm-region-prefix-name=p_r1_" in command


def test_engine_outputs_that_cannot_be_served_are_refused(tmp_path) -> None:
    engines = make_engine_output(tmp_path, "llava")
    manifest = json.loads((engines / "manifest.json").read_text())
    manifest["build"]["dtype"] = "bf16"
    (engines / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="fp16"):
        repository_models(ServeOptions(engine_dir=engines))
    manifest["build"].update(dtype="fp16", onnx_only=True)
    (engines / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="onnx-only"):
        repository_models(ServeOptions(engine_dir=engines))
    with pytest.raises(ValueError, match="not a hivtp build output"):
        repository_models(ServeOptions(engine_dir=tmp_path))


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_engine_request_tensors_equal_runtime_trtllm(engine_outputs, kind) -> None:
    """Preprocessing + EngineVision, one request at a time then batched, give the fake ids and fp16 prompt
    tables that TRTLLMBackend builds for the same batch (prepare_batch -> pruned_layout -> build_prompt_tables)."""
    from transformers import AutoConfig

    from hivtp.loading import load_llava
    from hivtp.runtime.backend import prepare_batch
    from hivtp.runtime.prompt_table import build_prompt_tables, pruned_layout
    from hivtp.runtime.triton.models import EngineVision, Preprocessing

    model, processor = load_llava(shipped_model(kind), dtype="float32")
    engine = torch_vision(model, HIVTPConfig())
    variants = sample_variants()
    images = variants[:2] + variants[5:6]
    prompts = ["what color is the circle ?", "describe the picture .", "how many shapes are there ?"]
    models = repository_models(ServeOptions(engine_dir=engine_outputs[kind]))
    pre = Preprocessing()
    pre.params = json_params(models["preprocessing"][0])
    pre.setup()
    vision = EngineVision()
    vision.params = json_params(models[VISION][0])
    vision.device = torch.device("cpu")
    vision.setup()
    vision.run_plan = engine
    batch = []
    for image, prompt in zip(images, prompts):
        out = pre.preprocess({"QUERY": np.array([[prompt.encode()]], dtype=object), "IMAGE_BYTES": np.frombuffer(encoded(image), np.uint8)[None],
                              "REQUEST_OUTPUT_LEN": None, "BUDGET": None, "PRUNING_MODE": None})
        batch.append({"input_ids": out["INPUT_ID"], "pixel_values": out["PIXEL_VALUES"], "image_sizes": out["IMAGE_SIZES"], "pruning": out["PRUNING"]})
    served = vision.prompts(batch, 0)
    hf_config = AutoConfig.from_pretrained(shipped_model(kind))
    newline = model.model.image_newline.detach() if kind == "llava_next" else None
    reloaded = [from_png(encoded(i)) for i in images]
    layout = pruned_layout(prepare_batch(processor, reloaded, prompts, torch.device("cpu")).inputs, hf_config, engine, newline)
    expected = build_prompt_tables(layout.sequence, layout.features, hf_config.text_config.vocab_size)
    for b in range(len(images)):
        assert torch.equal(torch.from_numpy(served[b]["INPUT_ID"][0]).long(), expected.input_ids[b]), b
        assert torch.equal(torch.from_numpy(served[b]["OUT_PROMPT_EMBEDDING_TABLE"][0]), expected.tables[b].half()), b
        assert served[b]["OUT_PROMPT_VOCAB_SIZE"][0, 0] == expected.tables[b].shape[0]
    with pytest.raises(ValueError, match="built for paper mode"):
        vision.prompts(batch, 8)


def from_png(data: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def json_params(config_text: str) -> dict[str, str]:
    return {key: value.string_value for key, value in parse(config_text).parameters.items()}


def repository_index(http_port: int) -> list[dict]:
    request = urllib.request.Request(f"http://{HOST}:{http_port}/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.loads(reply.read())


def test_server_loader_reads_the_engine_repository(engine_outputs, tmp_path) -> None:
    """The real server loads the Python models and reads the TensorRT / TensorRT-LLM configs, which then stop
    only at their backends (absent from nvidia-pytriton): the reason names the backend, not the config."""
    from hivtp.runtime.triton.server import TritonServer, backend_directory, server_command

    server_binary, env = serving_setup()
    options = ServeOptions(engine_dir=engine_outputs["llava"])
    write_repository(tmp_path / "repo", options)
    ports = free_ports()
    command = server_command(server_binary, tmp_path / "repo", backend_directory(server_binary, env, tmp_path), HOST, ports, env)
    command.argv += ["--exit-on-error=false", "--strict-readiness=false"]
    server = TritonServer(command, HOST, ports, tmp_path / "log", expected_stubs=0)
    process = subprocess.Popen(command.argv, env=command.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server.process = process
    try:
        deadline, states = time.monotonic() + 240, {}
        while time.monotonic() < deadline:
            try:
                states = {m["name"]: m for m in repository_index(ports.http)}
            except OSError:
                states = {}
            settled = [m for m in states.values() if m.get("state") in ("READY", "UNAVAILABLE")]
            if len(settled) >= 5:  # every model but the ensemble, which is never loaded without its steps
                break
            time.sleep(1)
        assert {n: states[n]["state"] for n in ("preprocessing", VISION, "postprocessing")} == dict.fromkeys(("preprocessing", VISION, "postprocessing"), "READY"), states
        assert "tensorrtllm" in states[TRTLLM]["reason"] and "tensorrt" in states[VISION_PLAN]["reason"], states
        assert states[ENSEMBLE].get("state") != "READY", states[ENSEMBLE]
    finally:
        server.stop()


def test_repository_only_writes_and_never_replaces_unasked(tmp_path, capsys) -> None:
    target = tmp_path / "repo"
    done = cli_result(capsys, "serve", "--repository-only", str(target), "--instances", "2", "--budget", "8")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted([ENSEMBLE, "preprocessing", VISION, TORCH_LLM, "postprocessing", LISTING])
    assert "from hivtp.runtime.triton.models import TorchLLM" in (target / TORCH_LLM / "1" / "model.py").read_text()
    assert json_params((target / "preprocessing" / "config.pbtxt").read_text())["default_pruning"] == "8"
    again = cli_result(capsys, "serve", "--repository-only", str(target))
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"hivtp: error: {target} exists: pass --force to replace an earlier hivtp model repository"]
    assert cli_result(capsys, "serve", "--repository-only", str(target), "--force").returncode == 0
    (target / "notes.txt").write_text("mine")  # --force never deletes what hivtp did not write
    refused = cli_result(capsys, "serve", "--repository-only", str(target), "--force")
    assert refused.returncode == 2 and "hivtp did not write (notes.txt)" in refused.stderr
    for folder in (tmp_path, tmp_path / "not-a-repository"):  # nor a folder that is not a repository of ours
        folder.mkdir(exist_ok=True)
        refused = cli_result(capsys, "serve", "--repository-only", str(folder), "--force")
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert (target / "notes.txt").read_text() == "mine"


# run as subprocesses: a mistake in the checks would start a server inside the test process
COULD_START_A_SERVER = [["serve", "--http-port", "9000", "--grpc-port", "9000"], ["serve", "--tritonserver", "/nonexistent"]]


@pytest.mark.parametrize("argv, needle", [
    (["serve", "--http-port", "0"], "expected a positive integer"),
    (["serve", "--http-port", "70000"], "expected a port"),
    (["serve", "--instances", "0"], "expected a positive integer"),
    (["serve", "--gpus", "a,b"], "expected an integer"),
    (["serve", "--http-port", "9000", "--grpc-port", "9000"], "must differ"),
    (["serve", "--model", "/nonexistent", "--repository-only", "/tmp/x-hivtp"], "model directory not found"),
    (["serve", "--engine", "/nonexistent", "--repository-only", "/tmp/x-hivtp"], "not a hivtp build output"),
    (["serve", "--tritonserver", "/nonexistent"], "tritonserver not found"),
    (["ask", "--url", "nohost"], "expected HOST:PORT"),
    (["ask", "--url", "127.0.0.1:99999"], "expected HOST:PORT"),
    (["ask", "--image", "/nonexistent.png"], "image not found"),
    (["ask", "--budget", "-1"], "expected a positive integer"),
    (["bench", "--stage", "serve", "--random-init", "tiny"], "--stage serve serves a checkpoint"),
])
def test_bad_command_lines_give_one_line(argv, needle, capsys) -> None:
    done = run_cli(*argv) if argv in COULD_START_A_SERVER else cli_result(capsys, *argv)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("hivtp: error:") and needle in lines[0], done.stderr


def test_ask_without_a_server_says_so_in_one_line(capfd) -> None:
    pytest.importorskip("tritonclient.grpc")
    port = free_ports().grpc
    done = cli_result(capfd, "ask", "--url", f"{HOST}:{port}", "--timeout", "20")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("hivtp: error:"), done.stderr


def test_busy_port_is_one_line() -> None:
    from hivtp.runtime.triton.server import Ports, check_ports_free

    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        busy = listener.getsockname()[1]
        with pytest.raises(ValueError, match=f"HTTP port {HOST}:{busy} is busy"):
            check_ports_free(HOST, Ports(busy, busy + 1, busy + 2))


def test_serve_help_is_light() -> None:
    code = "import sys; from hivtp.cli import build_parser; build_parser(); print(sorted(m for m in ('torch', 'numpy', 'transformers', 'tritonclient') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("budget, mode, expected", [
    (None, None, 0), (None, None, 12), (8, None, 8), (8, b"budget", 8), (None, b"paper", 0), (None, b"none", -1), (None, b" Paper ", 0),
])
def test_request_pruning_options(budget, mode, expected) -> None:
    from hivtp.runtime.triton.models import pruning_of

    default = expected if budget is None and mode is None else 0
    assert pruning_of(budget, mode, default) == expected


def test_streamed_pieces_join_to_the_whole_answer() -> None:
    """Postprocessing's anchor decode: pieces decoded one token at a time, joined and stripped = one decode."""
    from hivtp.runtime.triton.models import Postprocessing

    post = Postprocessing()
    post.params = {"tokenizer_dir": str(shipped_model("llava"))}
    post.setup()
    tokens = post.tokenizer.encode("two red circle and one blue square", add_special_tokens=False) + [post.tokenizer.eos_token_id]

    def text(ids: list[int]) -> str:
        out = post.text({"TOKENS_BATCH": np.array([[ids]], dtype=np.int32), "SEQUENCE_LENGTH": np.array([[len(ids)]], dtype=np.int32)})
        return out["OUTPUT"][0, 0].decode()

    whole = post.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    assert "".join(text([t]) for t in tokens).strip() == whole == text(tokens).strip() == "two red circle and one blue square"


@torch.inference_mode()
@pytest.mark.parametrize("budget", [None, 5])
def test_prompt_sequence_inverts_build_prompt_tables(tiny, two_images, budget) -> None:
    """torch_llm's input (TensorRT-LLM's request tensors -> prompt_sequence) embeds exactly what prune_inputs feeds HF."""
    from hivtp.runtime.hf import prune_inputs
    from hivtp.runtime.layout import pad_id_of
    from hivtp.runtime.prompt_table import build_prompt_tables, prompt_sequence

    kind, model, processor = tiny
    prompts = ["USER: <image> what color is the circle ? ASSISTANT:", "<image> describe"]
    x = processor(images=two_images, text=prompts, return_tensors="pt", padding=True)
    pruned = prune_inputs(model, x["input_ids"], x["attention_mask"], x["pixel_values"], x.get("image_sizes"), HIVTPConfig(budget=budget))
    vocab = model.config.text_config.vocab_size
    requests = build_prompt_tables(pruned.sequence, pruned.features, vocab)
    sequence, features = prompt_sequence(requests.input_ids, requests.tables, vocab, pad_id_of(model.config))
    embeds = sequence.embeds(model.get_input_embeddings(), features)  # [B, T', D]
    for b in range(2):
        valid, mine = pruned.attention_mask[b].bool(), sequence.attention_mask[b].bool()
        assert torch.equal(embeds[b][mine], pruned.inputs_embeds[b][valid])
        assert torch.equal(sequence.position_ids[b][mine], pruned.position_ids[b][valid])
    with pytest.raises(ValueError, match="table rows"):
        prompt_sequence([requests.input_ids[0] + 1000], [requests.tables[0]], vocab, 0)


def test_engine_flavour_without_its_backends_is_one_line(engine_outputs) -> None:
    server_binary, env = serving_setup()
    ports = free_ports()
    done = run_cli("serve", "--engine", str(engine_outputs["llava"]), "--tritonserver", str(server_binary), "--python-env", str(env),
                   "--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "tensorrt and tensorrtllm backend(s)" in lines[0], done.stderr
