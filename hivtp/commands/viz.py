"""`hivtp viz`: a PNG of the importance map and the tokens HIVTP keeps, by stage."""

from __future__ import annotations

import argparse
from typing import Any

from hivtp.args import add_config_arguments, config_from, path
from hivtp.outputs import check_not_an_input, output_file


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("viz", help="PNG of the importance map and the kept tokens by stage")
    parser.add_argument("--image", type=path, help="image file (default: the bundled sample image)")
    parser.add_argument("--model", type=path, help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory (default: the shipped tiny shapes model)")
    parser.add_argument("--out", type=path, help="PNG path (default: a new file in the per-user results folder, see README)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    config = config_from(args)
    stem = f"{args.image.stem if args.image else 'sample'}-{config.mode}{config.budget or ''}"
    out = output_file(args.out, "--out", ".png", "viz", stem)
    check_not_an_input(out, "--out", {args.image: "the input image", args.model: "the checkpoint"})
    from hivtp.demo import sample_image_path, shipped_model
    from hivtp.loading import load_image, load_llava
    from hivtp.viz import render

    image = load_image(args.image or sample_image_path())
    model_dir = args.model or shipped_model("llava")
    model, processor = load_llava(model_dir, device=args.device, hivtp_config=config)
    tokens = render(model, processor, image, config, out, model_dir.name)
    print(f"kept {len(tokens.kept)} / {tokens.grid[0] * tokens.grid[1]} patches; wrote {out}")
