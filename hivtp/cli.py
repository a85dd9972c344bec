"""`hivtp` command line. main() parses, validates and dispatches; bad input: one line, exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from hivtp.config import HIVTPConfig

if TYPE_CHECKING:
    from hivtp.generate import Answer


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus a message; users get one clear line instead."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"hivtp: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The HIVTPConfig fields every subcommand shares."""
    parser.add_argument("--budget", type=positive_int, help="exact visual tokens per image (per crop for NeXT); default: paper mode")
    parser.add_argument("--score-layers", type=int_tuple, default=(6, 7, 8), help="0-based encoder layers that score tokens")
    parser.add_argument("--regions", type=int_tuple, default=(2, 2), help="region split rows,cols")
    parser.add_argument("--global-ratio", type=float, default=0.25, help="share of each region kept by the global stage")
    parser.add_argument("--window", type=positive_int, default=2, help="local-stage window side (paper mode)")


def config_from(args: argparse.Namespace) -> HIVTPConfig:
    return HIVTPConfig(
        score_layers=args.score_layers, regions=args.regions, global_ratio=args.global_ratio,
        window=args.window, budget=args.budget,
    )


def run_generate(args: argparse.Namespace) -> None:
    from hivtp.demo import sample_image_path, shipped_model
    from hivtp.generate import Answer, answer
    from hivtp.loading import load_image, load_llava

    image_path = args.image or sample_image_path()
    if args.engine:
        from hivtp.runtime.trtllm import generate_from_engine

        text, kept, full, ttft = generate_from_engine(args.engine, image_path, args.prompt, args.max_new_tokens, args.plugin_lib)
        report(Answer(text, kept, full, ttft, preprocess_s=0.0), mode="engine's")
        return
    config = config_from(args)
    image = load_image(image_path)
    dtype = args.dtype if args.dtype != "auto" or args.device != "cpu" else "float32"
    model, processor = load_llava(args.model or shipped_model("llava"), dtype=dtype, device=args.device)
    result = answer(model, processor, image, args.prompt, config, args.max_new_tokens)
    if args.model is None:
        print("demo: the shipped tiny LLaVA-1.5, trained on synthetic shapes only; pass --model DIR for a real checkpoint")
    report(result, mode=config.mode)


def report(result: Answer, mode: str) -> None:
    print(f"answer: {result.text}")
    print(f"visual tokens kept: {result.kept_tokens} / {result.full_tokens} ({mode} mode)")
    print(f"TTFT: {result.ttft_s * 1e3:.1f} ms (preprocessing {result.preprocess_s * 1e3:.1f} ms, not included)")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="hivtp", description="HIVTP visual-token pruning for LLaVA")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    gen = commands.add_parser("generate", help="answer a prompt about an image with pruned visual tokens")
    source = gen.add_mutually_exclusive_group()
    source.add_argument("--model", help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory (default: the shipped tiny shapes model)")
    source.add_argument("--engine", help="engine directory from `hivtp build` (TensorRT-LLM 1.2.1 backend)")
    gen.add_argument("--plugin-lib", help="libhivtp_plugin.so for --engine (default: $HIVTP_PLUGIN_LIB)")
    gen.add_argument("--image", help="image file (default: the bundled sample image)")
    gen.add_argument("--prompt", default="what color is the circle ?", help="question about the image")
    gen.add_argument("--max-new-tokens", type=positive_int, default=16)
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    gen.add_argument(
        "--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
        help="weights dtype (auto: the checkpoint's on GPUs, float32 on the CPU)",
    )
    add_config_arguments(gen)
    gen.set_defaults(run=run_generate)
    from hivtp import bench, fidelity, viz
    from hivtp.build import pipeline

    for module in (pipeline, bench, viz, fidelity):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the CLI prints its own results; library chatter hides them
    hf_logging.disable_progress_bar()
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
    except ValueError as err:
        print(f"hivtp: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
