"""Helpers shared by the CLI tests."""

from __future__ import annotations

from hivtp.cli import main


def cli_exit_code(argv: list[str]) -> int:
    """hivtp's exit code for argv: main()'s return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)
