"""`hivtp bench`: e2e (TTFT, vision, prefill, decode), vision (HIVTP's own cost), select and score timings."""

from __future__ import annotations

import argparse
from typing import Any

from hivtp.args import add_config_arguments, comma_ints, path, positive_int, non_negative_int

PRESETS = ("tiny", "llava-1.5-7b", "llava-next-7b")  # hivtp/data/configs (tiny = the demo's config)
DTYPES = ("float16", "bfloat16", "float32")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("bench", help="time vision, TTFT, decode and the select/score kernels")
    parser.add_argument(
        "--stage", choices=("e2e", "vision", "select", "score"), default="e2e",
        help="what to time: e2e (TTFT, decode), vision (stock vs floor vs hivtp vision path), select or score (the ops)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=path, help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory")
    source.add_argument("--random-init", choices=PRESETS, help="real architecture, random weights (no download)")
    parser.add_argument("--backend", choices=("torch", "trtllm"), default="torch", help="what runs the model")
    parser.add_argument("--engine", type=path, help="TensorRT-LLM engine directory (--backend trtllm)")
    parser.add_argument(
        "--ops", choices=("auto", "reference", "triton"), default="auto",
        help="torch backend's scoring/selection: auto = Triton kernels on CUDA, the torch reference elsewhere",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="auto: float16 on CUDA, float32 on CPU")
    parser.add_argument("--batch", type=comma_ints, help="batch sizes, e.g. 1,8 (default: 1 for e2e, 1,8 for vision, 1,8,32 for select/score)")
    parser.add_argument("--budgets", type=comma_ints, help="budgets per image (per crop for NeXT); default per model")
    parser.add_argument("--new-tokens", type=positive_int, default=16, help="fixed output length for e2e latency")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs before the timed ones")
    parser.add_argument(
        "--repeats", type=positive_int,
        help="timed runs per row (default: 20 for e2e, where TTFT / bound is judged; 5 otherwise; vision: interleaved rounds)",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="e2e, torch backend: prefill and decode under torch.compile on a static KV cache (CUDA graphs on CUDA) "
        "and the vision step replayed as a CUDA graph (CUDA); the first calls compile (minutes on a CPU)",
    )
    parser.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--image", type=path, help="image file (default: the bundled sample image)")
    parser.add_argument("--prompt", default="describe the picture .", help="prompt of every request")
    parser.add_argument("--out-dir", type=path, default="results/bench", help="folder for the JSON and PNG")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.backend == "torch" and not (args.model or args.random_init):
        raise ValueError("pass --model DIR (a checkpoint) or --random-init tiny|llava-1.5-7b|llava-next-7b")
    if args.backend == "trtllm" and args.stage != "e2e":
        raise ValueError("--backend trtllm times the e2e stage only; vision/select/score time the torch and Triton paths")
    if args.backend == "trtllm" and not args.engine:
        raise ValueError("--backend trtllm needs --engine DIR (a TensorRT-LLM engine folder)")
    if args.compile and (args.backend != "torch" or args.stage != "e2e"):
        raise ValueError("--compile applies to the torch backend's e2e stage (an engine is compiled by hivtp build)")
    if args.repeats is None:
        args.repeats = 20 if args.stage == "e2e" else 5
    import torch

    from hivtp.bench_e2e import run_e2e
    from hivtp.bench_kernels import run_kernels
    from hivtp.bench_vision import run_vision

    if args.threads:
        torch.set_num_threads(args.threads)
    {"e2e": run_e2e, "vision": run_vision}.get(args.stage, run_kernels)(args)
