"""`hivtp serve` on a real Triton Inference Server (torch flavour, the shipped tiny models, loopback only).

Skipped with the reason when no tritonserver (nvidia-pytriton's or a container's) or no serving
environment with numpy < 2 is available; `.ci/run` provides both. Every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hivtp.config import HIVTPConfig
from hivtp.demo import shipped_model
from hivtp.runtime.triton.client import GrpcSession, Question, ask_http, ask_http_stream, grpc_inputs
from hivtp.runtime.triton.repository import TORCH_LLM, VISION, ServeOptions
from hivtp.runtime.triton.serve import LaunchOptions, running_server
from helpers import encoded, run_cli
from serve_support import HOST, alive, free_ports, process_tree, sample_variants, serving_setup

PROMPTS = ("what color is the circle ?", "describe the picture .")
MAX_TOKENS = 16  # = hivtp generate's default


@pytest.fixture(scope="module", params=["llava", "llava_next"])
def served(request, tmp_path_factory):
    """(kind, grpc url, http url, launch) of a running server for a shipped model: 2 instances per model."""
    server_binary, env = serving_setup()
    kind = request.param
    launch = LaunchOptions(HOST, free_ports(), server_binary, env, start_timeout_s=300)
    options = ServeOptions(model_dir=shipped_model(kind), instances=2, max_batch=8, queue_delay_us=20_000)
    with running_server(options, launch, tmp_path_factory.mktemp(f"serve-{kind}")) as server:
        yield kind, f"{HOST}:{launch.ports.grpc}", f"{HOST}:{launch.ports.http}", server


@pytest.fixture(scope="module")
def references():
    """hivtp generate's answer (hivtp.generate.answer, what the command runs) per (kind, image, prompt, budget)."""
    from hivtp.generate import answer
    from hivtp.loading import load_llava

    models: dict[str, tuple] = {}
    cache: dict[tuple, str] = {}

    def expected(kind: str, image_index: int, prompt: str, budget: int | None) -> str:
        if kind not in models:
            models[kind] = load_llava(shipped_model(kind), dtype="float32")
        key = (kind, image_index, prompt, budget)
        if key not in cache:
            model, processor = models[kind]
            cache[key] = answer(model, processor, sample_variants()[image_index], prompt, HIVTPConfig(budget=budget), MAX_TOKENS,
                                ttft_repeats=0).text  # the answer only: no TTFT timing
        return cache[key]

    return expected


@pytest.mark.parametrize("budget", [None, 8])
def test_answers_equal_generate_over_every_protocol(served, references, budget) -> None:
    kind, grpc_url, http_url, _ = served
    images = sample_variants()
    session = GrpcSession(grpc_url)
    try:
        for index in (0, 5):
            image = encoded(images[index])
            for prompt in PROMPTS:
                expected = references(kind, index, prompt, budget)
                question = Question(image, prompt, MAX_TOKENS, budget)
                streamed = Question(image, prompt, MAX_TOKENS, budget, stream=True)
                got = {
                    "gRPC": session.ask(question).text, "gRPC streaming": session.ask(streamed).text,
                    "HTTP": ask_http(http_url, question).text, "HTTP SSE": ask_http_stream(http_url, streamed).text,
                }
                assert got == {name: expected for name in got}, (kind, index, prompt, budget)
    finally:
        session.close()


def stock_answer(kind: str, image, prompt: str) -> str:  # type: ignore[no-untyped-def]
    """The unpruned HF model's greedy answer: what pruning_mode "none" must serve."""
    from hivtp.generate import build_prompt
    from hivtp.loading import load_llava

    model, processor = load_llava(shipped_model(kind), dtype="float32")
    inputs = processor(images=[image], text=[build_prompt(processor, prompt)], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_every_pruning_mode_is_served_and_none_is_the_stock_model(served, references) -> None:
    kind, grpc_url, _, _ = served
    session = GrpcSession(grpc_url)
    try:
        image = sample_variants()[0]
        ask = lambda budget, mode: session.ask(Question(encoded(image), PROMPTS[0], MAX_TOKENS, budget, mode)).text  # noqa: E731
        assert ask(None, "none") == stock_answer(kind, image, PROMPTS[0])
        assert ask(None, "paper") == ask(None, None) == references(kind, 0, PROMPTS[0], None)
        assert ask(4, "budget") == ask(4, None) == references(kind, 0, PROMPTS[0], 4)
    finally:
        session.close()


BAD = {
    "not an image": (dict(image=b"GIF89a but not really"), "image"),
    "empty image": (dict(image=b""), "image_bytes_input is empty"),
    "empty prompt": (dict(prompt="   "), "text_input is empty"),
    "enormous prompt": (dict(prompt="what " * 2000), "characters"),
    "prompt beyond the model's positions": (dict(prompt="a " * 2000), "positions"),
    "negative budget": (dict(budget=-3), "budget must be a positive integer"),
    "zero budget": (dict(budget=0), "budget must be a positive integer"),
    "budget with paper mode": (dict(budget=4, pruning_mode="paper"), "leave one of them out"),
    "unknown mode": (dict(pruning_mode="half"), "pruning_mode must be one of"),
    "budget mode without budget": (dict(pruning_mode="budget"), "needs the budget input"),
    "zero max_tokens": (dict(max_tokens=0), "max_tokens must be in"),
    "huge max_tokens": (dict(max_tokens=10**9), "max_tokens must be in"),
}


def huge_image() -> bytes:
    from PIL import Image

    return encoded(Image.new("RGB", (8000, 6000)))  # 48 MP > the server's 40 MP limit, 150 kB of PNG


def raw_inputs_cases():
    import numpy as np

    good = Question(encoded(sample_variants()[0]), PROMPTS[0]).arrays()
    return {
        "text as FP32": ({**good, "text_input": np.array([[1.5]], dtype=np.float32)}, "data-type"),
        "two prompts in one": ({**good, "text_input": np.array([[b"a", b"b"]], dtype=object)}, "unexpected shape"),
        "budget as INT64": ({**good, "budget": np.array([[4]], dtype=np.int64)}, "data-type"),
        "missing image": ({k: v for k, v in good.items() if k != "image_bytes_input"}, "image_bytes_input is missing"),
        "missing prompt": ({k: v for k, v in good.items() if k != "text_input"}, "text_input is missing"),
        "unknown input": ({**good, "foo": np.array([[1]], dtype=np.int32)}, "unexpected inference input"),
        "non-UTF-8 prompt": ({**good, "text_input": np.array([[b"\xff\xfe what"]], dtype=object)}, "not UTF-8"),
    }


def test_bad_requests_get_one_clean_line_and_the_server_keeps_serving(served) -> None:
    kind, grpc_url, http_url, _ = served
    image = encoded(sample_variants()[0])
    session = GrpcSession(grpc_url)
    try:
        cases = {name: (Question(**{"image": image, "prompt": PROMPTS[0], **fields}), needle) for name, (fields, needle) in BAD.items()}
        cases["huge image"] = (Question(huge_image(), PROMPTS[0]), "pixels")
        for name, (question, needle) in cases.items():
            for send in (session.ask, lambda q: ask_http(http_url, q)):
                with pytest.raises(ValueError) as refused:
                    send(question)
                message = str(refused.value)
                assert needle in message and "\n" not in message and "Traceback" not in message, (name, message)
        for name, (arrays, needle) in raw_inputs_cases().items():
            with pytest.raises(ValueError, match=needle):
                session.send(grpc_inputs(arrays))
        assert session.ask(Question(image, PROMPTS[0], MAX_TOKENS)).text  # still serving
    finally:
        session.close()


def load_plan(count: int) -> list[Question]:
    """count requests over 8 images x 2 prompts x 5 pruning choices, in a scrambled order."""
    images = [encoded(image) for image in sample_variants()]
    choices = [(None, None), (4, None), (8, None), (16, None), (None, "none")]
    plan = []
    for i in range(count):
        budget, mode = choices[i % len(choices)]
        plan.append(Question(images[(i * 3) % len(images)], PROMPTS[(i // 7) % 2], 8, budget, mode, stream=i % 3 == 0))
    return plan


def batch_sizes(http_url: str, model: str) -> dict[int, int]:
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(http_url).get_inference_statistics(model)["model_stats"][0]
    return {int(item["batch_size"]): int(item["compute_infer"]["count"]) for item in stats.get("batch_stats", [])}


def test_load_many_clients_equal_answers_and_dynamic_batching(served) -> None:
    """512 requests from 32 concurrent gRPC clients: no error, each answer = the same request sent alone."""
    kind, grpc_url, http_url, _ = served
    if kind != "llava":
        pytest.skip("the load test runs on the LLaVA-1.5 server (one load test per CI run)")
    plan = load_plan(512)
    distinct = {(q.image, q.prompt, q.budget, q.pruning_mode): q for q in plan}
    session = GrpcSession(grpc_url)
    try:
        alone = {key: session.ask(q).text for key, q in distinct.items()}  # one at a time
    finally:
        session.close()
    deadline = time.monotonic() + 600
    local = threading.local()
    sessions: list[GrpcSession] = []
    lock = threading.Lock()

    def send(question: Question) -> str:
        if time.monotonic() > deadline:
            raise TimeoutError("the load test ran past its 600 s budget")
        if not hasattr(local, "session"):
            local.session = GrpcSession(grpc_url, timeout_s=300)
            with lock:
                sessions.append(local.session)
        return local.session.ask(question).text

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(send, plan))
    finally:
        for s in sessions:
            s.close()
    wrong = [(q.prompt, q.budget, q.pruning_mode, a) for q, a in zip(plan, answers)
             if a != alone[(q.image, q.prompt, q.budget, q.pruning_mode)]]
    assert not wrong, f"{len(wrong)} answers differ from the same request sent alone, e.g. {wrong[:3]}"
    for model in (VISION, TORCH_LLM):
        sizes = batch_sizes(http_url, model)
        assert max(sizes) > 1, f"{model} never ran a batch of more than one request: {sizes}"


def test_second_server_on_busy_ports_fails_with_one_line(served) -> None:
    import tempfile

    _, grpc_url, http_url, _ = served
    scratch = set(Path(tempfile.gettempdir()).glob("hivtp-serve-*"))
    done = run_cli("serve", "--http-port", http_url.rsplit(":", 1)[1], "--grpc-port", grpc_url.rsplit(":", 1)[1], timeout=60)
    assert set(Path(tempfile.gettempdir()).glob("hivtp-serve-*")) == scratch, "a refused start left its scratch folder"
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hivtp: error: HTTP port") and "busy" in lines[0], done.stderr


class Output:
    """Lines of a child process's stream, collected by a thread so the child never blocks on a full pipe."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True).start()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s: {self.lines[-5:]}"
            time.sleep(0.5)


def test_serve_command_recovers_from_a_killed_backend_and_stops_without_leftovers(tmp_path) -> None:
    server_binary, env = serving_setup()
    ports = free_ports()
    command = [sys.executable, "-m", "hivtp.cli", "serve", "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
               "--metrics-port", str(ports.metrics), "--tritonserver", str(server_binary), "--python-env", str(env)]
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = Output(serve.stdout), Output(serve.stderr)
    try:
        out.wait_for("ready", 300)
        assert any(f"{HOST}:{ports.grpc}" in line for line in out.lines), out.lines
        busy = run_cli("serve", "--http-port", str(ports.http), timeout=60)
        assert busy.returncode == 2 and len(busy.stderr.strip().splitlines()) == 1, busy.stderr
        tree = process_tree(serve.pid)
        stubs = [pid for pid in tree if "triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(stubs) == 4, f"one stub per Python model instance, got {len(stubs)}"
        os.kill(stubs[0], signal.SIGKILL)  # a backend stub dies: its model stays READY, every request fails
        err.wait_for("serving again", 300)
        ask = run_cli("ask", "--url", f"{HOST}:{ports.grpc}", timeout=120)
        assert ask.returncode == 0 and ask.stdout.startswith("answer: "), ask.stderr
        tree = process_tree(serve.pid)
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=60)
    assert code == 0 and any("stopped" in line for line in out.lines), (code, out.lines, err.lines)
    assert not [pid for pid in tree if pid != serve.pid and alive(pid)], "processes left after hivtp serve stopped"
    assert not list(Path("/dev/shm").glob(f"hivtp_{serve.pid}_*")), "shared-memory regions left behind"
