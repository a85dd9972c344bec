"""`multimodal_encoders`: HIVTP pruning for a batch of requests, cut into per-request prompt tables and fake ids.

Torch flavour: `TorchVision` runs `TorchBackend.vision` (hivtp pruning, or the stock path for pruning_mode
"none") over every request of a batch at once. Engine flavour: `EngineVision` runs the vision plan through
BLS and `pruned_layout`. Both then call `build_prompt_tables`, so the LLM gets exactly the tensors
`runtime/trtllm.py` sends TensorRT-LLM.

Legend: B requests in a batch, S processor length, L_b prompt length of request b, k_b its table rows, D hidden.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hivtp.runtime.triton.model_base import PythonModel, model_dtype, pb
from hivtp.runtime.triton.repository import NO_PRUNING

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
        # one copy to the host, then the per-request cuts there (on a GPU they would each wait for the device)
        host = torch.device("cpu")
        prompts = build_prompt_tables(vision.sequence.to(host), vision.features.to(host, self.table_dtype), self.vocab_size)
        outputs = []
        for ids, table in zip(prompts.input_ids, prompts.tables):
            outputs.append({
                "INPUT_ID": ids[None].to(torch.int32).numpy(),  # [1, L_b]
                "REQUEST_INPUT_LEN": np.array([[len(ids)]], dtype=np.int32),
                "OUT_PROMPT_EMBEDDING_TABLE": table[None].numpy(),  # [1, k_b, D]
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
        return TorchBackend(self.model, self.processor, config).vision(Prepared(inputs))  # LLaVA-1.5 ignores image_sizes


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
        self.vocab_size = vocab_size(facts["decoder"], self.hf_config)
        self.pad_id = pad_id_of(self.hf_config)
        self.built = facts["hivtp_config"].get("budget") or 0
        self.max_batch = int(facts["max_vision_batch"])
        self.image_newline = None
        if facts["model_type"] == "llava_next":
            from safetensors.torch import load_file

            from hivtp.build.manifest import IMAGE_NEWLINE_FILE

            self.image_newline = load_file(str(engine_dir / IMAGE_NEWLINE_FILE))["image_newline"]
        self.run_plan = self.bls_plan
        self.device = torch.device("cpu")  # BLS takes and gives host arrays, the layout is host work: no round trip

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
