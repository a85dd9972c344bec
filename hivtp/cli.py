"""`hivtp` command line: parse, validate, dispatch. Bad input: one `hivtp: error:` line, exit 2.

Parsing imports only argparse and the light `hivtp.commands` modules, so `--help`, `--version` and
argument errors come back at once; each subcommand imports torch and friends when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from hivtp import __version__
from hivtp.args import OneLineParser, one_line
from hivtp.commands import COMMANDS


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="hivtp", description="HIVTP visual-token pruning for LLaVA")
    parser.add_argument("--version", action="version", version=f"hivtp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hivtp.commands.{name}").add_parser(commands)
    return parser


def quiet_libraries() -> None:
    """The CLI prints its own results and one-line errors; library chatter (deprecation notices, progress
    bars, the ONNX exporter's "torchvision is not installed" lines) would bury them."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging  # imports torch, which sets up torch's loggers

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run

    def command() -> None:
        quiet_libraries()
        run(args)

    return one_line_errors(command)


def one_line_errors(command: Callable[[], int | None]) -> int:
    """Run a command body -> its exit code (None: 0); bad input or an OS error: one `hivtp: error:` line and 2,
    Ctrl-C: 130. Every hivtp entry point (the CLI, scripts/, `python -m` tools) ends this way."""
    try:
        code = command()
    except ValueError as err:
        print(f"hivtp: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # what the checks cannot foresee: a full disk, a read-only mount, a vanished folder
        where = f": {err.filename}" if err.filename else ""
        print(f"hivtp: error: {one_line(f'{err.strerror or err}{where}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hivtp: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
