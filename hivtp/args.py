"""Argument types and shared options of every `hivtp` subcommand.

Light on purpose: argparse and `HIVTPConfig` only, so `hivtp --help` and argument errors never wait
for torch or transformers. Every type refuses bad text with a message that names what was expected.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

from hivtp.config import RELATIVE, HIVTPConfig


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default in --help, except None: an option left unset says its real default in its own help text
    (hivtp tells given options from defaults that way), so "(default: None)" would only contradict it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus a message; users get one clear line instead, and every default in --help."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"hivtp: error: {one_line(message)}\n")


def one_line(message: str) -> str:
    """message with its line breaks and other control characters escaped (a path or a prompt may hold
    a newline or a terminal escape): an error stays one line, and cannot repaint the user's terminal."""
    def visible(char: str) -> str:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return char.encode("unicode_escape").decode("ascii")
        return char

    return "".join(map(visible, message))


def int_at_least(minimum: int, what: str, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], refused as `expected <what>, got ...`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")
MAX_SECONDS = 86_400  # a day: longer waits are typos, and beyond what the platform's timers take
seconds = int_at_least(1, f"a number of seconds in 1..{MAX_SECONDS}", MAX_SECONDS)
seed = int_at_least(-(2**63), "a seed in -2**63..2**64-1", 2**64 - 1)  # what torch.manual_seed takes


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


IMAGE_MARKER = "<image>"  # where LLaVA's processor puts the image's tokens


def check_prompt(text: str) -> str:
    """A question about one image: not blank (the model would answer nothing asked), and at most one image
    marker (each one expands to a whole image's tokens, and there is one image)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"the prompt is empty: ask a question about the image, got {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # bytes that are not UTF-8, as a shell passes them: the tokenizer fails on them
        raise ValueError(f"the prompt is not UTF-8 text: {text[err.start:err.end]!r} at character {err.start}") from None
    if text.count(IMAGE_MARKER) > 1:
        raise ValueError(f"the prompt holds {text.count(IMAGE_MARKER)} {IMAGE_MARKER} markers for one image: write at most one")
    return text


def prompt(text: str) -> str:
    """check_prompt as an argparse type."""
    try:
        return check_prompt(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def path(text: str) -> Path:
    """A path the user typed: '' (an unset shell variable) is refused instead of meaning '.', and a
    leading '~' the shell left alone (quoted) means the home directory, as the user meant it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL byte: {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8: ONNX, TensorRT and HF take str paths and fail on them
        raise argparse.ArgumentTypeError(f"expected a UTF-8 path, got {text!r}") from None
    given = Path(text).expanduser()
    try:
        os.stat(given)  # a symbolic-link loop anywhere in the path: nothing can be read or written through it
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise argparse.ArgumentTypeError(f"{text}: a symbolic link in this path points back to itself (a loop)") from None
    return given


CONFIG_OPTIONS = {  # HIVTPConfig field -> its option; unset options keep HIVTPConfig's own defaults
    "budget": "--budget", "score_layers": "--score-layers", "regions": "--regions",
    "global_ratio": "--global-ratio", "window": "--window",
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The HIVTPConfig fields every subcommand shares (defaults: HIVTPConfig's, written once in config.py)."""
    d = HIVTPConfig()
    group = parser.add_argument_group("HIVTP selection")
    group.add_argument("--budget", type=positive_int, help="exact visual tokens per image (per crop for NeXT) (default: paper mode)")
    group.add_argument(
        "--score-layers", type=score_layers,
        help="0-based encoder layers whose attention scores tokens, e.g. 6,7,8; 'relative': the paper's layers 6-8 "
             "of 24 at the same depth of this tower (3 layers from a quarter of its depth, below the feature "
             f"layer's: 6,7,8 on 24 layers, 2,3,4 on the shipped 10-layer towers) (default: {d.score_layers})")
    group.add_argument("--regions", type=int_tuple, help=f"region split rows,cols (default: {d.regions[0]},{d.regions[1]})")
    group.add_argument("--global-ratio", type=ratio,
                       help=f"share of each region kept by the global stage, paper mode (default: {d.global_ratio})")
    group.add_argument("--window", type=positive_int, help=f"local-stage window side, paper mode (default: {d.window})")


def config_from(args: argparse.Namespace) -> HIVTPConfig:
    """HIVTPConfig from the options given; the rest keep HIVTPConfig's defaults (ValueError if invalid)."""
    return HIVTPConfig(**{field: getattr(args, field) for field in CONFIG_OPTIONS if getattr(args, field, None) is not None})


def refuse_unused(args: argparse.Namespace, options: dict[str, str], reason: str) -> None:
    """One line naming options that were given but would be ignored (dest -> option text)."""
    given = [option for dest, option in options.items() if getattr(args, dest, None) not in (None, False)]
    if given:
        raise ValueError(f"{', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect {reason}")
