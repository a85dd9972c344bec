"""The TensorRT-LLM 1.2.1 backend: hivtp vision engine (TensorRT) + LLM engine (TensorRT-LLM executor).

Per batch: the HF processor on the CPU; the vision engine (CLIP tower, hivtp Score / Select plugins,
projector) on every image, or every LLaVA-NeXT crop, as one batch; the kept tokens laid out exactly as
the torch backend lays them out (`split_kept` / `next_features` -> `prune_sequence`); then every
request gets its own prompt table and fake ids (`build_prompt_tables`) and `ModelRunnerCpp.generate`
runs them (streamed for `generate` / `stream`). Batches mix images, prompts and kept counts freely.
`prefill` generates one token and leaves nothing running; `decode(n)` reruns the requests for 1 + n
tokens (ModelRunnerCpp can neither continue nor cancel a request), so its time includes one prefill.
A stream that its caller abandons (break, exception) is drained before control returns: the
executor's `await_responses()` hands back replies of every request in flight, so undrained replies
would be read by the next call as its own (`TokenStream.close`).

1.2.1's `MultimodalModelRunner` (tensorrt_llm/runtime/multimodal_model_runner.py) is not used: it gives
every request of a batch the same visual token count (`setup_fake_prompts`) and, for LLaVA-NeXT, the
first image's layout. The TensorRT-LLM calls, read in NVIDIA/TensorRT-LLM
tensorrt_llm/runtime/model_runner_cpp.py @03832911 (the stored version; the v1.2.1 tag itself could not be
read here, so equality with 1.2.1 is not verified):
- `ModelRunnerCpp.from_dir(engine_dir, *, kv_cache_free_gpu_memory_fraction=...)`;
- `generate(batch_input_ids: List[Tensor], *, prompt_table, prompt_tasks, max_new_tokens, end_id, pad_id,
  streaming, return_dict, output_sequence_lengths, **kwargs)`; `top_k` in kwargs goes to
  `trtllm.SamplingConfig` (its `accepted_parameters`). `_prepare_ptuning_executor` casts the 3-D table to
  the engine dtype (`_prepare_embedding_table`, model_runner.py) and gives request i
  `PromptTuningConfig(embedding_table=table[task_i])`: rows are shared, so shorter tables are padded.
  With streaming it yields dicts whose `output_ids` [B, beams, max_seq_len] hold input + tokens so far
  and `sequence_lengths` [B, beams] their lengths (`_stream` / `_fill_output`).
TensorRT calls (vision engine) are cited from NVIDIA/TensorRT v10.14 (3b4ddc1d) python/src/infer/pyCore.cpp.
The vision engine runs on its own CUDA stream (as TensorRT-LLM's Python runtime does): on the legacy
default stream TensorRT adds synchronisations of its own.

Legend: B requests, n images (NeXT: C crops), Kmax selection slots, D text hidden.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hivtp.build.tensorrt_engine import load_vision_engine, require_tensorrt
from hivtp.build.trtllm_decoder import check_positions, require_tensorrt_llm
from hivtp.config import HIVTPConfig
from hivtp.runtime.backend import Prepared, PrefillResult, VisionResult, prepare_batch
from hivtp.runtime.prompt_table import RequestPrompts, build_prompt_tables, pruned_layout

ENGINE_INPUT = "pixel_values"  # = hivtp.build.export.INPUT_NAMES
ENGINE_OUTPUTS = ("features", "counts", "indices")  # = hivtp.build.export.OUTPUT_NAMES
PLUGIN_ENV = "HIVTP_PLUGIN_LIB"
NO_END_ID = -1  # an end id no token has: decode() yields exactly the asked number of tokens [I: trtllm-bench's ignore-EOS idiom]


@dataclass(frozen=True)
class EngineFiles:
    """What the runtime needs from a `hivtp build` output directory (manifest.json, hivtp.build.pipeline layout)."""

    config: HIVTPConfig
    model_type: str
    kmax: int
    source_dir: Path  # the HF checkpoint: processor, tokenizer and config are read from it
    vision_engine: Path
    decoder_dir: Path
    image_newline: Path | None  # LLaVA-NeXT: safetensors, key "image_newline"
    plugin_library: Path | None  # None: a plugin-free vision graph (--select-impl onnx)


def plugin_library_path(path: str | Path | None) -> Path:
    """The plugin library: the argument, else $HIVTP_PLUGIN_LIB (the variable `hivtp build` reads)."""
    chosen = path or os.environ.get(PLUGIN_ENV)
    if not chosen:
        raise ValueError(f"the vision engine needs the hivtp plugin library: pass its path or set {PLUGIN_ENV}")
    if not Path(chosen).is_file():
        raise ValueError(f"plugin library not found: {chosen}")
    return Path(chosen).resolve()


def engine_files(engine_dir: str | Path, plugin_library: str | Path | None = None) -> EngineFiles:
    """Read and check engine_dir/manifest.json (`hivtp.build.manifest.check_manifest`): versions, plugin hash."""
    from hivtp.build.manifest import IMAGE_NEWLINE_FILE, built_engines, check_manifest, read_manifest

    engine_dir = Path(engine_dir)
    plugin_free = read_manifest(engine_dir)["build"].get("select_impl") == "onnx"
    library = None if plugin_free and plugin_library is None else plugin_library_path(plugin_library)
    manifest = check_manifest(engine_dir, library)
    build = manifest["build"]
    vision_engine, decoder_dir = built_engines(engine_dir, manifest)
    newline = engine_dir / IMAGE_NEWLINE_FILE if build["model_type"] == "llava_next" else None
    return EngineFiles(
        config=check_positions(HIVTPConfig.from_dict(manifest["hivtp_config"])),
        model_type=build["model_type"],
        kmax=int(build["kmax"]),
        source_dir=Path(manifest["source"]["path"]),
        vision_engine=vision_engine,
        decoder_dir=decoder_dir,
        image_newline=newline,
        plugin_library=library,
    )


def new_tokens(output_ids: torch.Tensor, sequence_lengths: torch.Tensor, input_lengths: Sequence[int]) -> list[list[int]]:
    """Tokens generated so far per request, from `generate(return_dict=True, output_sequence_lengths=True)`:
    output_ids [B, beams, S] (input ids, then new tokens, then end_id padding), sequence_lengths [B, beams]."""
    ids, lengths = output_ids[:, 0].cpu(), sequence_lengths[:, 0].cpu()
    return [ids[b, start : int(lengths[b])].tolist() for b, start in enumerate(input_lengths)]


class VisionEngine:
    """The TensorRT vision plan: pixel_values [n, 3, H, W] -> features [n, Kmax, D], counts [n], indices [n, Kmax]."""

    def __init__(self, engine_path: Path, plugin_library: Path | None, device: torch.device) -> None:
        import tensorrt as trt

        self.engine = load_vision_engine(engine_path, plugin_library)  # plugin library registered first
        self.context = self.engine.create_execution_context()  # pyCore.cpp:1468
        self.stream = torch.cuda.Stream(device)  # never the legacy default stream
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}  # pyCore.cpp:1491-1492
        missing = sorted({ENGINE_INPUT, *ENGINE_OUTPUTS} - names)
        if missing:
            raise ValueError(f"{engine_path} lacks the tensors {missing} (has {sorted(names)})")
        torch_types = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                       trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64}
        self.dtypes = {name: torch_types[self.engine.get_tensor_dtype(name)] for name in names}  # pyCore.cpp:1496
        # get_tensor_profile_shape(name, profile) -> [min, opt, max]: pyCore.cpp:1565
        self.max_batch = int(self.engine.get_tensor_profile_shape(ENGINE_INPUT, 0)[2][0])

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = [self._run(chunk) for chunk in pixel_values.split(self.max_batch)]
        return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    def _run(self, chunk: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = chunk.to(self.dtypes[ENGINE_INPUT]).contiguous()  # [n, 3, H, W] on the GPU
        self.context.set_input_shape(ENGINE_INPUT, tuple(x.shape))  # pyCore.cpp:1353
        self.context.set_tensor_address(ENGINE_INPUT, x.data_ptr())  # pyCore.cpp:1360
        outputs = []
        for name in ENGINE_OUTPUTS:
            shape = tuple(self.context.get_tensor_shape(name))  # pyCore.cpp:1359, resolved by the input shape
            out = torch.empty(shape, dtype=self.dtypes[name], device=x.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        caller = torch.cuda.current_stream(x.device)
        self.stream.wait_stream(caller)  # x and the outputs were made on the caller's stream
        if not self.context.execute_async_v3(self.stream.cuda_stream):  # pyCore.cpp:1377
            raise RuntimeError("the vision engine failed to enqueue (see the TensorRT log above)")
        for tensor in (x, *outputs):
            tensor.record_stream(self.stream)  # the allocator must not reuse them before the engine is done
        caller.wait_stream(self.stream)  # later torch work on the caller's stream sees the outputs
        return tuple(outputs)


class TokenStream:
    """Decoding state: the executor's streaming replies and every request's tokens so far.

    replies: what `ModelRunnerCpp.generate(..., streaming=True)` returns (one dict per executor reply);
    each becomes every request's tokens so far. `close()` drains what the caller did not read.
    """

    def __init__(self, replies: Iterator[dict[str, Any]], input_lengths: Sequence[int]) -> None:
        self.replies = replies
        self.input_lengths = list(input_lengths)
        self.tokens: list[list[int]] = []

    def _read(self, reply: dict[str, Any]) -> list[list[int]]:
        self.tokens = new_tokens(reply["output_ids"], reply["sequence_lengths"], self.input_lengths)
        return self.tokens

    def steps(self) -> Iterator[list[list[int]]]:
        """Every request's tokens after each reply; a consumer that stops early leaves the stream drained."""
        try:
            for reply in self.replies:
                yield self._read(reply)
        finally:  # also runs when the consumer breaks out (generator close) or raises
            self.close()

    def until(self, count: int) -> list[list[int]]:
        """Pull replies until every request has `count` tokens (or the executor is done); the rest stays unread."""
        while not self.tokens or min(len(t) for t in self.tokens) < count:
            reply = next(self.replies, None)
            if reply is None:
                break
            self._read(reply)
        return self.tokens

    def close(self) -> None:
        """Read every reply still pending: the executor would hand them to the next generate() otherwise."""
        for _ in self.replies:
            pass


@dataclass(frozen=True)
class Generation:
    texts: list[str]
    tokens: list[list[int]]
    kept_tokens: torch.Tensor  # [images] visual tokens the LLM saw per image (NeXT: newlines included)
    full_tokens: torch.Tensor  # [images] without pruning
    ttft_s: float  # pixel_values ready -> first token of every request (streaming; else the whole generation)


class TRTLLMBackend:
    """`Backend` (runtime/backend.py) on a `hivtp build` output. CUDA only."""

    name = "tensorrt-llm"

    def __init__(
        self, engine_dir: str | Path, plugin_library: str | Path | None = None, max_new_tokens: int = 64,
        kv_cache_fraction: float = 0.8,
    ) -> None:
        require_tensorrt_llm()
        require_tensorrt()
        from tensorrt_llm.runtime import ModelRunnerCpp
        from transformers import AutoConfig, AutoProcessor

        if not torch.cuda.is_available():
            raise ValueError("the TensorRT-LLM backend needs a CUDA GPU")
        self.files = engine_files(engine_dir, plugin_library)
        self.config = self.files.config
        self.processor = AutoProcessor.from_pretrained(self.files.source_dir)
        self.hf_config = AutoConfig.from_pretrained(self.files.source_dir)
        self.device = torch.device("cuda")
        self.max_new_tokens = max_new_tokens  # default of generate() / stream()
        self.vision_engine = VisionEngine(self.files.vision_engine, self.files.plugin_library, self.device)
        self.image_newline = self._image_newline()
        # kv_cache_free_gpu_memory_fraction < the 0.9 default: the vision engine's outputs need memory too
        self.runner = ModelRunnerCpp.from_dir(
            str(self.files.decoder_dir), kv_cache_free_gpu_memory_fraction=kv_cache_fraction
        )
        self.vocab_size = int(self.runner.vocab_size)  # the engine's vocab: fake ids start here (callmap trap 4)
        tokenizer = self.processor.tokenizer
        self.end_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id)

    def _image_newline(self) -> torch.Tensor | None:
        if self.files.image_newline is None:
            return None
        from safetensors.torch import load_file

        return load_file(str(self.files.image_newline))["image_newline"].to(self.device)  # [D]

    def prepare(self, images: list[Image.Image], prompts: list[str]) -> Prepared:
        return prepare_batch(self.processor, images, prompts, self.device)

    @torch.inference_mode()
    def vision(self, prepared: Prepared) -> VisionResult:
        return pruned_layout(prepared.inputs, self.hf_config, self.vision_engine, self.image_newline)

    @torch.inference_mode()
    def _requests(self, vision: VisionResult) -> RequestPrompts:
        prompts = build_prompt_tables(vision.sequence, vision.features, self.vocab_size)
        table = prompts.stacked_table(self.runner.dtype)  # [B, R, D] in the engine dtype (callmap trap 1)
        return RequestPrompts([i.to(torch.int32).cpu() for i in prompts.input_ids], [table[b] for b in range(len(table))])

    def _start(self, prompts: RequestPrompts, max_new_tokens: int, end_id: int, streaming: bool) -> TokenStream:
        ids = prompts.input_ids
        self._check_limits(prompts, max(len(i) for i in ids), max_new_tokens)
        out = self.runner.generate(
            ids, prompt_table=torch.stack(prompts.tables), prompt_tasks=prompts.prompt_tasks,
            max_new_tokens=max_new_tokens, end_id=end_id, pad_id=self.pad_id, streaming=streaming,
            return_dict=True, output_sequence_lengths=True, top_k=1,  # greedy, like the torch backend
        )
        return TokenStream(out if streaming else iter([out]), [len(i) for i in ids])

    def _check_limits(self, prompts: RequestPrompts, longest: int, max_new_tokens: int) -> None:
        """The engine limits as one-line errors, before the executor would raise (callmap traps 3 and 5)."""
        runner = self.runner
        if len(prompts.tables) > runner.max_batch_size:
            raise ValueError(f"{len(prompts.tables)} prompts, the decoder engine takes at most {runner.max_batch_size}")
        per_request = runner.max_prompt_embedding_table_size // runner.max_batch_size  # promptTuningBuffers.cpp
        rows = max(t.shape[0] for t in prompts.tables)
        if rows > per_request:
            raise ValueError(f"a request has {rows} visual tokens, the decoder engine holds {per_request} per request")
        if longest > runner.max_input_len or longest + max_new_tokens > runner.max_seq_len:
            raise ValueError(
                f"a request of {longest} tokens + {max_new_tokens} new ones exceeds the decoder engine's "
                f"max_input_len {runner.max_input_len} / max_seq_len {runner.max_seq_len}"
            )

    def prefill(self, prepared: Prepared, vision: VisionResult) -> PrefillResult:
        """One token per request, and nothing left running: `ModelRunnerCpp` exposes no way to continue or
        cancel a request, so a longer streamed request would keep the GPU busy after TTFT was taken."""
        prompts = self._requests(vision)
        first = self._start(prompts, 1, NO_END_ID, streaming=False).until(1)
        return PrefillResult(first_tokens=torch.tensor([t[0] for t in first]), state=prompts)

    def decode(self, prefill: PrefillResult, new_tokens: int) -> torch.Tensor:
        """Exactly new_tokens more tokens per request: [B, new_tokens]. The requests run again from their
        prompts (greedy, so the first token repeats prefill's): the time includes one more prefill."""
        tokens = self._start(prefill.state, 1 + new_tokens, NO_END_ID, streaming=False).until(1 + new_tokens)
        if any(len(t) < 1 + new_tokens for t in tokens):
            raise RuntimeError(f"the decoder stopped before {1 + new_tokens} tokens: {[len(t) for t in tokens]}")
        return torch.tensor([t[1 : 1 + new_tokens] for t in tokens])  # [B, new_tokens]

    def stream(
        self, images: list[Image.Image], prompts: list[str], max_new_tokens: int | None = None
    ) -> Iterator[list[list[int]]]:
        """Every request's tokens so far, after each executor response (stops at each request's EOS)."""
        requests = self._requests(self.vision(self.prepare(images, prompts)))
        yield from self._start(requests, max_new_tokens or self.max_new_tokens, self.end_id, streaming=True).steps()

    def generate(
        self, images: list[Image.Image], prompts: list[str], max_new_tokens: int | None = None, streaming: bool = True
    ) -> Generation:
        """Answers for a batch (each image its own prompt's; several `<image>` per prompt work too)."""
        max_new_tokens = max_new_tokens or self.max_new_tokens
        prepared = self.prepare(images, prompts)
        ready = time.perf_counter()
        vision = self.vision(prepared)
        stream = self._start(self._requests(vision), max_new_tokens, self.end_id, streaming)
        try:
            stream.until(1)
            ttft = time.perf_counter() - ready
            tokens = stream.until(max_new_tokens + 1)
        finally:
            stream.close()  # also on KeyboardInterrupt or an exception between the two reads
        texts = [t.strip() for t in self.processor.batch_decode(tokens, skip_special_tokens=True)]
        return Generation(texts, tokens, vision.kept_tokens.cpu(), vision.full_tokens.cpu(), ttft)


def generate_from_engine(
    engine_dir: str | Path, image_path: str | Path, prompt: str, max_new_tokens: int, plugin_library: str | Path | None = None
) -> tuple[str, int, int, float]:
    """`hivtp generate --engine DIR`: (answer, visual tokens kept, without pruning, TTFT seconds)."""
    from hivtp.loading import load_image

    image = load_image(image_path)
    backend = TRTLLMBackend(engine_dir, plugin_library, max_new_tokens=max_new_tokens)
    result = backend.generate([image], [prompt], max_new_tokens, streaming=True)
    return result.texts[0], int(result.kept_tokens.sum()), int(result.full_tokens.sum()), result.ttft_s
