"""`hivtp bench --stage serve`: a real Triton server on loopback, clients at several concurrencies.

Per configuration (full = pruning_mode none, paper, each budget) and concurrency C: C threads, each
with its own gRPC stream, send streamed requests until `requests` have been sent (at least 2 C) or the
point's time limit passes. Reported: requests/s (completed / wall time), latency and TTFT
percentiles (p50 / p95 / p99, nearest rank) measured by the clients, errors. Every request of a point
is counted, including the warm-up-free first ones: one untimed warm-up request per configuration runs
before its points.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hivtp.runtime.triton.client import GrpcSession, Question

DEFAULT_CONCURRENCY = (1, 4, 16, 64)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)] if ordered else float("nan")


def run_point(url: str, question: Question, concurrency: int, requests: int, time_limit_s: float) -> dict[str, Any]:
    """One (configuration, concurrency) point: bounded by `requests` and by `time_limit_s`."""
    total = max(requests, 2 * concurrency)
    lock = threading.Lock()
    state = {"sent": 0}
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + time_limit_s

    def client() -> None:
        session = GrpcSession(url, timeout_s=time_limit_s + 60)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if state["sent"] >= total:
                        return
                    state["sent"] += 1
                try:
                    reply = session.ask(question)
                except ValueError as err:
                    with lock:
                        errors.append(str(err))
                    continue
                with lock:
                    latencies.append(reply.latency_s * 1e3)
                    ttfts.append(reply.ttft_s * 1e3)
        finally:
            session.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency, "requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
        "wall_s": wall, "requests_per_s": len(latencies) / wall,
        **{f"latency_p{q}_ms": percentile(latencies, q / 100) for q in (50, 95, 99)},
        **{f"ttft_p{q}_ms": percentile(ttfts, q / 100) for q in (50, 95, 99)},
    }


HEADER = "| config | concurrency | requests | errors | req/s | latency p50 / p95 / p99 ms | TTFT p50 / p95 / p99 ms |\n" + "| --- " * 7 + "|"


def format_row(row: dict[str, Any]) -> str:
    lat = " / ".join(f"{row[f'latency_p{q}_ms']:.1f}" for q in (50, 95, 99))
    ttft = " / ".join(f"{row[f'ttft_p{q}_ms']:.1f}" for q in (50, 95, 99))
    return f"| {row['config']} | {row['concurrency']} | {row['requests']} | {row['errors']} | {row['requests_per_s']:.2f} | {lat} | {ttft} |"


def plot(rows: list[dict[str, Any]], title: str) -> Any:
    """Requests/s, p95 latency and p50 TTFT against concurrency, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for config in dict.fromkeys(row["config"] for row in rows):
        mine = [r for r in rows if r["config"] == config]
        x = [r["concurrency"] for r in mine]
        for axis, key in zip(axes, ("requests_per_s", "latency_p95_ms", "ttft_p50_ms")):
            axis.plot(x, [r[key] for r in mine], "o-", label=config)
    for axis, label in zip(axes, ("requests / s", "latency p95 (ms)", "TTFT p50 (ms)")):
        axis.set(xscale="log", xlabel="concurrent clients", ylabel=label)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def run_serve_bench(args: argparse.Namespace) -> None:
    import torch

    from hivtp.args import config_from
    from hivtp.bench import MODEL_TYPE_BUDGETS, PRESET_BUDGETS, output_path
    from hivtp.demo import sample_image_path, shipped_model
    from hivtp.loading import checkpoint_type
    from hivtp.runtime.triton.client import read_image_bytes
    from hivtp.runtime.triton.repository import ServeOptions
    from hivtp.runtime.triton.serve import LaunchOptions, running_server
    from hivtp.runtime.triton.server import free_ports
    from hivtp.timing import run_metadata, save_figure, write_json

    model_dir = args.model or shipped_model("llava")
    model_type = checkpoint_type(model_dir)
    budgets = args.budgets or default_budgets(model_dir, MODEL_TYPE_BUDGETS[model_type], PRESET_BUDGETS["tiny"])
    configs = [("full", None, "none"), ("paper", None, "paper")] + [(f"budget-{k}", k, None) for k in budgets]
    image = read_image_bytes(args.image or sample_image_path())  # decoded first: one clear line before the server starts
    options = ServeOptions(model_dir=model_dir, instances=args.instances, max_batch=args.max_batch,
                           queue_delay_us=args.queue_delay_us, config=config_from(args))
    launch = LaunchOptions("127.0.0.1", free_ports("127.0.0.1"), args.tritonserver, args.python_env)
    meta = run_metadata(torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hivtp-bench-serve-") as work, running_server(options, launch, Path(work)):
        url = f"127.0.0.1:{launch.ports.grpc}"
        for name, budget, mode in configs:
            question = Question(image, args.prompt, args.new_tokens, budget, mode, stream=True)
            run_point(url, question, 1, 1, args.time_limit)  # warm-up
            for concurrency in args.concurrency or DEFAULT_CONCURRENCY:
                row = {"config": name, **run_point(url, question, concurrency, args.requests, args.time_limit)}
                rows.append(row)
                print(format_row(row), flush=True)
    label = Path(model_dir).name
    record = {**meta, "stage": "serve", "model": label, "flavour": "torch", "instances": args.instances,
              "max_batch": args.max_batch, "queue_delay_us": args.queue_delay_us, "new_tokens": args.new_tokens,
              "requests_per_point": args.requests, "time_limit_s": args.time_limit, "rows": rows}
    path = output_path(args, "serve", label, meta)
    write_json(path, record)
    title = f"hivtp serve, {label}, torch flavour on {meta['device']}, {args.instances} instance(s), {meta['date_utc']}, commit {meta['commit']}"
    save_figure(path.with_suffix(".png"), plot(rows, title))
    print(HEADER)
    for row in rows:
        print(format_row(row))
    print(f"wrote {path} and {path.with_suffix('.png')}")


def default_budgets(model_dir: Path, real: tuple[int, ...], tiny: tuple[int, ...]) -> tuple[int, ...]:
    """The e2e stage's budgets for the model type; the tiny preset's for a tiny grid (8x8: 64 patches)."""
    from hivtp.loading import checkpoint_config
    from hivtp.runtime.hf import patch_grid

    patches = math.prod(patch_grid(checkpoint_config(model_dir).vision_config))
    return real if max(real) < patches else tiny
