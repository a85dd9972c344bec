"""Write a Triton model repository for a checkpoint (torch flavour) or a `hivtp build` output (engine flavour).

Layout and names follow TensorRT-LLM 1.2.x's Triton repositories, read in NVIDIA/TensorRT-LLM
triton_backend/all_models/: `multimodal/ensemble/config.pbtxt` @1c748b95, `multimodal/multimodal_encoders/
config.pbtxt` @4942c91b, `inflight_batcher_llm/tensorrt_llm/config.pbtxt` @0c8de69a (input/output names and
types of the `tensorrtllm` backend, its `gpu_device_ids` / `participant_ids` parameters):

    ensemble             decoupled entry point: text_input, image_bytes_input, max_tokens, budget, pruning_mode, stream
      preprocessing      HF processor + tokenizer (python): ids with the image tokens expanded, pixel_values
      multimodal_encoders  HIVTP scoring + selection + projector -> per-request prompt table + fake ids (python)
        vision_encoder   engine flavour only: the hivtp vision plan (tensorrt_plan, plugin library loaded)
      torch_llm          torch flavour: the HF LLM behind the tensorrt_llm backend's inputs and outputs (python)
      tensorrt_llm       engine flavour: the TensorRT-LLM decoder (tensorrtllm backend)
      postprocessing     tokenizer decode (python)

Every Python model's `model.py` is a two-line shim onto `hivtp.runtime.triton.models` (classes in
model_base.py, model_vision.py, model_llm.py, models.py), so the server's
Python must have hivtp installed (`pip install hivtp` in a Triton container). Names that differ from
TensorRT-LLM's: `torch_llm` (it is not TensorRT-LLM), `vision_encoder`, and the HIVTP inputs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivtp.config import INT32_MAX, HIVTPConfig, is_int
from hivtp.outputs import read_json
from hivtp.runtime.triton import pbtxt
from hivtp.runtime.triton.pbtxt import Tensor, scalar

ENSEMBLE, PREPROCESSING, VISION, POSTPROCESSING = "ensemble", "preprocessing", "multimodal_encoders", "postprocessing"
TORCH_LLM, TRTLLM, VISION_PLAN = "torch_llm", "tensorrt_llm", "vision_encoder"
GPU_MODELS = (VISION, TORCH_LLM)  # the Python models placed on --gpus (one instance group per GPU)
MODEL_CLASSES = {  # Python models -> their class in hivtp.runtime.triton.models
    PREPROCESSING: "Preprocessing", VISION: "TorchVision", TORCH_LLM: "TorchLLM", POSTPROCESSING: "Postprocessing",
}
ENGINE_VISION_CLASS = "EngineVision"
NO_PRUNING = -1  # the `pruning` tensor between models: -1 none, 0 paper mode, K > 0 a budget of K
LIMITS = {  # ServeOptions field -> (least, most): beyond, a typo that Triton would refuse at load time or that no machine runs
    "instances": (1, 64), "max_batch": (1, 1024), "queue_delay_us": (0, 60_000_000), "max_queue": (1, 1 << 20),
    "max_tokens_default": (1, INT32_MAX), "max_tokens_limit": (1, INT32_MAX), "max_prompt_chars": (1, 1 << 24),
    "max_image_bytes": (1, 1 << 31), "max_image_pixels": (1, 1 << 31), "torch_threads": (1, 1024),
}
MAX_GPU_ID = 1023


@dataclass(frozen=True)
class ServeOptions:
    """What the repository is written from; `hivtp serve` fills it from its arguments."""

    model_dir: Path | None = None  # HF checkpoint (torch flavour)
    engine_dir: Path | None = None  # `hivtp build` output (engine flavour)
    config: HIVTPConfig = field(default_factory=HIVTPConfig)  # default pruning; requests may override the mode
    instances: int = 1  # per model, per GPU when gpus are given
    gpus: tuple[int, ...] | None = None  # None: KIND_CPU instances
    max_batch: int = 8  # dynamic batching: most requests per execution
    queue_delay_us: int = 2000
    max_queue: int = 256  # requests waiting per model; more are refused at once with a clean error
    max_tokens_default: int = 16  # = `hivtp generate --max-new-tokens`
    max_tokens_limit: int = 256
    max_prompt_chars: int = 4096
    max_image_bytes: int = 20 << 20
    max_image_pixels: int = 40_000_000
    torch_threads: int = 1  # per instance: several instances on a few cores would oversubscribe them
    plugin_library: Path | None = None  # engine flavour: libhivtp_plugin.so (the TensorRT backend loads it)

    def __post_init__(self) -> None:
        """Sizes Triton or a machine cannot take are one ValueError here, not a server that fails to load."""
        for name, (least, most) in LIMITS.items():
            value = getattr(self, name)
            if not is_int(value) or not least <= value <= most:
                raise ValueError(f"{name.replace('_', '-')} must be an integer in {least}..{most}, got {value!r}")
        if self.gpus is not None:
            gpus = self.gpus
            if (not isinstance(gpus, (tuple, list)) or not gpus or not all(is_int(g) and 0 <= g <= MAX_GPU_ID for g in gpus)
                    or len(set(gpus)) != len(gpus)):
                raise ValueError(f"gpus must be distinct GPU ids in 0..{MAX_GPU_ID}, got {gpus!r}")
        if self.config.budget is not None and self.config.budget > INT32_MAX:  # the `pruning` tensor between models
            raise ValueError(f"budget {self.config.budget} does not fit the server's INT32 pruning tensor (at most {INT32_MAX})")
        if self.max_tokens_default > self.max_tokens_limit:
            raise ValueError(f"max-tokens-limit {self.max_tokens_limit} is below the default answer length {self.max_tokens_default}")

    @property
    def flavour(self) -> str:
        return "engine" if self.engine_dir is not None else "torch"

    @property
    def device(self) -> str:
        return "cpu" if self.gpus is None else "cuda"


def default_pruning(config: HIVTPConfig) -> int:
    return 0 if config.budget is None else config.budget


def _python_model(name: str, options: ServeOptions, inputs: list[Tensor], outputs: list[Tensor], params: dict[str, str],
                  decoupled: bool = False, batched: bool = True) -> str:
    return pbtxt.config(
        pbtxt.header(name, options.max_batch, backend="python"),
        pbtxt.decoupled() if decoupled else "",
        pbtxt.dynamic_batching(options.queue_delay_us, options.max_queue) if batched else "",
        pbtxt.tensors("input", inputs),
        pbtxt.tensors("output", outputs),
        pbtxt.instance_group(options.instances, options.gpus if name in GPU_MODELS else None),
        pbtxt.parameters(params),
    )


def ensemble_config(options: ServeOptions, llm: str) -> str:
    # text and image are checked by preprocessing: Triton 2.51 answers an ensemble request that lacks a
    # required input with an empty response instead of an error when the input count is still in range
    inputs = [
        scalar("text_input", "STRING", optional=True), Tensor("image_bytes_input", "UINT8", (-1,), optional=True),
        scalar("max_tokens", "INT32", optional=True), scalar("budget", "INT32", optional=True),
        scalar("pruning_mode", "STRING", optional=True), scalar("stream", "BOOL", optional=True),
    ]
    steps = [
        pbtxt.ensemble_step(PREPROCESSING, {
            "QUERY": "text_input", "IMAGE_BYTES": "image_bytes_input", "REQUEST_OUTPUT_LEN": "max_tokens",
            "BUDGET": "budget", "PRUNING_MODE": "pruning_mode",
        }, {
            "INPUT_ID": "_INPUT_ID", "PIXEL_VALUES": "_PIXEL_VALUES", "IMAGE_SIZES": "_IMAGE_SIZES",
            "PRUNING": "_PRUNING", "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN", "OUT_END_ID": "_END_ID",
            "OUT_PAD_ID": "_PAD_ID",
        }),
        pbtxt.ensemble_step(VISION, {
            "input_ids": "_INPUT_ID", "pixel_values": "_PIXEL_VALUES", "image_sizes": "_IMAGE_SIZES", "pruning": "_PRUNING",
        }, {
            "INPUT_ID": "_PROMPT_INPUT_ID", "REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN",
            "OUT_PROMPT_EMBEDDING_TABLE": "_PROMPT_TABLE", "OUT_PROMPT_VOCAB_SIZE": "_PROMPT_VOCAB_SIZE",
        }),
        pbtxt.ensemble_step(llm, {
            "input_ids": "_PROMPT_INPUT_ID", "input_lengths": "_REQUEST_INPUT_LEN", "request_output_len": "_REQUEST_OUTPUT_LEN",
            "end_id": "_END_ID", "pad_id": "_PAD_ID", "streaming": "stream",
            "prompt_embedding_table": "_PROMPT_TABLE", "prompt_vocab_size": "_PROMPT_VOCAB_SIZE",
        }, {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH"}),
        pbtxt.ensemble_step(POSTPROCESSING, {
            "TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH",
        }, {"OUTPUT": "text_output"}),
    ]
    return pbtxt.config(
        pbtxt.header(ENSEMBLE, options.max_batch, platform="ensemble"),
        pbtxt.tensors("input", inputs),
        pbtxt.tensors("output", [scalar("text_output", "STRING")]),
        "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}",
    )


def preprocessing_config(options: ServeOptions, hf_dir: Path) -> str:
    inputs = [
        scalar("QUERY", "STRING", optional=True), Tensor("IMAGE_BYTES", "UINT8", (-1,), optional=True, ragged=True),
        scalar("REQUEST_OUTPUT_LEN", "INT32", optional=True), scalar("BUDGET", "INT32", optional=True),
        scalar("PRUNING_MODE", "STRING", optional=True),
    ]
    outputs = [
        Tensor("INPUT_ID", "INT32", (-1,)), Tensor("PIXEL_VALUES", "FP32", (-1, -1, -1, -1)), Tensor("IMAGE_SIZES", "INT64", (2,)),
        scalar("PRUNING", "INT32"), scalar("REQUEST_OUTPUT_LEN", "INT32"), scalar("OUT_END_ID", "INT32"), scalar("OUT_PAD_ID", "INT32"),
    ]
    params = {
        "hf_model_path": str(hf_dir), "default_pruning": str(default_pruning(options.config)),
        "max_tokens_default": str(options.max_tokens_default), "max_tokens_limit": str(options.max_tokens_limit),
        "max_prompt_chars": str(options.max_prompt_chars), "max_image_bytes": str(options.max_image_bytes),
        "max_image_pixels": str(options.max_image_pixels), "torch_threads": str(options.torch_threads),
    }
    return _python_model(PREPROCESSING, options, inputs, outputs, params)


def vision_config(options: ServeOptions, hf_dir: Path, table_dtype: str, extra: dict[str, str]) -> str:
    inputs = [
        Tensor("input_ids", "INT32", (-1,), ragged=True), Tensor("pixel_values", "FP32", (-1, -1, -1, -1), ragged=True),
        Tensor("image_sizes", "INT64", (2,)), scalar("pruning", "INT32"),
    ]
    outputs = [
        Tensor("INPUT_ID", "INT32", (-1,)), scalar("REQUEST_INPUT_LEN", "INT32"),
        Tensor("OUT_PROMPT_EMBEDDING_TABLE", table_dtype, (-1, -1)), scalar("OUT_PROMPT_VOCAB_SIZE", "INT32"),
    ]
    params = {"hf_model_path": str(hf_dir), "hivtp_config": json.dumps(options.config.to_dict()),
              "torch_threads": str(options.torch_threads), **extra}
    return _python_model(VISION, options, inputs, outputs, params)


def llm_inputs(table_dtype: str) -> list[Tensor]:
    """The tensorrt_llm model's inputs that hivtp uses, with its names, types and reshapes."""
    def one(name: str, dtype: str, optional: bool = True) -> Tensor:
        return Tensor(name, dtype, (1,), optional=optional, reshape=())

    return [
        Tensor("input_ids", "INT32", (-1,), ragged=True), one("input_lengths", "INT32", False),
        one("request_output_len", "INT32", False), one("end_id", "INT32"), one("pad_id", "INT32"), one("streaming", "BOOL"),
        Tensor("prompt_embedding_table", table_dtype, (-1, -1), optional=True, ragged=True), one("prompt_vocab_size", "INT32"),
    ]


LLM_OUTPUTS = [Tensor("output_ids", "INT32", (-1, -1)), Tensor("sequence_length", "INT32", (-1,))]


def torch_llm_config(options: ServeOptions, hf_dir: Path) -> str:
    params = {"hf_model_path": str(hf_dir), "torch_threads": str(options.torch_threads)}
    return _python_model(TORCH_LLM, options, llm_inputs("FP32"), LLM_OUTPUTS, params, decoupled=True)


def postprocessing_config(options: ServeOptions, hf_dir: Path) -> str:
    # no stream flag: Triton refuses an ensemble step fed by the decoupled LLM and by another source at once
    inputs = [Tensor("TOKENS_BATCH", "INT32", (-1, -1)), Tensor("SEQUENCE_LENGTH", "INT32", (-1,))]
    return _python_model(POSTPROCESSING, options, inputs, [scalar("OUTPUT", "STRING")], {"tokenizer_dir": str(hf_dir)})


def shim(class_name: str) -> str:
    return (
        f'"""Written by `hivtp serve`: the model is hivtp.runtime.triton.models.{class_name}."""\n\n'
        f"from hivtp.runtime.triton.models import {class_name} as TritonPythonModel  # noqa: F401\n"
    )


def torch_repository(options: ServeOptions) -> dict[str, tuple[str, str | None]]:
    """Model name -> (config.pbtxt, model.py or None) for the torch flavour."""
    from hivtp.loading import checkpoint_type

    assert options.model_dir is not None
    hf_dir = options.model_dir.resolve()
    checkpoint_type(hf_dir)  # one clear line for a missing or non-LLaVA checkpoint
    return {
        ENSEMBLE: (ensemble_config(options, TORCH_LLM), None),
        PREPROCESSING: (preprocessing_config(options, hf_dir), shim(MODEL_CLASSES[PREPROCESSING])),
        VISION: (vision_config(options, hf_dir, "FP32", {}), shim(MODEL_CLASSES[VISION])),
        TORCH_LLM: (torch_llm_config(options, hf_dir), shim(MODEL_CLASSES[TORCH_LLM])),
        POSTPROCESSING: (postprocessing_config(options, hf_dir), shim(MODEL_CLASSES[POSTPROCESSING])),
    }


def repository_models(options: ServeOptions) -> dict[str, tuple[str, str | None]]:
    if options.flavour == "engine":
        from hivtp.runtime.triton.engine_repository import engine_repository

        return engine_repository(options)
    return torch_repository(options)


def python_instances(models: dict[str, tuple[str, str | None]], options: ServeOptions) -> int:
    """Stub processes the server starts: one per instance of each Python model (per GPU when placed on GPUs)."""
    per_model = options.instances * (len(options.gpus) if options.gpus else 1)
    return sum(per_model if name in GPU_MODELS else options.instances
               for name, (_, code) in models.items() if code is not None)  # Python models are the ones with model.py


LISTING = "hivtp_repository.json"  # what hivtp wrote into a repository: lets --force tell it from anything else


def repository_files(directory: Path) -> set[str]:
    """The files a repository's listing says hivtp wrote (the listing included); ValueError if not one of ours."""
    path = Path(directory) / LISTING
    listing = read_json(path, f"{directory} holds no {LISTING}: not a hivtp model repository")
    files = listing.get("files") if isinstance(listing, dict) else None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise ValueError(f"{path} is damaged: 'files' must list relative paths")
    return set(files) | {LISTING}


def write_repository(directory: Path, options: ServeOptions, force: bool = False) -> dict[str, tuple[str, str | None]]:
    """Write every model's config.pbtxt and version folder 1/ (model.py for Python models) into directory.

    The files go to a scratch folder beside it, swapped into place at the end (hivtp.build.staging);
    an existing directory is replaced only with force, and only if it is an earlier hivtp repository.
    """
    from hivtp.build.staging import staging
    from hivtp.outputs import check_owned_output

    if options.model_dir is not None:  # what the server would fail on at load time: one line now
        from hivtp.loading import check_checkpoint

        check_checkpoint(options.model_dir, options.config)  # no weights: about a second
    models = repository_models(options)
    sources = {path: what for path, what in ((options.model_dir, "the checkpoint"), (options.engine_dir, "the build"))
               if path is not None}
    directory = check_owned_output(Path(directory), "--repository-only", force, "model repository",
                                   repository_files, sources)
    files = {}
    if options.flavour == "engine":
        from hivtp.runtime.triton.engine_repository import PLAN_FILE, model_files

        files = {f"{name}/1/{PLAN_FILE}": source for name, source in model_files(options).items()}
    with staging(directory, force, repository_files) as work:
        for name, (config, code) in models.items():
            (work / name / "1").mkdir(parents=True)
            (work / name / "config.pbtxt").write_text(config)
            if code is not None:
                (work / name / "1" / "model.py").write_text(code)
        for target, source in files.items():
            shutil.copyfile(source, work / target)
        written = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
        (work / LISTING).write_text(json.dumps({"format": 1, "files": written}, indent=2) + "\n")
    return models


def read_parameters(args: dict[str, Any]) -> dict[str, str]:
    """A Python model's `parameters` from the `args` Triton passes to `initialize`."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
