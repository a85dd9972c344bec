"""Clients of the hivtp ensemble: gRPC (streaming RPC, one or many responses) and HTTP (`/generate`).

The ensemble is decoupled (it can stream), and Triton serves decoupled models over gRPC only through
the bidirectional ModelStreamInfer RPC and over HTTP through the generate extension (`/generate`: one
response; `/generate_stream`: server-sent events); its unary ModelInfer / HTTP `/infer` refuse them.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hivtp.config import INT32_MAX, is_int
from hivtp.runtime.triton.repository import ENSEMBLE


@dataclass(frozen=True)
class Reply:
    text: str
    ttft_s: float  # request sent -> first response (the first token when streaming)
    latency_s: float  # request sent -> final response
    pieces: int  # responses received


@dataclass(frozen=True)
class Question:
    image: bytes  # an encoded image file
    prompt: str
    max_tokens: int | None = None
    budget: int | None = None
    pruning_mode: str | None = None  # paper | budget | none
    stream: bool = False

    def __post_init__(self) -> None:
        for name in ("max_tokens", "budget"):  # the ensemble's INT32 inputs; the server judges the values that fit
            value = getattr(self, name)
            if value is not None and (not is_int(value) or not -INT32_MAX - 1 <= value <= INT32_MAX):
                raise ValueError(f"{name} must be an integer that fits the server's INT32 input (at most {INT32_MAX}), got {value!r}")

    def arrays(self) -> dict[str, np.ndarray]:
        """Ensemble inputs, batch dimension first."""
        x = {
            "text_input": np.array([[self.prompt.encode("utf-8")]], dtype=object),
            "image_bytes_input": np.frombuffer(self.image, dtype=np.uint8)[None],
            "stream": np.array([[self.stream]], dtype=bool),
        }
        if self.max_tokens is not None:
            x["max_tokens"] = np.array([[self.max_tokens]], dtype=np.int32)
        if self.budget is not None:
            x["budget"] = np.array([[self.budget]], dtype=np.int32)
        if self.pruning_mode is not None:
            x["pruning_mode"] = np.array([[self.pruning_mode.encode()]], dtype=object)
        return x


def read_image_bytes(path: str | Path) -> bytes:
    """The file's bytes, sent as they are; decoded here first so that what the server would refuse (not an
    image, too large) is one clear line before anything is sent."""
    from hivtp.loading import load_image

    load_image(path)
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err.strerror}") from None


def require_tritonclient() -> None:
    import importlib.util

    if importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec("grpc") is None:
        raise ValueError('the client needs tritonclient: pip install -e ".[serve]" (or "tritonclient[grpc,http]")')


def grpc_inputs(arrays: dict[str, np.ndarray]) -> list[Any]:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, value in arrays.items():
        tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


class GrpcSession:
    """One gRPC stream to the server; requests go one after another (one session per concurrent client)."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        require_tritonclient()
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(url)
        self.url = url
        self.timeout_s = timeout_s
        self.replies: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.replies.put((result, error)))

    def ask(self, question: Question, on_piece: Callable[[str], None] | None = None) -> Reply:
        return self.send(grpc_inputs(question.arrays()), on_piece)

    def send(self, inputs: list[Any], on_piece: Callable[[str], None] | None = None) -> Reply:
        from tritonclient.utils import InferenceServerException

        start = time.perf_counter()
        try:
            self.client.async_stream_infer(ENSEMBLE, inputs, enable_empty_final_response=True)
        except InferenceServerException:
            pass  # a broken stream: the callback has (or will get) the reason
        pieces, first = [], None
        while True:
            try:
                result, error = self.replies.get(timeout=self.timeout_s)
            except queue.Empty:
                raise ValueError(f"no answer from the server within {self.timeout_s:.0f} s") from None
            if error is not None:
                raise ValueError(self.describe(error))
            response = result.get_response()
            text = result.as_numpy("text_output")
            if text is not None:
                first = first if first is not None else time.perf_counter()
                piece = text.reshape(-1)[0].decode("utf-8")
                pieces.append(piece)
                if on_piece is not None:
                    on_piece(piece)
            if response.parameters["triton_final_response"].bool_param:
                end = time.perf_counter()
                return Reply("".join(pieces).strip(), (first or end) - start, end - start, len(pieces))

    def describe(self, error: Any) -> str:
        """One line: the server's refusal, or why it could not be reached."""
        from tritonclient.utils import InferenceServerException

        message = error.message() if isinstance(error, InferenceServerException) else str(error)
        status = str(error.status()) if isinstance(error, InferenceServerException) else ""
        message = " ".join(str(message).split())
        if "UNAVAILABLE" in status or "failed to connect" in message:
            return f"cannot reach the server at {self.url}: {message}"
        return f"the server refused the request: {message}"

    def close(self) -> None:
        # cancel what is still pending: a graceful stop waits for every request's answer, so a server that
        # accepted the connection and never answers held `hivtp ask --timeout 5` for 20 s or more
        self.client.stop_stream(cancel_requests=True)
        self.client.close()


def http_body(question: Question, stream: bool) -> bytes:
    """The generate extension's JSON: one field per input (the image as a list of byte values)."""
    body: dict[str, Any] = {"text_input": question.prompt, "image_bytes_input": list(question.image), "stream": stream}
    for name in ("max_tokens", "budget", "pruning_mode"):
        if getattr(question, name) is not None:
            body[name] = getattr(question, name)
    return json.dumps(body).encode()


def ask_http(url: str, question: Question, timeout_s: float = 120.0) -> Reply:
    """One answer through HTTP `/v2/models/ensemble/generate` (JSON; the image as a list of byte values)."""
    request = urllib.request.Request(f"http://{url}/v2/models/{ENSEMBLE}/generate", data=http_body(question, stream=False))
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            answer = json.loads(reply.read())
    except urllib.error.HTTPError as err:
        raise ValueError(f"the server refused the request: {json.loads(err.read() or b'{}').get('error', err.reason)}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ValueError(f"cannot reach {url}: {err}") from None
    latency = time.perf_counter() - start
    return Reply(answer["text_output"].strip(), latency, latency, 1)


def ask_http_stream(url: str, question: Question, timeout_s: float = 120.0) -> Reply:
    """Server-sent events from `/generate_stream`: one `data: {...}` event per token."""
    request = urllib.request.Request(f"http://{url}/v2/models/{ENSEMBLE}/generate_stream", data=http_body(question, stream=True))
    start, first, pieces = time.perf_counter(), None, []
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        for line in reply:
            if line.startswith(b"data: "):
                event = json.loads(line[len(b"data: "):])
                if "error" in event:
                    raise ValueError(f"the server refused the request: {event['error']}")
                first = first if first is not None else time.perf_counter()
                pieces.append(event["text_output"])
    end = time.perf_counter()
    return Reply("".join(pieces).strip(), (first or end) - start, end - start, len(pieces))
