"""What every Python-backend model of the hivtp repository shares: the request loop, one-line errors, request fields.

Each class follows the Python backend's `TritonPythonModel` contract (`initialize(args)`, `execute(requests)`,
triton-inference-server/python_backend README). Bad requests get one readable error line each
(`ValueError` text; anything else becomes "internal error in MODEL: Type: first line", the traceback
goes to the server log only) and the other requests of the batch are answered normally.
"""

from __future__ import annotations

from collections.abc import Callable
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


def model_dtype(device: torch.device) -> str:
    """As `hivtp generate`: float32 on the CPU, the checkpoint's own dtype on a GPU."""
    return "float32" if device.type == "cpu" else "auto"
