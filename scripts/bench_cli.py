"""How light the `hivtp` command feels: wall time and peak memory of help, version and argument errors.

Each case runs as a fresh process (what a user's shell does), beside a bare `python -c pass` (the floor on
this machine), `--repeats` times after one warm-up run (the OS file cache, not Python, is what the
warm-up fills); medians are reported. Target: every case
under 1 s. Results: a table on stdout and a JSON file (device, date, commit).

    python scripts/bench_cli.py [--repeats 5] [--out FILE.json]   (default: a new file in the per-user results folder)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

from hivtp.commands import COMMANDS  # light: names only

TARGET_S = 1.0
CASES = [
    ["--help"], ["--version"], *[[command, "--help"] for command in COMMANDS],
    ["generate", "--budget", "0"],  # an argument error: one line, exit 2
]


def run_once(argv: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, exit code) of one `hivtp ARGS` process."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, child.returncode


def main() -> int:
    from hivtp.args import OneLineParser, int_at_least, path  # light: argparse and the config only
    from hivtp.commands.bench import MAX_REPEATS

    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int_at_least(1, f"a positive integer, at most {MAX_REPEATS}", MAX_REPEATS), default=5,
                        help="timed runs per case")
    parser.add_argument("--out", type=path, help="JSON path (default: a new file in the per-user results folder)")
    args = parser.parse_args()
    executable = shutil.which("hivtp")
    if executable is None:
        raise ValueError("hivtp is not on PATH: pip install -e . first")

    from hivtp.outputs import output_file  # light; torch only after the measurements (a fork copies the parent)

    out = output_file(args.out, "--out", ".json", "cli", "cli")
    rows = []
    commands = [("python -c pass", [sys.executable, "-c", "pass"])]  # the floor: a bare interpreter's start-up
    commands += [("hivtp " + " ".join(case), [executable, *case]) for case in CASES]
    for label, argv in commands:
        run_once(argv)  # warm-up
        runs = [run_once(argv) for _ in range(args.repeats)]
        seconds = statistics.median(r[0] for r in runs)
        rows.append({"command": label, "median_s": seconds, "max_s": max(r[0] for r in runs),
                     "peak_rss_mib": statistics.median(r[1] for r in runs), "exit_codes": sorted({r[2] for r in runs}),
                     "meets_target": seconds < TARGET_S})
    import torch

    from hivtp.timing import run_metadata, write_json

    meta = run_metadata(torch.device("cpu"))
    print(f"hivtp CLI start-up: {meta['device']}, {args.repeats} runs per case after a warm-up, target < {TARGET_S:.0f} s")
    print(f"{'command':<32} {'median s':>9} {'max s':>7} {'peak MiB':>9} {'exit':>5} {'ok':>4}")
    for r in rows:
        print(f"{r['command']:<32} {r['median_s']:>9.3f} {r['max_s']:>7.3f} {r['peak_rss_mib']:>9.1f} "
              f"{','.join(map(str, r['exit_codes'])):>5} {'yes' if r['meets_target'] else 'no':>4}")
    write_json(out, {**meta, "target_s": TARGET_S, "repeats": args.repeats, "rows": rows})
    print(f"wrote {out}")
    return 0 if all(r["meets_target"] for r in rows) else 1


if __name__ == "__main__":
    from hivtp.cli import one_line_errors

    sys.exit(one_line_errors(main))
