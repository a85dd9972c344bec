"""The Python-backend models of the hivtp Triton repository (each model.py imports one class from here).

Each class follows the Python backend's `TritonPythonModel` contract (`initialize(args)`, `execute(requests)`,
triton-inference-server/python_backend README). Bad requests get one readable error line each
(`ValueError` text; anything else becomes "internal error in MODEL: Type: first line", the traceback
goes to the server log only) and the other requests of the batch are answered normally.

Torch flavour: `TorchVision` runs `TorchBackend.vision` (hivtp pruning, or the stock path for
pruning_mode "none") over every request of a batch at once, then `build_prompt_tables` turns the
pruned layout into per-request fake ids and prompt tables, exactly the tensors `runtime/trtllm.py`
sends TensorRT-LLM. `TorchLLM` consumes them with TensorRT-LLM's lookup rule (`prompt_sequence`) and
generates greedily with `TorchBackend.prefill` / `decode`, one batch per execution.

Legend: B requests in a batch, S processor length, L_b prompt length of request b, k_b its table rows, D hidden.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hivtp.runtime.triton.repository import NO_PRUNING, read_parameters

MODES = ("paper", "budget", "none")


def pb() -> Any:
    """triton_python_backend_utils: importable only inside the Python backend's stub process."""
    import triton_python_backend_utils as pb_utils

    return pb_utils


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def optional_scalar(value: np.ndarray | None) -> Any:
    """A dims-[1] input as one Python value, None when the client left the optional input out."""
    if value is None:
        return None
    if value.size != 1:
        raise ValueError(f"expected one value, got shape {list(value.shape)}")
    return value.reshape(-1)[0].item() if value.dtype != object else value.reshape(-1)[0]


def text_of(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{name} is not UTF-8 text") from None
    return str(value)


def pruning_of(budget: Any, mode: Any, default: int) -> int:
    """The request's pruning as one int: -1 none, 0 paper mode, K > 0 a budget (the server's default if unset)."""
    mode = None if mode is None else text_of(mode, "pruning_mode").strip().lower()
    if mode is not None and mode not in MODES:
        raise ValueError(f"pruning_mode must be one of {', '.join(MODES)}, got {mode!r}")
    if budget is not None:
        budget = int(budget)
        if budget <= 0:
            raise ValueError(f"budget must be a positive integer (visual tokens per image), got {budget}")
        if mode in ("paper", "none"):
            raise ValueError(f"budget {budget} was given with pruning_mode {mode!r}: leave one of them out")
        return budget
    if mode == "budget":
        raise ValueError("pruning_mode 'budget' needs the budget input")
    return {None: default, "paper": 0, "none": NO_PRUNING}[mode]


class PythonModel:
    """Request loop shared by every model: per-request errors, one readable line each."""

    name = "model"

    def initialize(self, args: dict[str, Any]) -> None:
        self.params = read_parameters(args)
        self.name = args.get("model_name", self.name)
        torch.set_num_threads(int(self.params.get("torch_threads", "1")))
        gpu = args.get("model_instance_kind") == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        self.setup()

    def setup(self) -> None: ...

    def inputs(self, request: Any, names: tuple[str, ...]) -> dict[str, np.ndarray | None]:
        found = {}
        for name in names:
            tensor = pb().get_input_tensor_by_name(request, name)
            found[name] = None if tensor is None else tensor.as_numpy()
        return found

    def error(self, err: BaseException) -> Any:
        if not isinstance(err, ValueError):
            import traceback

            pb().Logger.log_error(f"{self.name}: {traceback.format_exc()}")
            return pb().TritonError(f"internal error in {self.name}: {type(err).__name__}: {one_line(err)}")
        return pb().TritonError(one_line(err))

    def respond(self, outputs: dict[str, np.ndarray] | BaseException) -> Any:
        if isinstance(outputs, BaseException):
            return pb().InferenceResponse(error=self.error(outputs))
        return pb().InferenceResponse([pb().Tensor(name, value) for name, value in outputs.items()])

    def guarded(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as err:  # every failure becomes that request's error response
            return err


class Preprocessing(PythonModel):
    """QUERY + IMAGE_BYTES -> the processor's ids and pixel values, like `hivtp generate` (hivtp.generate.answer)."""

    FIELDS = ("QUERY", "IMAGE_BYTES", "REQUEST_OUTPUT_LEN", "BUDGET", "PRUNING_MODE")

    def setup(self) -> None:
        from transformers import AutoConfig, AutoProcessor, GenerationConfig

        path = self.params["hf_model_path"]
        self.processor = AutoProcessor.from_pretrained(path)
        hf_config = AutoConfig.from_pretrained(path)
        tokenizer = self.processor.tokenizer
        eos = GenerationConfig.from_pretrained(path).eos_token_id if _has_generation_config(path) else None
        eos = eos[0] if isinstance(eos, list) else eos
        self.end_id = int(eos if eos is not None else tokenizer.eos_token_id)
        pad = hf_config.text_config.pad_token_id
        self.max_positions = int(getattr(hf_config.text_config, "max_position_embeddings", 1 << 30))
        self.pad_id = int(pad if pad is not None else self.end_id)
        self.limits = {k: int(self.params[k]) for k in (
            "default_pruning", "max_tokens_default", "max_tokens_limit", "max_prompt_chars", "max_image_bytes", "max_image_pixels"
        )}

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self.respond(self.guarded(lambda r=r: self.preprocess(self.inputs(r, self.FIELDS)))) for r in requests]

    def preprocess(self, x: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        from hivtp.generate import build_prompt

        limits = self.limits
        if x["QUERY"] is None:
            raise ValueError("text_input is missing: send a question about the image")
        prompt = text_of(optional_scalar(x["QUERY"]), "text_input")
        if not prompt.strip():
            raise ValueError("text_input is empty: send a question about the image")
        if len(prompt) > limits["max_prompt_chars"]:
            raise ValueError(f"text_input has {len(prompt)} characters, this server takes at most {limits['max_prompt_chars']}")
        max_tokens = optional_scalar(x["REQUEST_OUTPUT_LEN"])
        max_tokens = limits["max_tokens_default"] if max_tokens is None else int(max_tokens)
        if not 1 <= max_tokens <= limits["max_tokens_limit"]:
            raise ValueError(f"max_tokens must be in [1, {limits['max_tokens_limit']}], got {max_tokens}")
        pruning = pruning_of(optional_scalar(x["BUDGET"]), optional_scalar(x["PRUNING_MODE"]), limits["default_pruning"])
        image = decode_image(x["IMAGE_BYTES"], limits["max_image_bytes"], limits["max_image_pixels"])
        batch = self.processor(images=[image], text=[build_prompt(self.processor, prompt)], return_tensors="pt")
        length = batch["input_ids"].shape[1]
        if length + max_tokens > self.max_positions:
            raise ValueError(f"the prompt takes {length} tokens with the image; with max_tokens {max_tokens} that exceeds "
                             f"the model's {self.max_positions} positions")
        pixels = batch["pixel_values"].float()  # [1, 3, H, W] (LLaVA) or [1, crops, 3, H, W] (NeXT)
        pixels = pixels if pixels.dim() == 5 else pixels[:, None]  # [1, n, 3, H, W]
        sizes = batch.get("image_sizes", torch.tensor([[image.height, image.width]]))
        return {
            "INPUT_ID": batch["input_ids"].to(torch.int32).numpy(), "PIXEL_VALUES": pixels.numpy(),
            "IMAGE_SIZES": sizes.to(torch.int64).numpy(), "PRUNING": np.array([[pruning]], dtype=np.int32),
            "REQUEST_OUTPUT_LEN": np.array([[max_tokens]], dtype=np.int32),
            "OUT_END_ID": np.array([[self.end_id]], dtype=np.int32), "OUT_PAD_ID": np.array([[self.pad_id]], dtype=np.int32),
        }


def model_dtype(device: torch.device) -> str:
    """As `hivtp generate`: float32 on the CPU, the checkpoint's own dtype on a GPU."""
    return "float32" if device.type == "cpu" else "auto"


def _has_generation_config(path: str) -> bool:
    return (Path(path) / "generation_config.json").is_file()


def decode_image(data: np.ndarray | None, max_bytes: int, max_pixels: int) -> Any:
    """Encoded image file bytes (PNG, JPEG, ...) -> RGB PIL image, refusing what is not an image or too big."""
    from PIL import Image, UnidentifiedImageError

    if data is None:
        raise ValueError("image_bytes_input is missing: send the bytes of an image file")
    if data.size == 0:
        raise ValueError("image_bytes_input is empty: send the bytes of an image file")
    if data.size > max_bytes:
        raise ValueError(f"image_bytes_input has {data.size} bytes, this server takes at most {max_bytes}")
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            if image.width * image.height > max_pixels:
                raise ValueError(f"the image is {image.width}x{image.height}, this server takes at most {max_pixels} pixels")
            return image.convert("RGB")
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError("image_bytes_input is not an image file PIL can read") from None
    except Exception as err:  # PIL raises many types for damaged files (OSError, SyntaxError, DecompressionBombError, ...)
        raise ValueError(f"image_bytes_input is not a readable image: {one_line(err)}") from None


class VisionModel(PythonModel):
    """Shared by both flavours: batch the requests, prune, and cut the pruned layout into per-request prompts."""

    FIELDS = ("input_ids", "pixel_values", "image_sizes", "pruning")

    def execute(self, requests: list[Any]) -> list[Any]:
        parsed = [self.guarded(lambda r=r: self.inputs(r, self.FIELDS)) for r in requests]
        results: list[Any] = list(parsed)
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(parsed):
            if not isinstance(x, BaseException):
                groups.setdefault(int(x["pruning"].reshape(-1)[0]), []).append(i)
        for pruning, members in groups.items():
            answer = self.guarded(lambda: self.prompts([parsed[i] for i in members], pruning))
            for j, i in enumerate(members):
                results[i] = answer if isinstance(answer, BaseException) else answer[j]
        return [self.respond(r) for r in results]

    @torch.inference_mode()
    def prompts(self, batch: list[dict[str, np.ndarray]], pruning: int) -> list[dict[str, np.ndarray]]:
        from hivtp.runtime.prompt_table import build_prompt_tables

        inputs = collate(batch, self.pad_id, self.device)
        vision = self.vision(inputs, pruning)
        prompts = build_prompt_tables(vision.sequence, vision.features, self.vocab_size)
        outputs = []
        for ids, table in zip(prompts.input_ids, prompts.tables):
            outputs.append({
                "INPUT_ID": ids[None].to(torch.int32).cpu().numpy(),  # [1, L_b]
                "REQUEST_INPUT_LEN": np.array([[len(ids)]], dtype=np.int32),
                "OUT_PROMPT_EMBEDDING_TABLE": table[None].to(self.table_dtype).cpu().numpy(),  # [1, k_b, D]
                "OUT_PROMPT_VOCAB_SIZE": np.array([[table.shape[0]]], dtype=np.int32),
            })
        return outputs


def collate(batch: list[dict[str, np.ndarray]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Requests -> one processor-style batch: ids left padded [B, S], pixel values [B, (n,) 3, H, W], sizes [B, 2]."""
    ids = [torch.from_numpy(x["input_ids"].reshape(-1).astype(np.int64)) for x in batch]
    S = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), S), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(ids), S), dtype=torch.int64)
    for b, row in enumerate(ids):
        input_ids[b, S - len(row) :], mask[b, S - len(row) :] = row, 1
    pixels = [torch.from_numpy(x["pixel_values"][0]) for x in batch]  # each [n_b, 3, H, W]
    if len({p.shape[1:] for p in pixels}) != 1:
        raise ValueError(f"pixel_values of different image sides in one batch: {[list(p.shape) for p in pixels]}")
    most = max(p.shape[0] for p in pixels)
    stacked = torch.zeros(len(pixels), most, *pixels[0].shape[1:])  # [B, n, 3, H, W], crops padded like the processor
    for b, p in enumerate(pixels):
        stacked[b, : p.shape[0]] = p
    sizes = torch.from_numpy(np.stack([x["image_sizes"].reshape(2) for x in batch]))  # [B, 2]
    pixel_values = stacked[:, 0] if most == 1 else stacked  # LLaVA-1.5: [B, 3, H, W]
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
            "pixel_values": pixel_values.to(device), "image_sizes": sizes.to(device)}


class TorchVision(VisionModel):
    """HIVTP on the HF model's vision path (`TorchBackend.vision`): tower, scores, selection, projector."""

    table_dtype = torch.float32

    def setup(self) -> None:
        from hivtp.config import HIVTPConfig
        from hivtp.loading import load_llava
        from hivtp.runtime.layout import pad_id_of

        self.model, self.processor = load_llava(self.params["hf_model_path"], dtype=model_dtype(self.device), device=str(self.device))
        self.base = HIVTPConfig.from_dict(json.loads(self.params["hivtp_config"]))
        self.vocab_size = int(self.model.config.text_config.vocab_size)
        self.pad_id = pad_id_of(self.model.config)

    def vision(self, inputs: dict[str, torch.Tensor], pruning: int) -> Any:
        from dataclasses import replace

        from hivtp.runtime.backend import Prepared
        from hivtp.runtime.torch_backend import TorchBackend

        config = None if pruning == NO_PRUNING else replace(self.base, budget=pruning or None)
        x = dict(inputs)
        if self.model.config.model_type != "llava_next":
            x.pop("image_sizes")
        return TorchBackend(self.model, self.processor, config).vision(Prepared(x))


class EngineVision(VisionModel):
    """Engine flavour: the vision plan (model vision_encoder) through BLS, then the host layout and prompt
    tables of `runtime/trtllm.py` (`pruned_layout`, `build_prompt_tables`), tables in the engine's fp16.

    The plan was built for one HIVTPConfig (the plugin fields are build-time constants): a request
    asking for another pruning gets a clean error.
    """

    table_dtype = torch.float16

    def setup(self) -> None:
        from transformers import AutoConfig

        from hivtp.runtime.layout import pad_id_of
        from hivtp.runtime.triton.engine_repository import engine_facts, vocab_size

        engine_dir = Path(self.params["engine_dir"])
        facts = engine_facts(engine_dir)
        self.hf_config = AutoConfig.from_pretrained(facts["source"])
        self.vocab_size = vocab_size(engine_dir, self.hf_config)
        self.pad_id = pad_id_of(self.hf_config)
        self.built = facts["hivtp_config"].get("budget") or 0
        self.max_batch = int(facts["max_vision_batch"])
        self.image_newline = None
        if facts["model_type"] == "llava_next":
            from safetensors.torch import load_file

            self.image_newline = load_file(str(engine_dir / "vision" / "image_newline.safetensors"))["image_newline"]
        self.run_plan = self.bls_plan

    def vision(self, inputs: dict[str, torch.Tensor], pruning: int) -> Any:
        from hivtp.runtime.prompt_table import pruned_layout

        if pruning != self.built:
            built = "paper mode" if self.built == 0 else f"budget {self.built}"
            raise ValueError(f"this server's vision engine was built for {built}: per-request pruning other than "
                             "that needs another `hivtp build` (or the torch flavour)")
        return pruned_layout(inputs, self.hf_config, self.run_plan, self.image_newline)

    def bls_plan(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pixel_values [n, 3, S, S] -> the plan's features [n, Kmax, D], counts [n], indices [n, Kmax], in chunks."""
        parts = []
        for chunk in pixel_values.split(self.max_batch):
            request = pb().InferenceRequest(
                model_name=self.params["vision_model_name"], requested_output_names=["features", "counts", "indices"],
                inputs=[pb().Tensor("pixel_values", chunk.float().cpu().numpy())],
            )
            reply = request.exec()
            if reply.has_error():
                raise RuntimeError(f"vision_encoder failed: {reply.error().message()}")
            parts.append([torch.from_numpy(pb().get_output_tensor_by_name(reply, name).as_numpy())
                          for name in ("features", "counts", "indices")])
        features, counts, indices = (torch.cat([p[i] for p in parts]) for i in range(3))
        return features, counts.reshape(-1), indices


class TorchLLM(PythonModel):
    """The HF LLM behind the `tensorrt_llm` model's inputs and outputs (decoupled: streams when asked).

    A batch runs as one static greedy generation (no in-flight batching): prefill, then decode until
    every request has its end id or its request_output_len tokens. Streaming requests get one response
    per token; the others one response with all their tokens.
    """

    FIELDS = ("input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "streaming",
              "prompt_embedding_table", "prompt_vocab_size")

    def setup(self) -> None:
        from hivtp.loading import load_llava

        self.model, self.processor = load_llava(self.params["hf_model_path"], dtype=model_dtype(self.device), device=str(self.device))
        self.vocab_size = int(self.model.config.text_config.vocab_size)

    def execute(self, requests: list[Any]) -> None:
        senders = [r.get_response_sender() for r in requests]
        parsed = [self.guarded(lambda r=r: self.request(self.inputs(r, self.FIELDS))) for r in requests]
        final = pb().TRITONSERVER_RESPONSE_COMPLETE_FINAL
        live = []
        for sender, x in zip(senders, parsed):
            if isinstance(x, BaseException):
                sender.send(pb().InferenceResponse(error=self.error(x)), flags=final)
            else:
                live.append((sender, x))
        if live:
            error = self.guarded(lambda: self.generate(live))
            if isinstance(error, BaseException):
                for sender, x in live:
                    if not x["done"]:
                        sender.send(pb().InferenceResponse(error=self.error(error)), flags=final)
        return None

    def request(self, x: dict[str, np.ndarray | None]) -> dict[str, Any]:
        if x["prompt_embedding_table"] is None:
            raise ValueError("torch_llm needs prompt_embedding_table (the multimodal_encoders output)")
        ids = torch.from_numpy(x["input_ids"].reshape(-1).astype(np.int64))
        table = torch.from_numpy(np.ascontiguousarray(x["prompt_embedding_table"][0])).float()  # [k_b, D]
        if table.dim() != 2 or table.shape[1] != self.model.config.text_config.hidden_size:
            raise ValueError(f"prompt_embedding_table must be [rows, {self.model.config.text_config.hidden_size}], got {list(table.shape)}")
        stream = optional_scalar(x["streaming"])
        end = optional_scalar(x["end_id"])
        return {
            "ids": ids, "table": table, "max": int(optional_scalar(x["request_output_len"])),
            "end": -1 if end is None else int(end), "stream": bool(stream) if stream is not None else False,
            "pad": int(optional_scalar(x["pad_id"]) or 0), "tokens": [], "done": False,
        }

    def generate(self, live: list[tuple[Any, dict[str, Any]]]) -> None:
        from hivtp.runtime.backend import VisionResult
        from hivtp.runtime.prompt_table import prompt_sequence
        from hivtp.runtime.torch_backend import TorchBackend

        requests = [x for _, x in live]
        sequence, features = prompt_sequence(
            [x["ids"] for x in requests], [x["table"].to(self.device) for x in requests], self.vocab_size, requests[0]["pad"]
        )
        counts = torch.tensor([x["table"].shape[0] for x in requests])
        backend = TorchBackend(self.model, self.processor, None)
        prefill = backend.prefill(None, VisionResult(features, sequence, counts, counts))  # type: ignore[arg-type]

        def step(tokens: torch.Tensor) -> bool:
            for (sender, x), token in zip(live, tokens.tolist()):
                self.emit(sender, x, token)
            return all(x["done"] for x in requests)

        if not step(prefill.first_tokens):
            backend.decode(prefill, max(x["max"] for x in requests) - 1, on_step=step)

    def emit(self, sender: Any, x: dict[str, Any], token: int) -> None:
        """One more token for request x: streamed at once, or kept until the request ends."""
        if x["done"]:
            return
        x["tokens"].append(token)
        x["done"] = token == x["end"] or len(x["tokens"]) >= x["max"]
        flags = pb().TRITONSERVER_RESPONSE_COMPLETE_FINAL if x["done"] else 0
        if x["stream"] or x["done"]:
            sent = [token] if x["stream"] else x["tokens"]
            outputs = {"output_ids": np.array([[sent]], dtype=np.int32), "sequence_length": np.array([[len(sent)]], dtype=np.int32)}
            try:
                sender.send(self.respond(outputs), flags=flags)
            except Exception:  # the client went away (cancelled stream): stop answering it, keep the others
                x["done"] = True


class Postprocessing(PythonModel):
    """Tokens -> text, decoded after a fixed anchor token: a streamed piece then keeps the space a whole-sequence
    decode puts before it, so the pieces of a stream, joined and stripped, are the whole answer. Every
    text_output may therefore start with a space (clients strip the joined text). The stream flag cannot
    reach this step: Triton refuses an ensemble step fed by a decoupled model and by another source."""

    def setup(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.params["tokenizer_dir"])
        self.anchor = self.tokenizer.encode("a", add_special_tokens=False)[:1]
        self.anchor_text = self.tokenizer.decode(self.anchor, skip_special_tokens=True)

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self.respond(self.guarded(lambda r=r: self.text(self.inputs(r, ("TOKENS_BATCH", "SEQUENCE_LENGTH")))))
                for r in requests]

    def text(self, x: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        length = int(x["SEQUENCE_LENGTH"].reshape(-1)[0])
        tokens = x["TOKENS_BATCH"][0, 0, :length].tolist()  # batch row, beam 0
        text = self.tokenizer.decode(self.anchor + tokens, skip_special_tokens=True)[len(self.anchor_text):]
        return {"OUTPUT": np.array([[text.encode("utf-8")]], dtype=object)}
