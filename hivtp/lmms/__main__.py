"""`python -m hivtp.lmms`: print the folder for lmms-eval's `--include_path` (the `hivtp_shapes` task)."""

import sys

from hivtp.args import OneLineParser
from hivtp.lmms import SHAPES_TASK, tasks_dir


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m hivtp.lmms",
        description=f"Print the folder that holds hivtp's lmms-eval task {SHAPES_TASK!r}, for "
                    f"`python -m lmms_eval --include_path \"$(python -m hivtp.lmms)\" --tasks {SHAPES_TASK} ...`.",
    )
    parser.parse_args(argv)
    try:
        print(tasks_dir())
    except ValueError as err:
        print(f"hivtp: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
