"""`hivtp generate`: one pruned answer about one image (torch, or a `hivtp build` output)."""

from __future__ import annotations

import argparse
from typing import Any

from hivtp.args import add_config_arguments, config_from, path, positive_int


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("generate", help="answer a prompt about an image with pruned visual tokens")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=path, help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory (default: the shipped tiny shapes model)")
    source.add_argument("--engine", type=path, help="engine directory from `hivtp build` (TensorRT-LLM 1.2.1 backend)")
    parser.add_argument("--plugin-lib", type=path, help="libhivtp_plugin.so for --engine (default: $HIVTP_PLUGIN_LIB)")
    parser.add_argument("--image", type=path, help="image file (default: the bundled sample image)")
    parser.add_argument("--prompt", default="what color is the circle ?", help="question about the image")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16, help="most tokens to generate")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
        help="weights dtype (auto: the checkpoint's on GPUs, float32 on the CPU)",
    )
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from hivtp.demo import sample_image_path, shipped_model
    from hivtp.generate import Answer, answer, report
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
