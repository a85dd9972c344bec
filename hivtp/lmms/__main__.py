"""`python -m hivtp.lmms`: print the folder for lmms-eval's `--include_path` (the `hivtp_shapes` task)."""

import sys

from hivtp.lmms import tasks_dir

if __name__ == "__main__":
    try:
        print(tasks_dir())
    except ValueError as err:
        print(f"hivtp: error: {err}", file=sys.stderr)
        sys.exit(2)
