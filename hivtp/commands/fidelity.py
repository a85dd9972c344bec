"""`hivtp fidelity`: accuracy (shapes task) or agreement (any images) kept by HIVTP and baselines."""

from __future__ import annotations

import argparse
from typing import Any

from hivtp.args import add_config_arguments, comma_ints, config_from, path, positive_int, prompt, refuse_unused, seed
from hivtp.outputs import check_not_an_input, output_file

MAX_QUESTIONS = 100_000  # ~ an hour per model on a CPU; beyond that a typo, not a plan
DEFAULT_PROMPT = "what is in the picture ?"
DEFAULT_MAX_NEW_TOKENS = 16
DEFAULT_QUESTIONS = 500


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("fidelity", help="accuracy kept by HIVTP and baselines at equal token counts")
    parser.add_argument("--model", type=path, help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint (default: the shipped shapes models)")
    parser.add_argument("--questions", type=positive_int, help=f"held-out shapes questions, shapes mode (default: {DEFAULT_QUESTIONS}, at most {MAX_QUESTIONS})")
    parser.add_argument("--images", type=path, help="folder of images (.png/.jpg/...): agreement with the full model instead of accuracy")
    parser.add_argument("--prompt", type=prompt, help=f"the question asked about every image, with --images (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--budgets", type=comma_ints,
                        help="tokens per image (per crop for NeXT) (default: 32,16,8,4 for shapes; per model type for --images)")
    parser.add_argument("--max-new-tokens", type=positive_int, help=f"answer length, with --images (default: {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the random baseline and the oracle's random fill")
    parser.add_argument("--positions", choices=("both", "renumbered"),
                        help="shapes mode: also run every pruned row with kept tokens at their original position ids "
                             "(an ablation; the deployed layout renumbers them), or the deployed layout only (default: both)")
    parser.add_argument("--selection-only", action="store_true",
                        help="shapes mode: what each method keeps of the question's subjects, from the vision tower alone "
                             "(no decoder: seconds)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--out", type=path, help="JSON path, the PNG beside it (default: a new file in the per-user results folder)")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.budget is not None and args.budgets is not None:
        raise ValueError("pass --budgets K1,K2,... or --budget K, not both")
    if args.budget is not None:
        args.budgets = (args.budget,)  # one budget: the same table, one column of methods
    if args.images:
        refuse_unused(args, {"questions": "--questions", "positions": "--positions", "selection_only": "--selection-only"},
                      "with --images: agreement mode asks --prompt about every image")
    else:
        refuse_unused(args, {"prompt": "--prompt", "max_new_tokens": "--max-new-tokens"},
                      "in shapes mode: --prompt and --max-new-tokens are for --images")
    if (args.questions or 0) > MAX_QUESTIONS:
        raise ValueError(f"--questions {args.questions}: at most {MAX_QUESTIONS}")
    base = config_from(args)
    stem = args.model.name if args.model and args.images else ("agreement" if args.images else "shapes")
    args.out = output_file(args.out, "--out", ".json", "fidelity", stem, beside=(".png",))  # the figure
    check_not_an_input(args.out, "--out", {args.images: "the --images folder", args.model: "the checkpoint"})  # not read back as input
    from hivtp.loading import check_device

    check_device(args.device)
    if args.images:
        from hivtp.fidelity import run_agreement

        args.prompt = args.prompt if args.prompt is not None else DEFAULT_PROMPT
        args.max_new_tokens = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        run_agreement(args, base)
    else:
        from hivtp.fidelity_shapes import run_shapes

        args.questions = args.questions or DEFAULT_QUESTIONS
        args.positions = args.positions or "both"
        run_shapes(args, base)
