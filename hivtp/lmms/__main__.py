"""`python -m hivtp.lmms`: print the folder for lmms-eval's `--include_path` (the `hivtp_shapes` task)."""

import sys

from hivtp.args import OneLineParser
from hivtp.cli import one_line_errors
from hivtp.lmms import SHAPES_TASK, tasks_dir


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m hivtp.lmms",
        description=f"Print the folder that holds hivtp's lmms-eval task {SHAPES_TASK!r}, for "
                    f"`python -m lmms_eval --include_path \"$(python -m hivtp.lmms)\" --tasks {SHAPES_TASK} ...`.",
    )
    parser.parse_args(argv)
    return one_line_errors(lambda: print(tasks_dir()))


if __name__ == "__main__":
    sys.exit(main())
