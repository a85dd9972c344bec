"""Argument types and shared options of every `hivtp` subcommand.

Light on purpose: argparse and `HIVTPConfig` only, so `hivtp --help` and argument errors never wait
for torch or transformers. Every type refuses bad text with a message that names what was expected.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hivtp.config import RELATIVE, HIVTPConfig


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus a message; users get one clear line instead, and every default in --help."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

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


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def ratio(text: str) -> float:
    """A number in [0, 1] ('nan' and 'inf' are not numbers a user means)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def score_layers(text: str) -> tuple[int, ...] | str:
    """'relative' or comma-separated layer indices >= 0, e.g. 6,7,8."""
    if text == RELATIVE:
        return text
    try:
        layers = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {RELATIVE!r} or comma-separated layer indices, got {text!r}") from None
    if any(x < 0 for x in layers):
        raise argparse.ArgumentTypeError(f"expected layer indices >= 0, got {text!r}")
    return layers


def comma_ints(text: str) -> tuple[int, ...]:
    """Positive integers separated by commas, e.g. 1,8,32."""
    return tuple(positive_int(part) for part in text.split(","))


def path(text: str) -> Path:
    """A path the user typed; '' (an unset shell variable) is refused instead of meaning '.'."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL byte: {text!r}")
    return Path(text)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The HIVTPConfig fields every subcommand shares."""
    group = parser.add_argument_group("HIVTP selection")
    group.add_argument("--budget", type=positive_int, help="exact visual tokens per image (per crop for NeXT); default: paper mode")
    group.add_argument(
        "--score-layers", type=score_layers, default=RELATIVE,
        help="0-based encoder layers whose attention scores tokens, e.g. 6,7,8; 'relative': the paper's layers 6-8 "
             "of 24 at the same depth of this tower (3 layers from a quarter of its depth, below the feature "
             "layer's: 6,7,8 on 24 layers, 2,3,4 on the shipped 10-layer towers)")
    group.add_argument("--regions", type=int_tuple, default="2,2", help="region split rows,cols")
    group.add_argument("--global-ratio", type=ratio, default=0.25, help="share of each region kept by the global stage (paper mode)")
    group.add_argument("--window", type=positive_int, default=2, help="local-stage window side (paper mode)")


def config_from(args: argparse.Namespace) -> HIVTPConfig:
    return HIVTPConfig(
        score_layers=args.score_layers, regions=args.regions, global_ratio=args.global_ratio,
        window=args.window, budget=args.budget,
    )
