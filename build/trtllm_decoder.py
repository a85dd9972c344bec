"""The LLM half: a HF LLaVA / LLaVA-NeXT checkpoint's language model -> TensorRT-LLM 1.2.1 engine.

Two steps, the same two that 1.2.1's multimodal example runs (examples/models/core/multimodal/README.md,
"LLaVA, LLaVa-NeXT, ...": `../llama/convert_checkpoint.py --model_dir <llava dir>` then `trtllm-build`):

1. Conversion through the Python API that `convert_checkpoint.py::convert_and_save_hf` calls
   (examples/models/core/llama/convert_checkpoint.py @368f8f2a): `LLaMAForCausalLM.from_hugging_face`
   then `save_checkpoint(out, save_config=True)`. With a LLaVA directory, `from_hugging_face`
   (tensorrt_llm/models/llama/model.py, unified converter) takes the Llama config from the LLaVA
   config's `text_config` and reads only the language model's weights, but it switches to LLaVA's
   weight names (`language_model.model.*`, `language_model.lm_head`) only when the string "llava" occurs
   in the directory *path*. Any other path silently looks for plain Llama names and fails, so the
   checkpoint is handed over as a folder named `llava` (`converter_view`). (transformers 4.57.3 and
   5.17.0 both save LLaVA / LLaVA-NeXT weights under those `language_model.*` names: checked on the
   tiny models.) `LLaMAConfig.from_hugging_face` (tensorrt_llm/models/llama/config.py @89fd9b74)
   replaces the config with `LlavaConfig.from_pretrained(dir).text_config` and reads
   `architectures[0]` unguarded: a `text_config` without `architectures` (the shipped tiny models,
   any config not written by llava-hf's conversion script) raises TypeError. The view's config.json
   therefore sets `text_config.architectures` (every other file is a link to the checkpoint's own).
   Tensor parallelism (`tp_size` > 1) converts one checkpoint shard per rank, as the script's
   `convert_and_save_rank` does (@fd96a08b): `Mapping(world_size=tp, rank=r, tp_size=tp, pp_size=1)`,
   `save_checkpoint(out, save_config=(rank == 0))`; `ModelWeightsLoader.load_tensor` slices each
   tensor by rank (model_weights_loader.py @7eb710fa).
2. The build through the `trtllm-build` console script (tensorrt_llm/commands/build.py), with the
   flags of the README's LLaVA-NeXT command: gemm and GPT attention plugins in the model dtype, fused
   MLP, and `--max_multimodal_len` (an alias of `--max_prompt_embedding_table_size`; > 0 enables
   prompt tables). A subprocess keeps this file thin and the flags exactly the documented ones.
   `trtllm-build` builds one engine per rank of the checkpoint's mapping (`rank<i>.engine`,
   tensorrt_llm/commands/build.py `parallel_build` @65f1d153). It only warns when `max_seq_len`
   exceeds the model's `max_position_embeddings`; hivtp caps its defaults there and refuses larger
   explicit values (`check_decoder_limits`).

`tensorrt_llm` is imported inside the functions; without it, ValueError with one line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hivtp.build.tensorrt_engine import release_matches
from hivtp.config import HIVTPConfig
from hivtp.loading import checkpoint_type

SUPPORTED_TENSORRT_LLM = "1.2.1"
DTYPES = ("float16", "bfloat16")
TEXT_TOKENS = 1024  # default prompt text budget per request, on top of its visual tokens
NEW_TOKENS = 512  # default generated-token budget per request


def check_positions(config: HIVTPConfig) -> HIVTPConfig:
    """TensorRT-LLM numbers the pruned sequence itself: positions='original' (an ablation) is torch-only.
    Checked before a build (`hivtp.build.pipeline.build`) and again when an engine is loaded."""
    if config.positions != "renumbered":
        raise ValueError(f"positions={config.positions!r} is a torch-backend ablation; TensorRT-LLM runs the renumbered layout only")
    return config


def require_tensorrt_llm() -> str:
    """The installed TensorRT-LLM version; ValueError (one line) when it is missing or not a 1.2.1 release."""
    try:
        import tensorrt_llm
    except ImportError:
        tensorrt_llm = None
    version = getattr(tensorrt_llm, "__version__", None)
    if not isinstance(version, str):
        raise ValueError(
            f"the tensorrt_llm package is not installed: the decoder engine needs TensorRT-LLM {SUPPORTED_TENSORRT_LLM}"
        )
    if not release_matches(version, SUPPORTED_TENSORRT_LLM):
        raise ValueError(
            f"TensorRT-LLM {version} is installed; hivtp needs a TensorRT-LLM {SUPPORTED_TENSORRT_LLM} release "
            "(tensorrt_llm.__version__ is checked: 1.2.10 or 1.2.1rc1 are other versions)"
        )
    return version


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_decoder_limits(
    dtype: str, max_batch: int, max_input_len: int, max_seq_len: int, max_multimodal_len: int,
    max_positions: int | None = None,
) -> None:
    """Refuse limits the runtime could never satisfy (callmap traps 3 and 5) or the model cannot position."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    for name, value in [("max_batch", max_batch), ("max_input_len", max_input_len), ("max_seq_len", max_seq_len),
                        ("max_multimodal_len", max_multimodal_len)]:
        _positive(name, value)
    if max_seq_len <= max_input_len:
        raise ValueError(f"max_seq_len ({max_seq_len}) must exceed max_input_len ({max_input_len}) to leave room for new tokens")
    if max_positions is not None and max_seq_len > max_positions:
        raise ValueError(
            f"max_seq_len ({max_seq_len}) exceeds the model's max_position_embeddings ({max_positions}): "
            "tokens past it would get positions the model was never trained on"
        )
    if max_multimodal_len < max_batch:
        # the executor gives each request max_multimodal_len // max_batch table rows (promptTuningBuffers.cpp)
        raise ValueError(f"max_multimodal_len ({max_multimodal_len}) must be >= max_batch ({max_batch}) * visual tokens per request")


def text_architecture(text_config: dict[str, Any]) -> str:
    """The language model's class name: its own `architectures[0]`, else transformers' causal LM for its type."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    named = text_config.get("architectures")
    if isinstance(named, list) and named and isinstance(named[0], str):
        return named[0]
    model_type = text_config.get("model_type", "llama")  # LlavaConfig's default text model
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"the checkpoint's language model has model_type {model_type!r}, which has no causal LM class")
    return str(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])


def converter_view(hf_dir: Path, parent: Path) -> Path:
    """parent/llava: the checkpoint as TensorRT-LLM 1.2.1's converter must see it (see the module docstring).

    Every file of hf_dir is linked (weights are never copied); config.json is a rewritten copy whose
    `text_config.architectures` is set. The checkpoint itself is not touched.
    """
    hf_dir = Path(hf_dir).resolve()
    config = json.loads((hf_dir / "config.json").read_text())
    text_config = dict(config.get("text_config") or {})
    text_config["architectures"] = [text_architecture(text_config)]
    view = Path(parent) / "llava"  # 1.2.1 picks LLaVA's weight names only for paths containing "llava"
    view.mkdir()
    for item in hf_dir.iterdir():
        if item.name != "config.json":
            (view / item.name).symlink_to(item, target_is_directory=item.is_dir())
    (view / "config.json").write_text(json.dumps({**config, "text_config": text_config}, indent=2) + "\n")
    return view


def check_tensor_parallel(text_config: Any, tp_size: int) -> None:
    """Refuse a tp_size the language model cannot be split by: every rank must get whole heads and equal MLP slices.

    `ModelWeightsLoader.load_tensor` gives rank r the slice [r * ceil(w / tp), ...) of a width-w tensor, so
    widths that tp_size does not divide give the last rank a short shard. Key/value heads fewer than
    tp_size are replicated, which needs tp_size to be a multiple of them.
    """
    _positive("tp_size", tp_size)
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    for name, width in [("num_attention_heads", heads), ("intermediate_size", text_config.intermediate_size)]:
        if width % tp_size:
            raise ValueError(f"tp_size {tp_size} does not divide the language model's {name} ({width})")
    if kv_heads % tp_size and tp_size % kv_heads:
        raise ValueError(f"tp_size {tp_size} and the language model's {kv_heads} key/value heads: neither divides the other")


def trtllm_build_args(
    checkpoint_dir: Path, out_dir: Path, dtype: str, max_batch: int, max_input_len: int, max_seq_len: int,
    max_multimodal_len: int,
) -> list[str]:
    """The `trtllm-build` command line (flags as in the 1.2.1 multimodal README's LLaVA-NeXT build)."""
    return [
        "trtllm-build",
        "--checkpoint_dir", str(checkpoint_dir),
        "--output_dir", str(out_dir),
        "--gemm_plugin", dtype,
        "--gpt_attention_plugin", dtype,
        "--use_fused_mlp=enable",
        "--max_batch_size", str(max_batch),
        "--max_input_len", str(max_input_len),
        "--max_seq_len", str(max_seq_len),
        # every request's whole prompt can be in one context step (the README's NeXT build uses max_input_len at batch 1)
        "--max_num_tokens", str(max_batch * max_input_len),
        "--max_multimodal_len", str(max_multimodal_len),
    ]


def convert_checkpoint(hf_dir: Path, checkpoint_dir: Path, dtype: str, tp_size: int = 1) -> None:
    """HF LLaVA / LLaVA-NeXT -> TensorRT-LLM checkpoint of its language model: one shard per tensor-parallel rank."""
    from tensorrt_llm.mapping import Mapping
    from tensorrt_llm.models import LLaMAForCausalLM
    from tensorrt_llm.models.modeling_utils import QuantConfig

    with tempfile.TemporaryDirectory(prefix="hivtp-llava-view-") as scratch:
        view = converter_view(Path(hf_dir), Path(scratch))
        for rank in range(tp_size):  # convert_checkpoint.py::convert_and_save_rank (@fd96a08b), pp_size 1
            mapping = Mapping(world_size=tp_size, rank=rank, tp_size=tp_size, pp_size=1)
            llama = LLaMAForCausalLM.from_hugging_face(str(view), dtype, mapping=mapping, quant_config=QuantConfig())
            # the script then sets the context-parallel fields of the mapping (cp_size 1: no context parallelism)
            llama.config.mapping.cp_size = 1
            llama.config.mapping.attn_tp_size = -1
            llama.config.mapping.attn_cp_size = -1
            llama.save_checkpoint(str(checkpoint_dir), save_config=(rank == 0))
            del llama


def build_decoder_engine(
    hf_dir: Path,
    out_dir: Path,
    dtype: str,
    max_batch: int,
    max_input_len: int | None = None,
    max_seq_len: int | None = None,
    max_multimodal_len: int | None = None,
    tp_size: int = 1,
) -> None:
    """Convert the checkpoint's language model and build its TensorRT-LLM engine(s) into out_dir.

    max_multimodal_len (required) must hold max_batch requests' visual tokens: the executor splits it
    evenly per request. max_input_len counts the visual tokens (they are prompt tokens); None means one
    request's share of max_multimodal_len + TEXT_TOKENS. max_seq_len None: max_input_len + NEW_TOKENS.
    Defaults are capped at the model's max_position_embeddings; explicit values above it are refused.
    tp_size > 1: one engine per rank (rank0.engine ... ), to run on tp_size GPUs.
    """
    if max_multimodal_len is None:
        raise ValueError("max_multimodal_len is required: max_batch * the most visual tokens one request can have")
    _positive("max_batch", max_batch)
    _positive("max_multimodal_len", max_multimodal_len)
    _positive("tp_size", tp_size)
    checkpoint_type(hf_dir)  # a LLaVA / LLaVA-NeXT directory, or ValueError
    from transformers import AutoConfig

    text_config = AutoConfig.from_pretrained(str(hf_dir)).text_config  # transformers' defaults for omitted fields
    positions = int(text_config.max_position_embeddings)
    if max_input_len is None:
        max_input_len = min(max_multimodal_len // max_batch + TEXT_TOKENS, positions - 1)
    if max_seq_len is None:
        max_seq_len = min(max_input_len + NEW_TOKENS, positions)
    check_decoder_limits(dtype, max_batch, max_input_len, max_seq_len, max_multimodal_len, positions)
    check_tensor_parallel(text_config, tp_size)
    require_tensorrt_llm()
    if shutil.which("trtllm-build") is None:
        raise ValueError("the trtllm-build command is not on PATH: install TensorRT-LLM 1.2.1 into this environment")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hivtp-tllm-ckpt-", dir=out_dir.parent) as scratch:
        checkpoint_dir = Path(scratch) / "checkpoint"
        convert_checkpoint(Path(hf_dir), checkpoint_dir, dtype, tp_size)
        args = trtllm_build_args(checkpoint_dir, out_dir, dtype, max_batch, max_input_len, max_seq_len, max_multimodal_len)
        done = subprocess.run(args, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"trtllm-build failed with exit code {done.returncode} (its log is above): {' '.join(args)}")
