"""`--model hivtp_llava`: lmms-eval's own `llava_hf` classes, with HIVTP pruning on the loaded model.

lmms-eval resolves a model name to its chat class, or to its simple class with `--force_simple`;
`hivtp_llava` has one of each, subclassing `llava_hf`'s, so prompts, generation and scoring are
the stock model's. lmms-eval imports this module only when it resolves `hivtp_llava`; an import
error (lmms-eval's llava_hf needs `decord`, for instance) surfaces as it is.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from accelerate import PartialState
from lmms_eval.models.chat.llava_hf import LlavaHf as LlavaHfChat
from lmms_eval.models.simple.llava_hf import LlavaHf as LlavaHfSimple

from hivtp.lmms.pruning import EvalModel, check_batch_size, split_model_args

LLAVA_HF_ARGS = tuple(p for p in inspect.signature(LlavaHfSimple.__init__).parameters if p not in ("self", "kwargs"))


class HIVTPPruning:
    """Mixed in before a `llava_hf` class: HIVTP options out of the model_args, the model wrapped."""

    def __init__(self, **model_args: Any) -> None:
        llava_args, config = split_model_args(model_args, LLAVA_HF_ARGS)
        check_batch_size(llava_args.get("batch_size", 1))
        llava_args.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")
        # llava_hf's default device_map="" only works for its multi-process (data parallel) path:
        # one process passes it to from_pretrained, which refuses it. Load straight onto the device.
        llava_args.setdefault("device_map", "" if PartialState().num_processes > 1 else llava_args["device"])
        super().__init__(**llava_args)
        model = self.model  # unwrapped from DDP when lmms-eval runs data parallel
        config.check_encoder(model.config.vision_config.num_hidden_layers)
        self._model = EvalModel(model, config)

    def generate_until(self, requests: list[Any]) -> list[Any]:
        self._model.errors.clear()
        results = super().generate_until(requests)
        if self._model.errors:
            first = self._model.errors[0]
            raise RuntimeError(
                f"hivtp_llava: {len(self._model.errors)} of {len(requests)} generations failed "
                f"(llava_hf would score them as empty answers); the first: {type(first).__name__}: {first}"
            ) from first
        return results


class HivtpLlava(HIVTPPruning, LlavaHfChat):
    """`--model hivtp_llava`: llava_hf's chat class (messages through the processor's chat template)."""


class HivtpLlavaSimple(HIVTPPruning, LlavaHfSimple):
    """`--model hivtp_llava --force_simple`: llava_hf's simple class (one prompt string)."""
