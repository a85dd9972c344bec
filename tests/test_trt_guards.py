"""TensorRT / TensorRT-LLM entry points: one-line errors without the packages, and the pure pieces around them.

Nothing here fakes TensorRT. Tests that need the real packages (and a GPU, the plugin library, built
engines) are skipped with the reason; CI has neither package, so it runs the guard and CPU tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from helpers import lacking
from hivtp.build.tensorrt_engine import build_vision_engine, load_vision_engine
from hivtp.build.trtllm_decoder import build_decoder_engine, check_decoder_limits, trtllm_build_args
from hivtp.demo import sample_image_path
from hivtp.runtime import trtllm
from hivtp.runtime.trtllm import TRTLLMBackend, TokenStream, engine_files, generate_from_engine, new_tokens


def _has_tensorrt() -> bool:
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")  # tensorrt-stubs alone makes `import tensorrt` succeed, empty


def _has_tensorrt_llm() -> bool:
    try:
        import tensorrt_llm
    except ImportError:
        return False
    return isinstance(getattr(tensorrt_llm, "__version__", None), str)


HAVE_TRT, HAVE_TRTLLM = _has_tensorrt(), _has_tensorrt_llm()
without_trt = pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed: the missing-package error cannot occur")
without_trtllm = pytest.mark.skipif(HAVE_TRTLLM, reason="tensorrt_llm is installed: the missing-package error cannot occur")
PLUGIN = os.environ.get("HIVTP_PLUGIN_LIB")
ENGINES = os.environ.get("HIVTP_ENGINE_DIR")


NO_TRT_RUN = lacking("tensorrt 10.14", HAVE_TRT, "HIVTP_PLUGIN_LIB")
NO_TRTLLM_RUN = lacking("tensorrt_llm 1.2.1", HAVE_TRTLLM, "HIVTP_ENGINE_DIR")


def one_line(err: pytest.ExceptionInfo[ValueError]) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def vision_args(tmp_path: Path) -> dict:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not parsed before the package check")
    return dict(onnx_path=onnx, engine_path=tmp_path / "model.engine", plugin_library=tmp_path / "libhivtp_plugin.so",
                max_batch=4, dtype="float16", image_shape=(3, 112, 112))


@pytest.fixture
def llava_dir(tmp_path: Path) -> Path:
    model = tmp_path / "llava"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llava"}))
    return model


@without_trt
def test_vision_build_without_tensorrt_is_one_line(vision_args) -> None:
    with pytest.raises(ValueError) as err:
        build_vision_engine(**vision_args)
    message = one_line(err)
    assert "TensorRT" in message and "10.14" in message and "not installed" in message
    assert not vision_args["engine_path"].exists()


@without_trt
def test_vision_load_without_tensorrt_is_one_line(vision_args) -> None:
    vision_args["engine_path"].write_bytes(b"plan")
    with pytest.raises(ValueError) as err:
        load_vision_engine(vision_args["engine_path"], vision_args["plugin_library"])
    assert "TensorRT 10.14" in one_line(err)


@pytest.mark.parametrize(
    "change, match",
    [({"max_batch": 0}, "max_batch must be"), ({"dtype": "float64"}, "dtype must be one of"),
     ({"image_shape": (3, 112)}, "image_shape must be"), ({"onnx_path": Path("/nonexistent.onnx")}, "ONNX file not found")],
)
def test_vision_build_checks_arguments_before_tensorrt(vision_args, change, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_vision_engine(**{**vision_args, **change})


@without_trtllm
def test_decoder_build_without_tensorrt_llm_is_one_line(llava_dir, tmp_path) -> None:
    with pytest.raises(ValueError) as err:
        build_decoder_engine(llava_dir, tmp_path / "decoder", "float16", 2, 1024, 1536, 128)
    message = one_line(err)
    assert "tensorrt_llm" in message and "TensorRT-LLM 1.2.1" in message
    assert not (tmp_path / "decoder").exists()


def test_decoder_build_refuses_a_non_llava_directory(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="HIVTP supports"):
        build_decoder_engine(tmp_path, tmp_path / "decoder", "float16", 2, 1024, 1536, 128)


@pytest.mark.parametrize(
    "limits, match",
    [(("float32", 1, 10, 20, 5), "dtype"), (("float16", 2, 100, 100, 300), "max_seq_len"),
     (("float16", 4, 100, 200, 3), "max_multimodal_len"), (("float16", 0, 100, 200, 3), "max_batch")],
)
def test_decoder_limits(limits, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_decoder_limits(*limits)


def test_trtllm_build_flags_follow_the_multimodal_readme(tmp_path) -> None:
    args = trtllm_build_args(tmp_path / "ckpt", tmp_path / "out", "bfloat16", 4, 2048, 2560, 4 * 600)
    assert args[0] == "trtllm-build" and "--use_fused_mlp=enable" in args
    rest = [a for a in args[1:] if a != "--use_fused_mlp=enable"]
    flags = dict(zip(rest[::2], rest[1::2]))
    assert flags["--gemm_plugin"] == flags["--gpt_attention_plugin"] == "bfloat16"
    assert flags["--max_multimodal_len"] == "2400" and flags["--max_batch_size"] == "4"
    assert flags["--max_input_len"] == "2048" and flags["--max_seq_len"] == "2560"
    assert int(flags["--max_num_tokens"]) >= int(flags["--max_input_len"])


@without_trtllm
def test_backend_without_tensorrt_llm_is_one_line(tmp_path) -> None:
    with pytest.raises(ValueError) as err:
        TRTLLMBackend(tmp_path)
    assert "TensorRT-LLM 1.2.1" in one_line(err)


@without_trtllm
def test_generate_from_engine_without_tensorrt_llm_is_one_line(tmp_path) -> None:
    with pytest.raises(ValueError) as err:
        generate_from_engine(tmp_path, sample_image_path(), "what color is the circle ?", 4)
    assert "TensorRT-LLM 1.2.1" in one_line(err)


def test_engine_files_reads_the_build_manifest(tiny_dirs, tmp_path, monkeypatch) -> None:
    from hivtp.build.manifest import write_manifest
    from hivtp.config import HIVTPConfig

    library = tmp_path / "libhivtp_plugin.so"
    library.write_bytes(b"\x7fELF stand-in: only its hash is read here")
    out = tmp_path / "engines"
    (out / "vision").mkdir(parents=True)
    build = {"model_type": "llava_next", "kmax": 32, "onnx_only": False, "vision_engine": "vision/model.engine",
             "decoder_engine": "decoder", "dtype": "fp16", "max_batch": 4}
    write_manifest(out, config=HIVTPConfig(budget=7), model_dir=tiny_dirs["llava_next"], build=build, plugin_library=library)
    monkeypatch.setenv(trtllm.PLUGIN_ENV, str(library))
    files = engine_files(out)
    assert files.config == HIVTPConfig(budget=7) and files.kmax == 32 and files.model_type == "llava_next"
    assert files.vision_engine == out / "vision" / "model.engine" and files.decoder_dir == out / "decoder"
    assert files.image_newline == out / "vision" / "image_newline.safetensors"
    assert files.source_dir == Path(tiny_dirs["llava_next"]).resolve()
    other = tmp_path / "other.so"
    other.write_bytes(b"another library")
    with pytest.raises(ValueError, match="not the one the engines were built with"):
        engine_files(out, other)
    write_manifest(out, config=HIVTPConfig(), model_dir=tiny_dirs["llava_next"], build={**build, "onnx_only": True},
                   plugin_library=library)
    with pytest.raises(ValueError, match="onnx-only"):
        engine_files(out, library)


def test_a_plugin_free_build_needs_no_plugin_library(tiny_dirs, tmp_path, monkeypatch) -> None:
    from hivtp.build.manifest import write_manifest
    from hivtp.config import HIVTPConfig

    out = tmp_path / "engines"
    (out / "vision").mkdir(parents=True)
    build = {"model_type": "llava", "kmax": 32, "onnx_only": False, "vision_engine": "vision/model.engine",
             "decoder_engine": "decoder", "select_impl": "onnx"}
    write_manifest(out, config=HIVTPConfig(), model_dir=tiny_dirs["llava"], build=build)
    monkeypatch.delenv(trtllm.PLUGIN_ENV, raising=False)
    assert engine_files(out).plugin_library is None
    write_manifest(out, config=HIVTPConfig(), model_dir=tiny_dirs["llava"], build={**build, "select_impl": "plugin"})
    with pytest.raises(ValueError, match=trtllm.PLUGIN_ENV):
        engine_files(out)


def test_plugin_library_is_required(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(trtllm.PLUGIN_ENV, raising=False)
    with pytest.raises(ValueError, match=trtllm.PLUGIN_ENV):
        trtllm.plugin_library_path(None)
    with pytest.raises(ValueError, match="not found"):
        trtllm.plugin_library_path(tmp_path / "missing.so")


def test_engine_tensor_names_match_the_exporter() -> None:
    export = pytest.importorskip("hivtp.build.export", reason="the ONNX exporter needs the onnx package")
    assert [trtllm.ENGINE_INPUT] == export.INPUT_NAMES and list(trtllm.ENGINE_OUTPUTS) == export.OUTPUT_NAMES


def test_new_tokens_cuts_input_and_padding() -> None:
    end = -1
    output_ids = torch.tensor([[[5, 6, 7, 40, 41, end]], [[8, 9, 42, end, end, end]]])  # [B=2, beams=1, S=6]
    lengths = torch.tensor([[5], [3]])
    assert new_tokens(output_ids, lengths, [3, 2]) == [[40, 41], [42]]


def executor_replies(token_lists: list[list[list[int]]], read: list[int]):
    """What ModelRunnerCpp's streaming generate yields: per reply, output_ids [B, 1, S] (input ids, then the tokens
    so far, then padding) and sequence_lengths [B, 1]; `read` counts the replies taken from the executor."""
    for step in token_lists:
        read.append(1)
        width = 1 + max(len(t) for t in step)
        ids = torch.tensor([[[7] + t + [-1] * (width - 1 - len(t))] for t in step])  # input: one id (7)
        yield {"output_ids": ids, "sequence_lengths": torch.tensor([[1 + len(t)] for t in step])}


STEPS = [[[1], []], [[1, 2], [3]], [[1, 2, 4], [3, 5]]]


def test_token_stream_pulls_until_every_request_has_enough() -> None:
    read: list[int] = []
    stream = TokenStream(executor_replies(STEPS, read), [1, 1])
    assert stream.until(1) == [[1, 2], [3]] and len(read) == 2  # the rest stays unread
    assert stream.until(2) == [[1, 2, 4], [3, 5]]
    assert stream.until(9) == [[1, 2, 4], [3, 5]]  # the executor finished: what there is


def test_a_consumer_that_breaks_out_leaves_no_reply_unread() -> None:
    """An abandoned stream must not leave replies for the executor's next await_responses() (the next request)."""
    read: list[int] = []
    stream = TokenStream(executor_replies(STEPS, read), [1, 1])
    for tokens in stream.steps():
        assert tokens == [[1], []]
        break
    assert len(read) == len(STEPS), "replies left in the executor would be read by the next generate()"


def test_a_consumer_that_raises_leaves_no_reply_unread() -> None:
    read: list[int] = []
    stream = TokenStream(executor_replies(STEPS, read), [1, 1])
    with pytest.raises(KeyError):
        for _ in stream.steps():
            raise KeyError("consumer failed")
    assert len(read) == len(STEPS)
    assert list(stream.steps()) == [] and len(read) == len(STEPS)  # closing twice reads nothing more


def test_backend_stream_drains_what_its_consumer_abandons() -> None:
    """TRTLLMBackend.stream delegates to TokenStream.steps, so breaking out of it drains the executor too."""
    import inspect

    source = inspect.getsource(TRTLLMBackend.stream)
    assert ".steps()" in source and "yield from" in source


def test_vision_engine_never_enqueues_on_the_current_stream() -> None:
    """TensorRT synchronises more on the legacy default stream; the engine gets its own (a GPU test runs it)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(trtllm.VisionEngine))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "execute_async_v3"]
    assert len(calls) == 1
    assert ast.unparse(calls[0].args[0]) == "self.stream.cuda_stream"
    created = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "torch.cuda.Stream"]
    assert created, "VisionEngine must create its own torch.cuda.Stream"


# ---- need the real packages, a GPU and build outputs --------------------------------------------


@pytest.mark.skipif(bool(NO_TRT_RUN), reason=NO_TRT_RUN)
def test_parse_errors_are_listed(vision_args) -> None:
    with pytest.raises(ValueError, match="cannot parse .*node"):
        build_vision_engine(**{**vision_args, "plugin_library": Path(PLUGIN)})


@pytest.mark.skipif(bool(NO_TRTLLM_RUN), reason=NO_TRTLLM_RUN)
def test_batch_rows_equal_requests_alone(two_images) -> None:
    backend = TRTLLMBackend(ENGINES, max_new_tokens=8)
    prompts = ["what color is the circle ?", "describe the picture"]
    both = backend.generate(two_images, prompts, 6)
    for b in range(2):
        alone = backend.generate(two_images[b : b + 1], prompts[b : b + 1], 6)
        assert alone.tokens[0] == both.tokens[b] and int(alone.kept_tokens[0]) == int(both.kept_tokens[b])


@pytest.mark.skipif(bool(NO_TRTLLM_RUN), reason=NO_TRTLLM_RUN)
def test_vision_engine_runs_on_its_own_stream(two_images) -> None:
    backend = TRTLLMBackend(ENGINES, max_new_tokens=2)
    own = backend.vision_engine.stream
    assert own.cuda_stream not in (0, torch.cuda.current_stream().cuda_stream, torch.cuda.default_stream().cuda_stream)
    vision = backend.vision(backend.prepare(two_images, ["describe the picture"] * 2))
    assert int(vision.kept_tokens.sum()) > 0
