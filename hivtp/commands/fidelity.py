"""`hivtp fidelity`: accuracy (shapes task) or agreement (any images) kept by HIVTP and baselines."""

from __future__ import annotations

import argparse
from typing import Any

from hivtp.args import add_config_arguments, comma_ints, config_from, path, positive_int


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("fidelity", help="accuracy kept by HIVTP and baselines at equal token counts")
    parser.add_argument("--model", type=path, help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint (default: the shipped shapes models)")
    parser.add_argument("--questions", type=positive_int, default=500, help="held-out shapes questions (shapes mode)")
    parser.add_argument("--images", type=path, help="folder of images (.png/.jpg/...): agreement with the full model instead of accuracy")
    parser.add_argument("--prompt", default="what is in the picture ?", help="the question asked about every image (--images)")
    parser.add_argument("--budgets", type=comma_ints, help="tokens per image (per crop for NeXT); default: 32,16,8,4 for shapes")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16, help="answer length (--images)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline and the oracle's random fill")
    parser.add_argument("--positions", choices=("both", "renumbered"), default="both",
                        help="shapes mode: also run every pruned row with kept tokens at their original position ids "
                             "(an ablation; the deployed layout renumbers them), or the deployed layout only")
    parser.add_argument("--selection-only", action="store_true",
                        help="shapes mode: what each method keeps of the question's subjects, from the vision tower alone "
                             "(no decoder: seconds)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--out", type=path, help="JSON path (default: results/fidelity/shapes-<date>-<commit>.json, with --images <model>-<date>.json; the PNG beside it)")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    base = config_from(args)
    if args.images:
        if args.selection_only or args.positions != "both":
            raise ValueError("--selection-only and --positions apply to shapes mode, not to --images")
        from hivtp.fidelity import run_agreement

        run_agreement(args, base)
    else:
        from hivtp.fidelity_shapes import run_shapes

        run_shapes(args, base)
