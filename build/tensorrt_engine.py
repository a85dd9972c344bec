"""The HIVTP vision engine: ONNX (CLIP tower + hivtp Score/Select plugins + projector) -> TensorRT 10.14 plan.

Thin on purpose: every TensorRT call below is the documented Python binding, cited next to the call
from NVIDIA/TensorRT tag v10.14 (commit 3b4ddc1d45f11167f2ea53dc6046bba8df800e2d). It differs from
TensorRT-LLM 1.2.1's `tensorrt_llm/tools/multimodal_builder.py::build_trt_engine` in two ways on
purpose: the hivtp plugin library is loaded into the registry *before* the ONNX parse (the parser
looks plugins up by op type, so they must be registered by then), and a failed parse raises with
every parser error (the 1.2.1 builder only logs them and builds anyway).

`tensorrt` is imported inside the functions: without it (or with only `tensorrt-stubs`, whose
`tensorrt/__init__.pyi` makes `import tensorrt` succeed as an empty namespace package) building or
loading raises ValueError with one line. The module imports nothing from hivtp so that mypy checks
it alone against tensorrt-stubs (tests/test_trt_typecheck.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorrt

SUPPORTED_TENSORRT = "10.14"
DTYPES = ("float16", "bfloat16")

_loaded_libraries: dict[str, object] = {}  # resolved path -> handle: one registration per process


def require_tensorrt() -> str:
    """The installed TensorRT version; ValueError (one line) when it is missing or not 10.14."""
    try:
        import tensorrt as trt
    except ImportError:
        trt = None  # type: ignore[assignment]
    if trt is None or not hasattr(trt, "Builder"):  # stubs only: a namespace package without the bindings
        raise ValueError(
            f"the TensorRT Python package is not installed: hivtp engines need TensorRT {SUPPORTED_TENSORRT} "
            "(the version TensorRT-LLM 1.2.1 pins)"
        )
    version: str = trt.__version__
    if not version.startswith(SUPPORTED_TENSORRT + "."):
        raise ValueError(f"TensorRT {version} is installed; hivtp supports TensorRT {SUPPORTED_TENSORRT} (TensorRT-LLM 1.2.1)")
    return version


def load_plugin_library(plugin_library: Path) -> None:
    """Register libhivtp_plugin.so's creators (Score, Select) once per process."""
    import tensorrt as trt

    path = Path(plugin_library).resolve()
    if str(path) in _loaded_libraries:
        return
    if not path.is_file():
        raise ValueError(f"plugin library not found: {plugin_library}")
    # trt.get_plugin_registry(): python/src/infer/pyPlugin.cpp:3872 @v10.14
    # IPluginRegistry.load_library(plugin_path): pyPlugin.cpp:3848 -> IPluginRegistry::loadLibrary,
    # include/NvInferRuntimeCommon.h:208: returns nullptr (None) if a plugin of it is already registered
    handle = trt.get_plugin_registry().load_library(str(path))
    if handle is None:
        raise ValueError(
            f"TensorRT could not load the plugin library {path} (not a TensorRT plugin library, or its "
            "plugins are already registered by another library)"
        )
    _loaded_libraries[str(path)] = handle


def _parser_errors(parser: "tensorrt.OnnxParser") -> str:
    # OnnxParser.num_errors / get_error(i) -> ParserError.desc(), node(), node_name():
    # python/src/parsers/pyOnnx.cpp:204-205, 249-254 @v10.14
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        errors.append(f"node {error.node()} ({error.node_name() or '?'}): {error.desc()}")
    return "; ".join(errors) or "no parser error recorded"


def build_vision_engine(
    onnx_path: Path,
    engine_path: Path,
    plugin_library: Path,
    max_batch: int,
    dtype: str,
    image_shape: tuple[int, int, int],
) -> None:
    """Parse the vision ONNX with the hivtp plugins registered and serialize a TensorRT plan to engine_path.

    Input 0 gets one optimisation profile over the batch: min 1, opt max(1, max_batch // 2), max max_batch,
    each image `image_shape` = (channels, height, width). The caller places the file atomically.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if len(image_shape) != 3 or not all(isinstance(x, int) and x > 0 for x in image_shape):
        raise ValueError(f"image_shape must be (channels, height, width) positive ints, got {image_shape!r}")
    if not Path(onnx_path).is_file():
        raise ValueError(f"ONNX file not found: {onnx_path}")
    require_tensorrt()
    import tensorrt as trt

    load_plugin_library(plugin_library)  # before the parse: the parser resolves plugin ops by op type
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)  # python/src/infer/pyCore.cpp:1896
    network = builder.create_network(0)  # pyCore.cpp:1901; TensorRT 10 networks are always explicit batch
    parser = trt.OnnxParser(network, logger)  # python/src/parsers/pyOnnx.cpp:188
    # parse_from_file (pyOnnx.cpp:195) also finds external weights stored next to the .onnx file
    if not parser.parse_from_file(str(onnx_path)) or parser.num_errors:
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {_parser_errors(parser)}")

    config = builder.create_builder_config()  # pyCore.cpp:1913
    config.set_flag(trt.BuilderFlag.FP16 if dtype == "float16" else trt.BuilderFlag.BF16)  # pyCore.cpp:1806
    image = network.get_input(0)
    dims = [image.shape[i] for i in range(len(image.shape))]  # -1 = dynamic
    if len(dims) != 4 or any(d > 0 and d != want for d, want in zip(dims[1:], image_shape)):
        raise ValueError(f"the ONNX input {image.name!r} has shape {dims}, expected [batch, *{list(image_shape)}]")
    profile = builder.create_optimization_profile()  # pyCore.cpp:1909
    # IOptimizationProfile.set_shape(input, min, opt, max): pyCore.cpp:1084
    profile.set_shape(
        image.name,
        trt.Dims([1, *image_shape]),
        trt.Dims([max(1, max_batch // 2), *image_shape]),
        trt.Dims([max_batch, *image_shape]),
    )
    config.add_optimization_profile(profile)  # pyCore.cpp:1810
    plan = builder.build_serialized_network(network, config)  # pyCore.cpp:1915
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build the vision engine from {onnx_path} (see the TensorRT log above)")
    with open(engine_path, "wb") as f:
        f.write(memoryview(plan))


def load_vision_engine(engine_path: Path, plugin_library: Path) -> "tensorrt.ICudaEngine":
    """Deserialize a vision plan; the plugin library is registered first (the plan holds plugin instances)."""
    if not Path(engine_path).is_file():
        raise ValueError(f"vision engine not found: {engine_path}")
    require_tensorrt()
    import tensorrt as trt

    load_plugin_library(plugin_library)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # pyCore.cpp:1950-1953
    # Runtime.deserialize_cuda_engine(bytes): pyCore.cpp:1955, keep_alive<0, 1>: the engine keeps the runtime
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise ValueError(
            f"TensorRT cannot deserialize {engine_path}: built by another TensorRT version or for another GPU"
        )
    return engine
