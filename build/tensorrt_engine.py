"""The HIVTP vision engine: ONNX (CLIP tower + scoring + selection + projector) -> TensorRT 10.14 plan.

Thin on purpose: every TensorRT call below is the documented Python binding, cited next to the call
from NVIDIA/TensorRT tag v10.14 (commit 3b4ddc1d45f11167f2ea53dc6046bba8df800e2d). It differs from
TensorRT-LLM 1.2.1's `tensorrt_llm/tools/multimodal_builder.py::build_trt_engine` on purpose: the
hivtp plugin library (when the graph has plugin nodes) is loaded into the registry *before* the ONNX
parse (the parser looks plugins up by op type, so they must be registered by then), a failed parse
raises with every parser error (the 1.2.1 builder only logs them and builds anyway), and the network
is strongly typed: the precision is the exported graph's own dtype (`BuilderFlag.FP16` / `BF16` are
deprecated since TensorRT 10.12, and TensorRT-RTX has no such flags at all).

`tensorrt` is imported inside the functions: without it (or with only `tensorrt-stubs`, whose
`tensorrt/__init__.pyi` makes `import tensorrt` succeed as an empty namespace package) building or
loading raises ValueError with one line. `build_vision_engine(..., tensorrt_module=...)` takes another
module with the same Python API (TensorRT-RTX's `tensorrt_rtx`): CI builds real engines with it on a
CPU-only machine, through this very function. The module imports nothing from hivtp so that mypy
checks it alone against tensorrt-stubs (tests/test_trt_typecheck.py).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    import tensorrt

SUPPORTED_TENSORRT = "10.14"
DTYPES = ("float16", "bfloat16", "float32")  # engine precisions


_loaded_libraries: dict[str, object] = {}  # resolved path -> handle: one registration per process


def release_matches(found: str, wanted: str) -> bool:
    """True when version `found` is a final release whose leading numbers are `wanted`'s.

    "10.14" accepts 10.14.1.48; "1.2.1" accepts 1.2.1, 1.2.1.post1 and 1.2.1+cu130, and refuses 1.2.10,
    1.2.1rc1 and 1.2 (a string prefix test would let 1.2.10 pass as 1.2.1).
    """
    try:
        version = Version(found)
    except InvalidVersion:
        return False
    release = tuple(int(part) for part in wanted.split("."))
    return not (version.is_prerelease or version.is_devrelease) and version.release[: len(release)] == release


def require_tensorrt() -> str:
    """The installed TensorRT version; ValueError (one line) when it is missing or not a 10.14 release."""
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
    if not release_matches(version, SUPPORTED_TENSORRT):
        raise ValueError(
            f"TensorRT {version} is installed; hivtp engines need a TensorRT {SUPPORTED_TENSORRT}.x release "
            "(tensorrt.__version__ is checked)"
        )
    return version


def load_plugin_library(plugin_library: Path, tensorrt_module: ModuleType | None = None) -> None:
    """Register libhivtp_plugin.so's creators (Score, Select) once per process, in `tensorrt_module`'s registry."""
    if TYPE_CHECKING:
        import tensorrt as trt
    elif tensorrt_module is None:
        import tensorrt as trt
    else:
        trt = tensorrt_module

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
    # python/src/parsers/pyOnnx.cpp:204-205, 249-255 @v10.14
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        desc = " ".join(error.desc().split())  # descriptions can span lines; the error stays one line
        errors.append(f"node {error.node()} ({error.node_name() or '?'}, {error.node_operator() or '?'}): {desc}")
    return "; ".join(errors) or "no parser error recorded"


def build_vision_engine(
    onnx_path: Path,
    engine_path: Path,
    plugin_library: Path | None,
    max_batch: int,
    dtype: str,
    image_shape: tuple[int, int, int],
    tensorrt_module: ModuleType | None = None,
) -> int:
    """Parse the vision ONNX and serialize a strongly typed TensorRT plan to engine_path; returns its size in bytes.

    plugin_library: libhivtp_plugin.so for a graph with hivtp plugin nodes, registered before the parse;
    None for the plugin-free graph (`--select-impl onnx`). dtype: the engine's precision, which is the
    graph's own: a strongly typed network from a graph exported in that dtype (checked: a graph of
    another dtype is refused, not silently built in it). Input 0 gets one optimisation profile over the
    batch: min 1, opt max(1, max_batch // 2), max max_batch, each image `image_shape` = (channels,
    height, width). tensorrt_module: None = TensorRT 10.14 (`import tensorrt`, version checked); or a
    module with the same Python API (TensorRT-RTX). The caller places the file atomically.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if len(image_shape) != 3 or not all(isinstance(x, int) and x > 0 for x in image_shape):
        raise ValueError(f"image_shape must be (channels, height, width) positive ints, got {image_shape!r}")
    if not Path(onnx_path).is_file():
        raise ValueError(f"ONNX file not found: {onnx_path}")
    if TYPE_CHECKING:
        import tensorrt as trt  # the checked API: tensorrt-stubs (tests/test_trt_typecheck.py)
    elif tensorrt_module is None:
        require_tensorrt()
        import tensorrt as trt
    else:
        trt = tensorrt_module

    if plugin_library is not None:
        load_plugin_library(plugin_library, trt)  # before the parse: the parser resolves plugin ops by op type
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)  # python/src/infer/pyCore.cpp:1896
    # NetworkDefinitionCreationFlag.STRONGLY_TYPED (pyCore.cpp:1887; NvInfer.h kSTRONGLY_TYPED): every tensor keeps
    # the type the ONNX gives it, so the exported graph decides the precision (BuilderFlag kFP16 / kBF16: "Deprecated
    # in TensorRT 10.12. Superseded by strong typing.", NvInfer.h enum BuilderFlag @v10.14)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))  # pyCore.cpp:1901
    parser = trt.OnnxParser(network, logger)  # python/src/parsers/pyOnnx.cpp:188
    # parse_from_file (pyOnnx.cpp:195) also finds external weights stored next to the .onnx file
    if not parser.parse_from_file(str(onnx_path)) or parser.num_errors:
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {_parser_errors(parser)}")

    image = network.get_input(0)
    dims = [image.shape[i] for i in range(len(image.shape))]  # -1 = dynamic
    if len(dims) != 4 or any(d > 0 and d != want for d, want in zip(dims[1:], image_shape)):
        raise ValueError(f"the ONNX input {image.name!r} has shape {dims}, expected [batch, *{list(image_shape)}]")
    graph_dtype = {"float16": trt.DataType.HALF, "bfloat16": trt.DataType.BF16, "float32": trt.DataType.FLOAT}[dtype]
    if image.dtype != graph_dtype:  # ITensor.dtype: python/src/infer/pyGraph.cpp:359
        raise ValueError(
            f"{onnx_path} was exported in {image.dtype}, but a {dtype} engine is built from a {graph_dtype} graph "
            "(strongly typed: the graph's own dtype is the engine's precision)"
        )
    config = builder.create_builder_config()  # pyCore.cpp:1913
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
    return int(plan.nbytes)


def load_vision_engine(engine_path: Path, plugin_library: Path | None) -> "tensorrt.ICudaEngine":
    """Deserialize a vision plan; a plugin graph's library is registered first (the plan holds plugin instances).

    plugin_library None: a plan of the plugin-free graph (`--select-impl onnx`).
    """
    if not Path(engine_path).is_file():
        raise ValueError(f"vision engine not found: {engine_path}")
    require_tensorrt()
    import tensorrt as trt

    if plugin_library is not None:
        load_plugin_library(plugin_library)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # pyCore.cpp:1950-1953
    # Runtime.deserialize_cuda_engine(bytes): pyCore.cpp:1955, keep_alive<0, 1>: the engine keeps the runtime
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise ValueError(
            f"TensorRT could not deserialize {engine_path} (its reason is in the TensorRT log above; a plan only "
            "loads under the TensorRT version and on the GPU kind it was built for)"
        )
    return engine
