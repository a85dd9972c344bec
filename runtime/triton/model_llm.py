"""`torch_llm`: the HF LLM behind the `tensorrt_llm` model's request tensors (torch flavour)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hivtp.runtime.triton.model_base import PythonModel, model_dtype, optional_scalar, pb

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
                sender.send(self.respond(x), flags=final)
            else:
                live.append((sender, x))
        if live:
            error = self.guarded(lambda: self.generate(live))
            if isinstance(error, BaseException):
                for sender, x in live:
                    if not x["done"]:
                        sender.send(self.respond(error), flags=final)
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
