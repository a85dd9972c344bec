"""Timers and result records shared by `hivtp bench`, `viz` and `fidelity`.

Timing rule (STYLE.md item 7): warm-up calls first, then `repeats` timed calls; on CUDA each call
sits between two CUDA events and the host synchronises once after the last repeat, so the timer
itself adds no host sync inside a timed region (code under test may still sync, e.g. shape checks
that read a count). On the CPU the clock is `time.perf_counter`. Reported: median and p90
(nearest rank) in milliseconds.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch


@dataclass(frozen=True)
class Stats:
    median_ms: float
    p90_ms: float
    repeats: int


def summarize(samples_ms: list[float]) -> Stats:
    ordered = sorted(samples_ms)
    p90 = ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]  # nearest rank
    return Stats(median_ms=statistics.median(ordered), p90_ms=p90, repeats=len(ordered))


def _time_calls(calls: Iterable[Callable[[], Any]], device: torch.device) -> tuple[list[float], list[float] | None]:
    """Time each call in turn -> (wall ms per call, CPU ms per call or None on CUDA), in call order.

    CUDA: each call between two events, one host sync after the last, so the timer adds no sync inside a
    timed region. CPU: wall time and the process's CPU time (all threads). Whatever the iterable does to
    produce the next call (e.g. a setup) happens outside the timed region.
    """
    if device.type == "cuda":
        events = []
        for fn in calls:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events], None
    wall, cpu = [], []
    for fn in calls:
        t0, c0 = time.perf_counter_ns(), time.process_time_ns()
        fn()
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.process_time_ns() - c0) / 1e6)
    return wall, cpu


def measure(
    fn: Callable[[Any], Any],
    device: torch.device,
    warmup: int,
    repeats: int,
    setup: Callable[[], Any] = lambda: None,
) -> Stats:
    """Time `fn(setup())`; `setup` runs before each call, outside the timed region (e.g. a fresh KV cache)."""
    if repeats <= 0 or warmup < 0:
        raise ValueError(f"need repeats > 0 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn(setup())
    wall, _ = _time_calls((functools.partial(fn, setup()) for _ in range(repeats)), device)  # setup() as each call is drawn
    return summarize(wall)


class Interleaved(NamedTuple):
    """Samples in milliseconds per path, in round order (sample r of every path is from round r)."""

    wall_ms: dict[str, list[float]]
    cpu_ms: dict[str, list[float]] | None  # process CPU time, all threads (CPU device only)


def measure_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, rounds: int
) -> Interleaved:
    """Time several paths side by side: each round runs every path once, in an order rotated by one per
    round, so drift on a shared machine (other jobs, clocks, caches) hits all paths alike.

    On the CPU each call also records the process's CPU time (all its threads): on a machine shared
    with other jobs, wall time also counts the waits for a core, CPU time only the work done.
    """
    if rounds <= 0 or warmup < 0 or not fns:
        raise ValueError(f"need rounds > 0, warmup >= 0 and a path to time, got rounds={rounds}, warmup={warmup}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    order = [names[(r + i) % len(names)] for r in range(rounds) for i in range(len(names))]
    wall_ms, cpu_ms = _time_calls((fns[name] for name in order), device)

    def by_path(samples: list[float]) -> dict[str, list[float]]:
        grouped: dict[str, list[float]] = {name: [] for name in names}
        for name, ms in zip(order, samples):
            grouped[name].append(ms)
        return grouped

    return Interleaved(by_path(wall_ms), None if cpu_ms is None else by_path(cpu_ms))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset. CPU: the process's max RSS so far (cannot be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of the device: CUDA's free bytes, else the host's MemAvailable (Linux) or free pages."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def git_commit() -> str:
    """Short commit of the code that ran; $HIVTP_COMMIT where the tree has no .git (a copied checkout)."""
    if os.environ.get("HIVTP_COMMIT"):
        return os.environ["HIVTP_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()} ({os.cpu_count()} cores visible)"


def cpu_model() -> str:
    """The 'model name' line of /proc/cpuinfo (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def run_metadata(device: torch.device) -> dict[str, Any]:
    """What every result file records: device, UTC date, commit and library versions."""
    import transformers

    return {
        "device": device_name(device),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),  # 1, 5, 15 min: how shared the machine was (CPU timings)
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # PASSIVE: idle threads sleep instead of spinning
    }


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write via a temporary file in the same folder, then os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: Path, record: dict[str, Any]) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n"))


def save_figure(path: Path, figure: Any) -> Path:
    """Save a matplotlib figure as PNG, atomically, and free it."""
    import matplotlib.pyplot as plt

    try:
        return write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(figure)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Stats):
        return asdict(value)
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
