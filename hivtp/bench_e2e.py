"""`hivtp bench --stage e2e`: per configuration, where the time to first token goes.

Per (batch, configuration), each a median and p90 over --repeats after --warmup:
- preprocess: CPU image processor + tokenizer + copy to the device (reported, never inside TTFT)
- vision: pixel_values on the device -> kept features and pruned layout (tower, scoring, selection, projector)
- ttft: pixel_values on the device -> first token (vision + prefill in one timed region)
- llm_prefill: the LLM alone at the same pruned [B, T] shape on random embeddings; bound = vision + llm_prefill.
  Target: ttft <= 1.05 x bound (pruning adds nothing beyond its own vision cost and a shorter prefill).
- decode: tokens/s = B * (n - 1) / time of n - 1 greedy steps after the first token (fresh prefill each repeat)
- e2e: latency of n = --new-tokens output tokens (min_new_tokens = max_new_tokens: no early EOS)
- peak memory (CUDA: allocated; CPU: process max RSS, which never goes down) and visual tokens kept.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hivtp.args import config_from
from hivtp.bench import (bench_image, check_sizes, configurations, default_budgets, load_model, output_path, resolve_device,
                         resolve_dtype, source_config)
from hivtp.build.pipeline import max_crops
from hivtp.config import HIVTPConfig
from hivtp.runtime.backend import Backend, VisionResult
from hivtp.runtime.hf import PruneOps, default_ops
from hivtp.timing import measure, peak_memory_mib, reset_peak_memory, run_metadata, save_figure, write_json

TTFT_TARGET = 1.05  # pruned TTFT <= 1.05 x (vision + LLM prefill alone)


def check_new_tokens(hf_config: Any, new_tokens: int) -> None:
    """--new-tokens beyond the LLM's context cannot run (the prompt and image need room too)."""
    context = getattr(hf_config.text_config, "max_position_embeddings", None)
    if context is not None and new_tokens >= context:
        raise ValueError(f"--new-tokens {new_tokens} does not fit the model's context of {context} tokens")


def dummy_vision(vision: VisionResult) -> VisionResult:
    """The same pruned layout with random features: the LLM prefill alone at the pruned length."""
    return VisionResult(features=torch.randn_like(vision.features), sequence=vision.sequence,
                        kept_tokens=vision.kept_tokens, full_tokens=vision.full_tokens)


Plan = list[tuple[str, HIVTPConfig | None, Callable[[], Backend]]]


def trtllm_plan(args: argparse.Namespace) -> tuple[Plan, str]:
    """One row: a TensorRT-LLM engine has its HIVTP config built in (a full row needs an unpruned engine)."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        raise ValueError("hivtp bench --backend trtllm needs tensorrt_llm 1.2.1 (pip install tensorrt_llm==1.2.1 on a CUDA machine)")
    from hivtp.runtime.trtllm import TRTLLMBackend

    backend = TRTLLMBackend(args.engine, max_new_tokens=args.new_tokens)
    name = "engine-" + (backend.config.mode if backend.config.budget is None else f"budget-{backend.config.budget}")
    return [(name, backend.config, lambda: backend)], "trtllm-" + Path(args.engine).name


def torch_plan(args: argparse.Namespace, model: Any, processor: Any) -> Plan:
    """full (stock HF vision path: nothing scored or pruned), paper mode, then each budget."""
    from hivtp.runtime.compiled import CompiledLM
    from hivtp.runtime.torch_backend import TorchBackend

    configs = configurations(default_budgets(args, model.config.model_type), config_from(args))
    ops = prune_ops(args.ops, model.device)
    compiled = CompiledLM(model, args.new_tokens) if args.compile else None  # one per model: shared compile caches
    return [(name, config, lambda config=config: TorchBackend(model, processor, config, ops, compiled))
            for name, config in configs]


def prune_ops(choice: str, device: torch.device) -> PruneOps | None:
    """--ops: auto (Triton kernels on CUDA, reference elsewhere), reference, or triton (CUDA only)."""
    if choice == "reference":
        return PruneOps()
    if choice == "triton" and device.type != "cuda":
        raise ValueError("--ops triton runs the Triton kernels on CUDA: use --device cuda, or --ops reference")
    return default_ops(device) if choice == "triton" else None


def measure_config(backend: Backend, images: list, prompts: list[str], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every metric of one (batch, configuration) row; see the module docstring."""
    cpu, timed = torch.device("cpu"), dict(device=device, warmup=args.warmup, repeats=args.repeats)
    reset_peak_memory(device)
    row: dict[str, Any] = {"preprocess": measure(lambda _: backend.prepare(images, prompts), cpu, args.warmup, args.repeats)}
    prepared = backend.prepare(images, prompts)
    vision = backend.vision(prepared)
    dummy = dummy_vision(vision)
    steps = args.new_tokens - 1
    row["vision"] = measure(lambda _: backend.vision(prepared), **timed)
    row["ttft"] = measure(lambda _: backend.prefill(prepared, backend.vision(prepared)), **timed)
    row["llm_prefill"] = measure(lambda _: backend.prefill(prepared, dummy), **timed)  # same [B, T], random embeddings
    row["decode"] = measure(lambda p: backend.decode(p, steps), setup=lambda: backend.prefill(prepared, vision), **timed)
    row["e2e"] = measure(lambda _: backend.decode(backend.prefill(prepared, backend.vision(prepared)), steps), **timed)
    B = len(prompts)
    bound = row["vision"].median_ms + row["llm_prefill"].median_ms
    row.update(
        bound_ms=bound,
        ttft_over_bound=row["ttft"].median_ms / bound,
        meets_target=row["ttft"].median_ms <= TTFT_TARGET * bound,
        decode_tokens_per_s=B * steps / (row["decode"].median_ms / 1e3) if steps else None,
        peak_memory_mib=peak_memory_mib(device),
        kept_tokens_per_image=vision.kept_tokens.float().mean().item(),
        full_tokens_per_image=vision.full_tokens.float().mean().item(),
        sequence_shape=list(vision.sequence.attention_mask.shape),
    )
    return row


HEADER = (
    f"{'config':<12} {'B':>3} {'kept/img':>9} {'T':>5} {'prep ms':>8} {'vision ms':>10} {'TTFT ms':>9} {'p90':>8} "
    f"{'LLM ms':>8} {'bound':>8} {'TTFT/bd':>7} {'ok':>3} {'dec tok/s':>10} {'e2e ms':>9} {'peak MiB':>9}"
)


def format_row(row: dict[str, Any]) -> str:
    tps = f"{row['decode_tokens_per_s']:.1f}" if row["decode_tokens_per_s"] is not None else "-"
    return (
        f"{row['config']:<12} {row['batch']:>3} {row['kept_tokens_per_image']:>9.1f} {row['sequence_shape'][1]:>5} "
        f"{row['preprocess'].median_ms:>8.2f} {row['vision'].median_ms:>10.2f} {row['ttft'].median_ms:>9.2f} "
        f"{row['ttft'].p90_ms:>8.2f} {row['llm_prefill'].median_ms:>8.2f} {row['bound_ms']:>8.2f} "
        f"{row['ttft_over_bound']:>7.3f} {'yes' if row['meets_target'] else 'no':>3} {tps:>10} "
        f"{row['e2e'].median_ms:>9.2f} {row['peak_memory_mib']:>9.0f}"
    )


def plot(rows: list[dict[str, Any]], title: str) -> Any:
    """TTFT (and its bound) and decode throughput against visual tokens kept, one line per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for batch in sorted({row["batch"] for row in rows}):
        mine = sorted((r for r in rows if r["batch"] == batch), key=lambda r: r["kept_tokens_per_image"])
        kept = [r["kept_tokens_per_image"] for r in mine]
        left.plot(kept, [r["ttft"].median_ms for r in mine], "o-", label=f"TTFT, batch {batch}")
        left.plot(kept, [r["bound_ms"] for r in mine], "x--", label=f"bound (vision + LLM), batch {batch}")
        right.plot(kept, [r["decode_tokens_per_s"] or 0.0 for r in mine], "o-", label=f"batch {batch}")
        for r in mine:
            left.annotate(r["config"], (r["kept_tokens_per_image"], r["ttft"].median_ms), fontsize=7)
    left.set(xlabel="visual tokens kept per image", ylabel="TTFT, median (ms)")
    right.set(xlabel="visual tokens kept per image", ylabel="decode tokens/s, median")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def run_e2e(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if args.backend == "trtllm":
        image = bench_image(args.image, None)
        plan, label = trtllm_plan(args)
        dtype = "engine"
    else:
        dtype = resolve_dtype(args.dtype, device)
        hf_config = source_config(args)
        check_sizes(hf_config, config_from(args), args.batch or (1,), max_crops(hf_config), device, dtype)
        check_new_tokens(hf_config, args.new_tokens)
        image = bench_image(args.image, hf_config)
        model, processor, label = load_model(args, device, dtype)
        plan = torch_plan(args, model, processor)
    meta = run_metadata(device)
    rows = []
    for batch in args.batch or (1,):
        images, prompts = [image] * batch, [args.prompt] * batch
        for name, config, make in tqdm(plan, desc=f"e2e batch {batch}", unit="config"):
            rows.append({"config": name, "batch": batch, "hivtp": config.to_dict() if config else None,
                         **measure_config(make(), images, prompts, args, device)})
    weights = "random weights (timing only; outputs are meaningless)" if args.random_init else "checkpoint weights"
    compiled = ", compiled (torch.compile + CUDA graphs)" if args.compile else ""
    print(f"hivtp bench e2e: {label} ({weights}), backend {args.backend}{compiled}, {meta['device']} ({args.threads} threads), {dtype}, "
          f"image {image.size[0]}x{image.size[1]}, {args.new_tokens} new tokens, {args.repeats} repeats")
    print(HEADER)
    for row in rows:
        print(format_row(row))
    print(f"target: pruned TTFT <= {TTFT_TARGET} x bound (bound = vision + LLM prefill alone at the pruned length). "
          "Paper, for reference only: TTFT -50% (LLaVA-1.5-7B), -55% (LLaVA-NeXT-7B).")
    record = {**meta, "stage": "e2e", "model": label, "weights": weights, "backend": args.backend, "dtype": str(dtype),
              "image_size": list(image.size), "new_tokens": args.new_tokens, "warmup": args.warmup,
              "repeats": args.repeats, "ops": args.ops, "compile": args.compile, "rows": rows}
    path = output_path(args, "e2e" + ("-compile" if args.compile else ""), label, meta)
    write_json(path, record)
    save_figure(path.with_suffix(".png"), plot(rows, f"{label}, {args.backend}, {meta['device']}, {meta['date_utc']}, commit {meta['commit']}"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
