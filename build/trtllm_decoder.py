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
   checkpoint is handed over through a symlink named `llava`. (transformers 4.57.3 and 5.17.0 both
   save LLaVA / LLaVA-NeXT weights under those `language_model.*` names: checked on the tiny models.)
2. The build through the `trtllm-build` console script (tensorrt_llm/commands/build.py), with the
   flags of the README's LLaVA-NeXT command: gemm and GPT attention plugins in the model dtype, fused
   MLP, and `--max_multimodal_len` (an alias of `--max_prompt_embedding_table_size`; > 0 enables
   prompt tables). A subprocess keeps this file thin and the flags exactly the documented ones.

`tensorrt_llm` is imported inside the functions; without it, ValueError with one line.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from hivtp.loading import checkpoint_type

SUPPORTED_TENSORRT_LLM = "1.2.1"
DTYPES = ("float16", "bfloat16")
TEXT_TOKENS = 1024  # default prompt text budget per request, on top of its visual tokens
NEW_TOKENS = 512  # default generated-token budget per request


def require_tensorrt_llm() -> str:
    """The installed TensorRT-LLM version; ValueError (one line) when it is missing or not 1.2.1."""
    try:
        import tensorrt_llm
    except ImportError:
        tensorrt_llm = None
    version = getattr(tensorrt_llm, "__version__", None)
    if not isinstance(version, str):
        raise ValueError(
            f"the tensorrt_llm package is not installed: hivtp engines need TensorRT-LLM {SUPPORTED_TENSORRT_LLM} "
            "(with TensorRT 10.14)"
        )
    if not version.startswith(SUPPORTED_TENSORRT_LLM):
        raise ValueError(f"TensorRT-LLM {version} is installed; hivtp supports TensorRT-LLM {SUPPORTED_TENSORRT_LLM}")
    return version


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_decoder_limits(dtype: str, max_batch: int, max_input_len: int, max_seq_len: int, max_multimodal_len: int) -> None:
    """Refuse limits the runtime could never satisfy (callmap traps 3 and 5)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    for name, value in [("max_batch", max_batch), ("max_input_len", max_input_len), ("max_seq_len", max_seq_len),
                        ("max_multimodal_len", max_multimodal_len)]:
        _positive(name, value)
    if max_seq_len <= max_input_len:
        raise ValueError(f"max_seq_len ({max_seq_len}) must exceed max_input_len ({max_input_len}) to leave room for new tokens")
    if max_multimodal_len < max_batch:
        # the executor gives each request max_multimodal_len // max_batch table rows (promptTuningBuffers.cpp)
        raise ValueError(f"max_multimodal_len ({max_multimodal_len}) must be >= max_batch ({max_batch}) * visual tokens per request")


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


def convert_checkpoint(hf_dir: Path, checkpoint_dir: Path, dtype: str) -> None:
    """HF LLaVA / LLaVA-NeXT -> TensorRT-LLM checkpoint of its language model (single GPU, no quantization)."""
    from tensorrt_llm.mapping import Mapping
    from tensorrt_llm.models import LLaMAForCausalLM
    from tensorrt_llm.models.modeling_utils import QuantConfig

    with tempfile.TemporaryDirectory(prefix="hivtp-llava-link-") as scratch:
        link = Path(scratch) / "llava"  # 1.2.1 picks LLaVA's weight names only for paths containing "llava"
        link.symlink_to(Path(hf_dir).resolve(), target_is_directory=True)
        # convert_checkpoint.py::convert_and_save_hf -> convert_and_save_rank (@368f8f2a), world size 1
        mapping = Mapping(world_size=1, rank=0, tp_size=1, pp_size=1)
        llama = LLaMAForCausalLM.from_hugging_face(str(link), dtype, mapping=mapping, quant_config=QuantConfig())
        # the script then sets the context-parallel fields of the mapping (cp_size 1: no context parallelism)
        llama.config.mapping.cp_size = 1
        llama.config.mapping.attn_tp_size = -1
        llama.config.mapping.attn_cp_size = -1
        llama.save_checkpoint(str(checkpoint_dir), save_config=True)
        del llama


def build_decoder_engine(
    hf_dir: Path,
    out_dir: Path,
    dtype: str,
    max_batch: int,
    max_input_len: int | None = None,
    max_seq_len: int | None = None,
    max_multimodal_len: int | None = None,
) -> None:
    """Convert the checkpoint's language model and build its TensorRT-LLM engine into out_dir.

    max_multimodal_len (required) must hold max_batch requests' visual tokens: the executor splits it
    evenly per request. max_input_len counts the visual tokens (they are prompt tokens); None means one
    request's share of max_multimodal_len + TEXT_TOKENS. max_seq_len None: max_input_len + NEW_TOKENS.
    """
    if max_multimodal_len is None:
        raise ValueError("max_multimodal_len is required: max_batch * the most visual tokens one request can have")
    _positive("max_batch", max_batch)
    _positive("max_multimodal_len", max_multimodal_len)
    if max_input_len is None:
        max_input_len = max_multimodal_len // max_batch + TEXT_TOKENS
    if max_seq_len is None:
        max_seq_len = max_input_len + NEW_TOKENS
    check_decoder_limits(dtype, max_batch, max_input_len, max_seq_len, max_multimodal_len)
    checkpoint_type(hf_dir)  # a LLaVA / LLaVA-NeXT directory, or ValueError
    require_tensorrt_llm()
    if shutil.which("trtllm-build") is None:
        raise ValueError("the trtllm-build command is not on PATH: install TensorRT-LLM 1.2.1 into this environment")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hivtp-tllm-ckpt-", dir=out_dir.parent) as scratch:
        checkpoint_dir = Path(scratch) / "checkpoint"
        convert_checkpoint(Path(hf_dir), checkpoint_dir, dtype)
        args = trtllm_build_args(checkpoint_dir, out_dir, dtype, max_batch, max_input_len, max_seq_len, max_multimodal_len)
        done = subprocess.run(args, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"trtllm-build failed with exit code {done.returncode} (its log is above): {' '.join(args)}")
