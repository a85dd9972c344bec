"""The performance targets of issue 15, judged from the result files one run wrote.

    python scripts/gpu_targets.py FILE.json ...     (scripts/gpu_perf.sh passes the files its run wrote)

Reads what `scripts/gpu_check_kernels.py` (kernels-*.json) and `hivtp bench` (e2e-*, e2e-compile-*,
vision-*.json) wrote, prints one line per target (measured value, target, met or not) and writes
results/gpu/targets-<device>-<date>.json. Targets:
- score + select + gather < 1% of the encoder (with hidden states), at every batch of the kernel check;
- TTFT <= 1.05 x bound (vision + LLM prefill alone at the pruned length) in every e2e row;
- LLaVA-1.5 paper mode TTFT at least 40% below full at batch 1 with --compile;
- hivtp vision path <= 1.02 x the floor (the CPU target; reported for any device).
A missing or unreadable file: one `hivtp: error:` line and exit 2; a missed target is reported, not an error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hivtp.bench_e2e import TTFT_TARGET
from hivtp.bench_kernels import KERNEL_SHARE_TARGET
from hivtp.bench_vision import FLOOR_TARGET
from hivtp.cli import one_line_errors
from hivtp.outputs import read_json
from hivtp.plugins.benchmarks.common import write_record

SPEEDUP_TARGET = 0.40  # LLaVA-1.5 paper mode TTFT at least 40% below full, batch 1, --compile
# every other target is judged where it is measured (each row's meets_target); the goals here only label it


def judge(name: str, value: float, target: str, ok: bool, source: Path) -> dict[str, Any]:
    return {"target": name, "value": round(value, 4), "goal": target, "met": bool(ok), "source": source.name}


def targets_of(path: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target one result file bears on."""
    found = []
    if "timing" in record:  # scripts/gpu_check_kernels.py
        for row in record["timing"]:
            found.append(judge(f"score + select < 1% of encoder, B={row['batch']}", row["overhead_pct"],
                               f"< {KERNEL_SHARE_TARGET:.0%}", row["meets_target"], path))
    stage = record.get("stage")
    if stage == "e2e":
        rows = record["rows"]
        mode = "compiled" if record.get("compile") else "eager"
        for row in rows:
            found.append(judge(f"TTFT/bound {record['model']} {mode} {row['config']} B={row['batch']}",
                               row["ttft_over_bound"], f"<= {TTFT_TARGET}", row["meets_target"], path))
        ttft = {(r["config"], r["batch"]): r["ttft"]["median_ms"] for r in rows}
        if record.get("compile") and record["model"] == "llava-1.5-7b" and {("full", 1), ("paper", 1)} <= set(ttft):
            saved = 1 - ttft[("paper", 1)] / ttft[("full", 1)]
            found.append(judge("LLaVA-1.5 paper TTFT below full, B=1, --compile", saved,
                               f">= {SPEEDUP_TARGET:.0%}", saved >= SPEEDUP_TARGET, path))
    if stage == "vision":
        for row in record["rows"]:
            found.append(judge(f"hivtp/floor vision {record['model']} B={row['batch']} ({record['device']})",
                               row["hivtp_over_floor"], f"<= {FLOOR_TARGET}", row["meets_target"], path))
    return found


def judge_files(argv: list[str]) -> None:
    if not argv:
        raise ValueError("gpu_targets.py: pass the result files (JSON) of one run")
    results, meta = [], {}
    for name in argv:
        path = Path(name)
        record = read_json(path, f"gpu_targets.py: no such file {path}")
        try:
            results += targets_of(path, record)
        except (AttributeError, KeyError, TypeError) as err:  # a list, a record without rows, ...
            raise ValueError(f"{path} is not a result file of hivtp bench or gpu_check_kernels ({err!r})") from None
        meta = meta or {key: record.get(key) for key in ("device", "date_utc", "commit", "torch", "transformers")}
    width = max((len(r["target"]) for r in results), default=10)
    for r in results:
        print(f"{r['target']:<{width}}  {r['value']:>9.4f}  {r['goal']:>8}  {'met' if r['met'] else 'MISSED'}")
    print(write_record({**meta, "targets": results}, "gpu", "targets"))


if __name__ == "__main__":
    sys.exit(one_line_errors(lambda: judge_files(sys.argv[1:])))
