"""Triton model configurations as protobuf text (config.pbtxt), built from a few small pieces.

Only the fields hivtp uses; field names are Triton's `ModelConfig` proto (model_config.proto), so
`google.protobuf.text_format` with tritonclient's `model_config_pb2` parses every file written here
(tests/test_serve_repository.py) and the server's own loader reads them (tests/test_serve.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton data type without the TYPE_ prefix: STRING, UINT8, INT32, INT64, FP16, FP32, BOOL
    dims: tuple[int, ...]  # per-request dims (without the batch dimension when max_batch_size > 0)
    optional: bool = False
    ragged: bool = False  # allow_ragged_batch: requests of different shapes batch together
    reshape: tuple[int, ...] | None = None

    def text(self) -> str:
        fields = [f"name: {json.dumps(self.name)}", f"data_type: TYPE_{self.dtype}", f"dims: [ {', '.join(map(str, self.dims))} ]"]
        if self.reshape is not None:
            fields.append(f"reshape: {{ shape: [ {', '.join(map(str, self.reshape))} ] }}")
        if self.optional:
            fields.append("optional: true")
        if self.ragged:
            fields.append("allow_ragged_batch: true")
        return "  {\n    " + "\n    ".join(fields) + "\n  }"


def scalar(name: str, dtype: str, optional: bool = False) -> Tensor:
    """One value per request: dims [1], seen as a scalar by backends that reshape (TensorRT-LLM's convention)."""
    return Tensor(name, dtype, (1,), optional=optional)


def tensors(kind: str, items: Sequence[Tensor]) -> str:
    return f"{kind} [\n" + ",\n".join(t.text() for t in items) + "\n]"


def parameters(values: dict[str, str]) -> str:
    return "\n".join(
        f"parameters {{\n  key: {json.dumps(key)}\n  value: {{ string_value: {json.dumps(value)} }}\n}}"
        for key, value in values.items()
    )


def instance_group(count: int, gpus: Sequence[int] | None) -> str:
    """`count` instances on the CPU, or `count` instances on each listed GPU (Triton places them there)."""
    if gpus is None:
        return f"instance_group [\n  {{ count: {count}\n    kind: KIND_CPU }}\n]"
    return f"instance_group [\n  {{ count: {count}\n    kind: KIND_GPU\n    gpus: [ {', '.join(map(str, gpus))} ] }}\n]"


def dynamic_batching(queue_delay_us: int, max_queue_size: int) -> str:
    """Requests wait at most queue_delay_us to be batched; a full queue refuses new ones at once."""
    return (
        "dynamic_batching {\n"
        f"  max_queue_delay_microseconds: {queue_delay_us}\n"
        f"  default_queue_policy {{ max_queue_size: {max_queue_size} }}\n"
        "}"
    )


def header(name: str, max_batch_size: int, backend: str | None = None, platform: str | None = None) -> str:
    kind = f"backend: {json.dumps(backend)}" if backend else f"platform: {json.dumps(platform)}"
    return f"name: {json.dumps(name)}\n{kind}\nmax_batch_size: {max_batch_size}"


def decoupled() -> str:
    return "model_transaction_policy {\n  decoupled: true\n}"


def ensemble_step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    """One step: model input/output names -> ensemble tensor names."""
    maps = [f"      input_map {{ key: {json.dumps(k)} value: {json.dumps(v)} }}" for k, v in inputs.items()]
    maps += [f"      output_map {{ key: {json.dumps(k)} value: {json.dumps(v)} }}" for k, v in outputs.items()]
    return f"    {{\n      model_name: {json.dumps(model)}\n      model_version: -1\n" + "\n".join(maps) + "\n    }"


def config(*parts: str) -> str:
    return "\n".join(p for p in parts if p) + "\n"
