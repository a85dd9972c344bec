"""`hivtp generate`: one pruned answer about one image (torch, or a `hivtp build` output)."""

from __future__ import annotations

import argparse
from typing import Any

from hivtp.args import CONFIG_OPTIONS, add_config_arguments, config_from, int_at_least, path, positive_int, prompt, refuse_unused

DEFAULT_PROMPT = "what color is the circle ?"  # the bundled sample image's question
MAX_TTFT_REPEATS = 1000  # each one a full prefill: more is a typo, not a plan


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("generate", help="answer a prompt about an image with pruned visual tokens")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=path, help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory (default: the shipped tiny shapes model)")
    source.add_argument("--engine", type=path, help="engine directory from `hivtp build` (TensorRT-LLM 1.2.1 backend)")
    parser.add_argument("--plugin-lib", type=path, help="libhivtp_plugin.so for --engine (default: $HIVTP_PLUGIN_LIB)")
    parser.add_argument("--image", type=path, help="image file (default: the bundled sample image)")
    parser.add_argument("--prompt", type=prompt, default=DEFAULT_PROMPT, help="question about the image")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16, help="most tokens to generate")
    parser.add_argument("--ttft-repeats", type=int_at_least(0, f"an integer >= 0, at most {MAX_TTFT_REPEATS}", MAX_TTFT_REPEATS), default=3,
                        help="TTFT = median of this many first-token runs after one warm-up (0: not timed)")
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument(
        "--dtype", choices=["auto", "float16", "bfloat16", "float32"],
        help="weights dtype (default auto: the checkpoint's on GPUs, float32 on the CPU)",
    )
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.engine:
        refuse_unused(args, {"device": "--device", "dtype": "--dtype", **CONFIG_OPTIONS},
                      "with --engine: the engine's precision and HIVTP settings were fixed by `hivtp build`")
        run_engine(args)
        return
    refuse_unused(args, {"plugin_lib": "--plugin-lib"}, "without --engine")
    from hivtp.demo import sample_image_path, shipped_model
    from hivtp.generate import answer, report
    from hivtp.loading import check_device, load_image, load_llava

    config = config_from(args)
    device = str(check_device("cpu" if args.device is None else args.device))
    image = load_image(args.image or sample_image_path())
    dtype = args.dtype or "auto"
    dtype = "float32" if dtype == "auto" and device == "cpu" else dtype
    model, processor = load_llava(args.model or shipped_model("llava"), dtype=dtype, device=device, hivtp_config=config)
    result = answer(model, processor, image, args.prompt, config, args.max_new_tokens, args.ttft_repeats)
    if args.model is None:
        print("demo: the shipped tiny LLaVA-1.5, trained on synthetic shapes only; pass --model DIR for a real checkpoint")
    report(result, mode=config.mode)


def run_engine(args: argparse.Namespace) -> None:
    from hivtp.demo import sample_image_path
    from hivtp.generate import Answer, report
    from hivtp.runtime.trtllm import generate_from_engine

    image_path = args.image or sample_image_path()
    text, kept, full, ttft = generate_from_engine(args.engine, image_path, args.prompt, args.max_new_tokens, args.plugin_lib)
    report(Answer(text, kept, full, ttft, preprocess_s=0.0), mode="engine's")
