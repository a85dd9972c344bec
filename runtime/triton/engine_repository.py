"""The engine flavour's repository: a `hivtp build` output served by Triton's TensorRT and TensorRT-LLM backends.

- `vision_encoder`: the hivtp vision plan (`platform: "tensorrt_plan"`, vision/model.engine copied in as
  1/model.plan). Its Score / Select plugins come from libhivtp_plugin.so, which the TensorRT backend
  loads from `--backend-config=tensorrt,plugins=PATH` (triton-inference-server/tensorrt_backend README,
  "Command-line Options"); `hivtp serve --engine` passes it.
- `multimodal_encoders` (Python, `EngineVision`) calls vision_encoder through BLS and builds each request's
  prompt table and fake ids with the functions `runtime/trtllm.py` uses (`pruned_layout`, `build_prompt_tables`).
- `tensorrt_llm`: the `tensorrtllm` backend on the decoder engine, inputs/outputs/parameters as in
  TensorRT-LLM's `inflight_batcher_llm/tensorrt_llm/config.pbtxt` @0c8de69a. Tensor parallelism: the
  build's manifest gives tp_size; the decoder folder then holds one engine per rank and the backend
  runs one process per rank: either leader mode (`mpirun -n 1 tritonserver ... : -n 1 tritonserver ...`,
  as `triton_backend/scripts/launch_triton_server.py` @0a2e2c1f builds it; `leader_mode_command`) or
  orchestrator mode (TRTLLM_ORCHESTRATOR=1 and `gpu_device_ids`, written when --gpus is given).

Written against those sources, not run: no TensorRT / TensorRT-LLM exists where hivtp's CI runs. What
is checked there: every config parses as Triton's ModelConfig, the server's loader reads them (the
TensorRT and TensorRT-LLM models then stop at their missing backends), and the request tensors equal
`runtime/trtllm.py`'s (tests/test_serve_repository.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hivtp.outputs import read_json
from hivtp.runtime.triton import pbtxt
from hivtp.runtime.triton.pbtxt import Tensor
from hivtp.runtime.triton.repository import (
    ENGINE_VISION_CLASS, ENSEMBLE, LLM_OUTPUTS, MODEL_CLASSES, POSTPROCESSING, PREPROCESSING, TRTLLM, VISION, VISION_PLAN,
    ServeOptions, ensemble_config, llm_inputs, postprocessing_config, preprocessing_config, shim, vision_config,
)

PLAN_FILE = "model.plan"  # Triton's default model file name for tensorrt_plan models


def engine_facts(engine_dir: Path) -> dict[str, Any]:
    """What the repository needs from a `hivtp build` output (manifest.json), checked to be there."""
    from hivtp.build.manifest import built_engines, read_manifest

    manifest = read_manifest(engine_dir)
    build = manifest["build"]
    plan, decoder = built_engines(engine_dir, manifest)
    if build.get("dtype") != "fp16":
        raise ValueError(f"{engine_dir} was built with --dtype {build.get('dtype')}: the Python backend cannot send "
                         "TYPE_BF16 prompt tables to the tensorrtllm backend; serve fp16 engines")
    for path in (plan, decoder):
        if not path.exists():
            raise ValueError(f"{path} is listed in {engine_dir}/manifest.json but missing")
    return {**build, "plan": plan, "decoder": decoder, "source": Path(manifest["source"]["path"]),
            "tp_size": int(build.get("tp_size", 1)), "hivtp_config": manifest["hivtp_config"]}


def vision_plan_config(options: ServeOptions, facts: dict[str, Any]) -> str:
    """pixel_values [n, 3, S, S] -> features [n, Kmax, D], counts [n], indices [n, Kmax] (hivtp.build.export)."""
    side, kmax, hidden = facts["image_size"], facts["kmax"], facts["hidden_size"]
    inputs = [Tensor("pixel_values", "FP32", (3, side, side))]  # the exported ONNX's input type (fp32)
    outputs = [
        Tensor("features", "FP32", (kmax, hidden)), Tensor("counts", "INT32", (1,), reshape=()),
        Tensor("indices", "INT32", (kmax,)),
    ]
    return pbtxt.config(
        pbtxt.header(VISION_PLAN, int(facts["max_vision_batch"]), platform="tensorrt_plan"),
        pbtxt.dynamic_batching(options.queue_delay_us, options.max_queue),
        pbtxt.tensors("input", inputs), pbtxt.tensors("output", outputs),
        pbtxt.instance_group(options.instances, options.gpus or (0,)),
    )


def trtllm_config(options: ServeOptions, facts: dict[str, Any]) -> str:
    """The tensorrtllm backend on the decoder engine; instance kind CPU as in TensorRT-LLM's own config
    (the backend places the engine's ranks on GPUs itself)."""
    params = {
        "gpt_model_type": "inflight_fused_batching", "gpt_model_path": str(facts["decoder"].resolve()),
        "max_beam_width": "1", "batch_scheduler_policy": "guaranteed_no_evict",
        "kv_cache_free_gpu_mem_fraction": "0.8", "exclude_input_in_output": "true",
        "enable_kv_cache_reuse": "false", "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
    }
    if options.gpus:
        ranks = facts["tp_size"]
        if len(options.gpus) % ranks:
            raise ValueError(f"the decoder has tp_size {ranks}: give a multiple of {ranks} GPU ids, got {list(options.gpus)}")
        # orchestrator mode: one entry per tensorrt_llm instance, each the GPUs of its ranks (';' between instances)
        groups = [options.gpus[i : i + ranks] for i in range(0, len(options.gpus), ranks)]
        params["gpu_device_ids"] = ";".join(",".join(map(str, group)) for group in groups)
    return pbtxt.config(
        pbtxt.header(TRTLLM, int(facts["max_batch"]), backend="tensorrtllm"),
        pbtxt.decoupled(),
        pbtxt.dynamic_batching(options.queue_delay_us, options.max_queue),
        pbtxt.tensors("input", llm_inputs("FP16")), pbtxt.tensors("output", LLM_OUTPUTS),
        pbtxt.instance_group(1 if not options.gpus else len(options.gpus) // facts["tp_size"], None),
        pbtxt.parameters(params),
    )


def engine_repository(options: ServeOptions) -> dict[str, tuple[str, str | None]]:
    assert options.engine_dir is not None
    engine_dir = options.engine_dir.resolve()
    facts = engine_facts(engine_dir)
    hf_dir = facts["source"]
    extra = {"engine_dir": str(engine_dir), "vision_model_name": VISION_PLAN}
    return {
        ENSEMBLE: (ensemble_config(options, TRTLLM), None),
        PREPROCESSING: (preprocessing_config(options, hf_dir), shim(MODEL_CLASSES[PREPROCESSING])),
        VISION: (vision_config(options, hf_dir, "FP16", extra), shim(ENGINE_VISION_CLASS)),
        VISION_PLAN: (vision_plan_config(options, facts), None),
        TRTLLM: (trtllm_config(options, facts), None),
        POSTPROCESSING: (postprocessing_config(options, hf_dir), shim(MODEL_CLASSES[POSTPROCESSING])),
    }


def model_files(options: ServeOptions) -> dict[str, Path]:
    """Files copied into version folders: {model name: source}; the vision plan as 1/model.plan."""
    assert options.engine_dir is not None
    return {VISION_PLAN: engine_facts(options.engine_dir.resolve())["plan"]}


def vocab_size(decoder_dir: Path, hf_config: Any) -> int:
    """The decoder engine's vocab (fake ids start there): its config.json, else the checkpoint's text vocab."""
    config = Path(decoder_dir) / "config.json"
    if config.is_file():
        return int(read_json(config, f"{config} is missing")["pretrained_config"]["vocab_size"])
    return int(hf_config.text_config.vocab_size)


def leader_mode_command(server_argv: list[str], tp_size: int) -> list[str]:
    """mpirun running one tritonserver per decoder rank; ranks > 0 load only tensorrt_llm and use their own
    Python shared-memory prefix (launch_triton_server.py's leader mode: every rank gets the same ports, as
    there; the ranks > 0 stay inside the tensorrtllm backend's worker loop)."""
    if tp_size == 1:
        return server_argv
    flag = "--backend-config=python,shm-region-prefix-name="
    prefix = next(a for a in server_argv if a.startswith(flag))[len(flag):]
    command = ["mpirun", "--allow-run-as-root"]
    for rank in range(tp_size):
        argv = [a if not a.startswith(flag) else f"{flag}{prefix}r{rank}_" for a in server_argv]
        if rank > 0:
            argv += ["--model-control-mode=explicit", f"--load-model={TRTLLM}"]
        command += ["-n", "1", *argv, ":"]
    return command[:-1]
