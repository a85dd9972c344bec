"""A real TensorRT builder on a CPU-only machine: TensorRT-RTX parses and builds the plugin-free vision graph.

TensorRT-RTX (`tensorrt-rtx-cu13-libs` + `-bindings` on PyPI) has TensorRT's Python API, ONNX parser,
optimisation profiles and builder, and serializes engines without a GPU. It cannot load the hivtp
IPluginV3 plugin, so it builds the `--select-impl onnx` graph, through the same
`tensorrt_engine.build_vision_engine` that `hivtp build` runs, with the TensorRT module swapped.
What this proves: every op of the graph is parsed and built by a TensorRT builder, with a dynamic
batch profile. What it does not: TensorRT 10.14 itself, GPU execution, or the engines' outputs.

    python -m hivtp.build.rtx_check                       # shipped LLaVA-1.5 + NeXT, paper + budget
    python -m hivtp.build.rtx_check --models clip-l       # a CLIP-L/14-336 tower (random weights)

Prints one row per engine (export and build seconds, ONNX and engine MB) and writes the same rows
as JSON (device, date, commit, versions) to --json, else a new file in the per-user results folder.
"""

from __future__ import annotations

import importlib
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from hivtp.build.export import export_vision
from hivtp.build.tensorrt_engine import build_vision_engine
from hivtp.config import HIVTPConfig
from hivtp.timing import git_commit, write_json

MODELS = ("llava", "llava_next", "clip-l")
MODES = {"paper": HIVTPConfig(), "budget": HIVTPConfig(budget=16)}
CLIP_L_BUDGET = HIVTPConfig(budget=192)  # the README's LLaVA-1.5 budget row
TEXT_HIDDEN = 4096  # Vicuna-7B's width: the projector is full size, the language model (not exported) is one layer


@dataclass(frozen=True)
class BuiltEngine:
    model: str
    mode: str
    dtype: str
    max_batch: int
    kmax: int
    export_s: float
    build_s: float
    onnx_mb: float
    engine_mb: float


def tensorrt_rtx() -> ModuleType:
    """TensorRT-RTX's Python module (`tensorrt_rtx`, or the standalone bindings wheel's name); ValueError if absent."""
    for name in ("tensorrt_rtx", "tensorrt_rtx_bindings"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "Builder"):
            return module
    raise ValueError("TensorRT-RTX is not installed: pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings")


def clip_l_llava() -> Any:
    """LLaVA-1.5's vision path at full size (CLIP ViT-L/14-336 + projector), random weights, a 1-layer LLM."""
    from hivtp.bench import preset_config
    from hivtp.loading import MODEL_CLASSES

    config = preset_config("llava-1.5-7b", vocab_size=64, image_token_id=63)
    config.text_config.update({"num_hidden_layers": 1, "intermediate_size": 256, "hidden_size": TEXT_HIDDEN})
    torch.manual_seed(0)
    return MODEL_CLASSES["llava"](config).eval()


def load_model(name: str) -> Any:
    if name == "clip-l":
        return clip_l_llava()
    from hivtp.demo import shipped_model
    from hivtp.loading import load_llava

    return load_llava(shipped_model(name), dtype=torch.float32)[0]


def build_one(
    rtx: ModuleType, model: Any, name: str, mode: str, config: HIVTPConfig, dtype: torch.dtype, max_batch: int,
    directory: Path,
) -> BuiltEngine:
    """Export the plugin-free graph of `model` and build it with TensorRT-RTX: one `BuiltEngine` row."""
    start = time.perf_counter()
    exported = export_vision(model, config, directory / f"{name}-{mode}.onnx", max_batch, dtype=dtype, select_impl="onnx")
    exported_at = time.perf_counter()
    engine = directory / f"{name}-{mode}.engine"
    side = exported.image_size
    size = build_vision_engine(exported.path, engine, None, max_batch, str(dtype).removeprefix("torch."), (3, side, side),
                               tensorrt_module=rtx)
    built_at = time.perf_counter()
    onnx_bytes = sum(p.stat().st_size for p in directory.glob(f"{name}-{mode}.onnx*"))
    return BuiltEngine(name, mode, str(dtype).removeprefix("torch."), max_batch, exported.kmax, round(exported_at - start, 2),
                       round(built_at - exported_at, 2), round(onnx_bytes / 1e6, 2), round(size / 1e6, 2))


def build_all(rtx: ModuleType, models: Sequence[str], dtype: torch.dtype, max_batch: int, directory: Path) -> list[BuiltEngine]:
    rows = []
    for name in models:
        model = load_model(name)
        modes = {"budget": CLIP_L_BUDGET} if name == "clip-l" else MODES
        for mode, config in modes.items():
            rows.append(build_one(rtx, model, name, mode, config, dtype, max_batch, directory))
            print(_row(rows[-1]), flush=True)
        del model
    return rows


def _row(r: BuiltEngine) -> str:
    return (f"{r.model:<11} {r.mode:<7} {r.dtype:<8} {r.max_batch:>5} {r.kmax:>5} {r.export_s:>9.2f} {r.build_s:>8.2f} "
            f"{r.onnx_mb:>8.1f} {r.engine_mb:>9.1f}")


def provenance(rtx: ModuleType) -> dict[str, Any]:
    return {
        "device": f"CPU only ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)",
        "date": datetime.now(timezone.utc).date().isoformat(),
        "commit": git_commit(),
        "tensorrt_rtx": rtx.__version__,
        "torch": torch.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from hivtp.args import OneLineParser, path, positive_int
    from hivtp.outputs import output_file

    parser = OneLineParser(prog="python -m hivtp.build.rtx_check", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llava,llava_next", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16", help="engine precision (strongly typed)")
    parser.add_argument("--max-batch", type=positive_int, default=8, help="the profile's max batch (min 1, opt max_batch // 2)")
    parser.add_argument("--json", type=path,
                        help="output JSON path (default: a new file in the per-user results folder; the committed one: results/build/)")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}")
    out = output_file(args.json, "--json", ".json", "build", "tensorrt-rtx")
    rtx = tensorrt_rtx()
    print(f"{'model':<11} {'mode':<7} {'dtype':<8} {'batch':>5} {'kmax':>5} {'export s':>9} {'build s':>8} "
          f"{'onnx MB':>8} {'engine MB':>9}")
    with tempfile.TemporaryDirectory(prefix="hivtp-rtx-") as scratch:
        rows = build_all(rtx, models, getattr(torch, args.dtype), args.max_batch, Path(scratch))
    print(f"wrote {write_json(out, {**provenance(rtx), 'engines': [asdict(r) for r in rows]})}")
    return 0


if __name__ == "__main__":
    from hivtp.cli import one_line_errors

    sys.exit(one_line_errors(main))
