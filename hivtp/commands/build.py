"""`hivtp build`: checkpoint -> vision ONNX -> TensorRT vision engine -> TensorRT-LLM decoder -> manifest."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hivtp.args import add_config_arguments, config_from, path, positive_int, refuse_unused
from hivtp.build.pipeline import DTYPES, NEW_TOKENS, PLUGIN_ENV, SELECT_IMPLS, TEXT_LEN  # light: stages import lazily

MAX_BATCH = 1024  # prompts per engine batch; TensorRT-LLM sizes its buffers by it


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("build", help="export the vision path and build the TensorRT / TensorRT-LLM engines")
    parser.add_argument("--model", required=True, type=path, help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory")
    parser.add_argument("--output", required=True, type=path, help="output directory (ONNX, engines, manifest.json)")
    parser.add_argument(
        "--max-batch", type=positive_int, default=4,
        help=f"prompts per batch, at most {MAX_BATCH}; the vision engine takes that many images (NeXT: times its most crops)",
    )
    parser.add_argument(
        "--max-text-len", type=positive_int,
        help=f"prompt tokens besides the visual ones (default {TEXT_LEN}, lowered to fit the model's max_position_embeddings)",
    )
    parser.add_argument(
        "--max-new-tokens", type=positive_int,
        help=f"generated tokens per prompt (default {NEW_TOKENS}, lowered to fit the model's max_position_embeddings)",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="engine precision (the ONNX is exported in it)")
    parser.add_argument(
        "--select-impl", choices=SELECT_IMPLS, default="plugin",
        help="scoring and selection in the vision graph: the hivtp TensorRT plugins, or standard ONNX ops (no plugin library)",
    )
    parser.add_argument("--tp-size", type=positive_int, default=1, help="tensor-parallel GPUs of the decoder engine (one engine per rank)")
    parser.add_argument("--onnx-only", action="store_true", help="write the vision ONNX and the manifest, no engines")
    parser.add_argument("--force", action="store_true", help="replace --output if it holds an earlier hivtp build (never anything else)")
    parser.add_argument("--plugin-lib", type=path, help=f"libhivtp_plugin.so for --select-impl plugin (default: ${PLUGIN_ENV})")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.onnx_only:
        refuse_unused(args, {"plugin_lib": "--plugin-lib"}, "with --onnx-only: no engine is built")
        if args.tp_size != 1:
            raise ValueError("--tp-size has no effect with --onnx-only: no decoder engine is built")
    if args.max_batch > MAX_BATCH:
        raise ValueError(f"--max-batch {args.max_batch}: at most {MAX_BATCH}")
    from hivtp.build.pipeline import BuildOptions, build

    options = BuildOptions(
        model_dir=args.model, output=args.output, config=config_from(args), max_batch=args.max_batch,
        max_text_len=args.max_text_len, max_new_tokens=args.max_new_tokens, dtype=args.dtype,
        onnx_only=args.onnx_only, force=args.force, plugin_library=args.plugin_lib, select_impl=args.select_impl,
        tp_size=args.tp_size,
    )
    output = build(options)
    print(f"built {output}" + (" (ONNX and manifest only)" if options.onnx_only else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone `hivtp build` (scripts/build_engine.py): the CLI's own subcommand, so same errors and exit codes."""
    from hivtp.cli import main as cli_main

    return cli_main(["build", *(sys.argv[1:] if argv is None else argv)])
