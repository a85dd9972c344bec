"""The Python-backend models of the hivtp Triton repository: each written model.py imports one class from here.

`Preprocessing` and `Postprocessing` live here; `TorchVision` / `EngineVision` (multimodal_encoders) in
model_vision.py, `TorchLLM` (torch_llm) in model_llm.py, the shared request loop in model_base.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hivtp.runtime.triton.model_base import PythonModel, optional_scalar, pruning_of, text_of
from hivtp.runtime.triton.model_llm import TorchLLM
from hivtp.runtime.triton.model_vision import EngineVision, TorchVision

__all__ = ["Preprocessing", "TorchVision", "EngineVision", "TorchLLM", "Postprocessing"]


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
        from hivtp.runtime.backend import prepare_batch

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
        batch = prepare_batch(self.processor, [image], [prompt], torch.device("cpu")).inputs
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


def _has_generation_config(path: str) -> bool:
    return (Path(path) / "generation_config.json").is_file()


def decode_image(data: np.ndarray | None, max_bytes: int, max_pixels: int) -> Any:
    """Encoded image file bytes (PNG, JPEG, ...) -> RGB PIL image as `hivtp generate` loads it (orientation,
    transparency, 16-bit range: hivtp.loading), refusing what is not an image or too big."""
    from hivtp.loading import decode_image as decode

    if data is None:
        raise ValueError("image_bytes_input is missing: send the bytes of an image file")
    if data.size == 0:
        raise ValueError("image_bytes_input is empty: send the bytes of an image file")
    if data.size > max_bytes:
        raise ValueError(f"image_bytes_input has {data.size} bytes, this server takes at most {max_bytes}")
    return decode(data.tobytes(), "image_bytes_input", max_pixels)


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
