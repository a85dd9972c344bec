"""`hivtp bench --stage vision`: HIVTP's own cost on the vision path, next to the two paths it replaces.

Per batch, three paths on the same pixels, timed side by side (`timing.measure_interleaved`: every
round runs each path once, in rotated order; medians over --repeats rounds):
- stock: the model's own `get_image_features` (tower with hidden states, feature layer, projector on
  every patch of every crop; for LLaVA-NeXT also HF's unpad / newline packing); what an unpruned
  LLaVA pays.
- floor: the same tower and feature layer, then the projector on Kmax tokens per crop, as many rows
  as hivtp projects: what a selector that cost nothing would pay.
- hivtp: `select_and_project` (tower with the score layers' Q/K taken from its forward, scores,
  selection, gather, projector on the Kmax kept slots).
hivtp / floor is HIVTP's whole own cost (target <= 1.02); hivtp / stock is what pruning saves or costs
on the vision path alone. On a CPU every path is also timed in process CPU time (all threads): on a
machine shared with other jobs, elapsed time also counts each thread's waits for a core. LLaVA-NeXT inputs are crops (the bench image at 672x672: base + 2x2 = 5
crops per image); floor and hivtp stop at the projector (the kept tokens' NeXT layout is the host's).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from tqdm import tqdm
from transformers import LlavaNextForConditionalGeneration

from hivtp.args import config_from
from hivtp.bench import (bench_image, check_sizes, load_model, output_path, resolve_device, resolve_dtype,
                         source_config)
from hivtp.bench_e2e import prune_ops
from hivtp.build.pipeline import max_crops
from hivtp.config import HIVTPConfig
from hivtp.plugins.geometry import selection_layout
from hivtp.runtime.hf import PruneOps, check_model, patch_grid, select_and_project
from hivtp.runtime.layout import crops_per_image, flatten_crops
from hivtp.runtime.torch_backend import stock_image_features
from hivtp.timing import measure_interleaved, run_metadata, save_figure, summarize, write_json

FLOOR_TARGET = 1.02  # hivtp's vision path <= 1.02 x the floor: scoring + selection + anything recomputed <= 2%
PATHS = ("stock", "floor", "hivtp")
VISION_BATCHES = (1, 8)  # the targets' batches


def floor_features(model: Any, crops: torch.Tensor, feature_layer: int | list[int], kmax: int) -> torch.Tensor:
    """Tower (with hidden states, as stock runs it), feature layer, projector on Kmax tokens per crop -> [C, Kmax, D]."""
    hidden = model.model.vision_tower(crops, output_hidden_states=True).hidden_states  # L+1 x [C, N, Dv]
    layers = [feature_layer] if isinstance(feature_layer, int) else feature_layer
    patches = torch.cat([hidden[layer][:, 1:] for layer in layers], dim=-1)  # [C, P, Dv']
    P = patches.shape[1]
    rows = patches[:, :kmax] if kmax <= P else patches[:, torch.arange(kmax, device=patches.device) % P]  # [C, Kmax, Dv']
    return model.model.multi_modal_projector(rows)


def vision_inputs(model: Any, processor: Any, image: Any, batch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(pixel_values as the model takes them, image_sizes or None, crops [C, 3, S, S]) for `batch` copies of the image."""
    out = processor.image_processor([image] * batch, return_tensors="pt")
    pixel_values = out["pixel_values"].to(model.device, model.dtype)
    if not isinstance(model, LlavaNextForConditionalGeneration):
        return pixel_values, None, pixel_values
    image_sizes = out["image_sizes"].to(model.device)
    cfg = model.config
    crops = flatten_crops(pixel_values, crops_per_image(image_sizes, cfg.image_grid_pinpoints, cfg.vision_config.image_size))
    return pixel_values, image_sizes, crops


def measure_batch(model: Any, processor: Any, image: Any, batch: int, config: HIVTPConfig, ops: PruneOps | None,
                  args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The three paths on one batch -> one result row (see the module docstring)."""
    pixel_values, image_sizes, crops = vision_inputs(model, processor, image, batch)
    vision_config = model.config.vision_config
    grid = patch_grid(vision_config)
    kmax = selection_layout(grid, config).kmax
    feature_layer = config.resolve_feature_layer(model.config.vision_feature_layer, vision_config.num_hidden_layers + 1)
    fns = {
        "stock": lambda: stock_image_features(model, pixel_values, image_sizes),
        "floor": lambda: floor_features(model, crops, feature_layer, kmax),
        "hivtp": lambda: select_and_project(model, crops, config, ops),
    }
    with torch.inference_mode():
        counts = select_and_project(model, crops, config, ops)[2]  # [C]
        samples = measure_interleaved(fns, device, args.warmup, args.repeats)
    row = {"batch": batch, "crops": crops.shape[0], "patches_per_crop": grid[0] * grid[1], "kmax": kmax,
           "kept_per_crop": counts.float().mean().item(), **ratios(samples.wall_ms), "samples_ms": samples.wall_ms}
    if samples.cpu_ms is not None:  # CPU: the work itself, whatever else the machine runs
        row["cpu_time"] = ratios(samples.cpu_ms)
        row["cpu_samples_ms"] = samples.cpu_ms
    return row


def ratios(samples: dict[str, list[float]]) -> dict[str, Any]:
    """Medians of each path's samples, the ratios between them, and hivtp / floor judged against the target."""
    stats = {name: summarize(samples[name]) for name in PATHS}
    paired = [h / f for h, f in zip(samples["hivtp"], samples["floor"])]  # per round: the same drift on both
    return {
        **stats,
        "hivtp_over_floor": stats["hivtp"].median_ms / stats["floor"].median_ms,
        "hivtp_over_stock": stats["hivtp"].median_ms / stats["stock"].median_ms,
        "floor_over_stock": stats["floor"].median_ms / stats["stock"].median_ms,
        "hivtp_over_floor_paired_median": statistics.median(paired),
        "meets_target": stats["hivtp"].median_ms <= FLOOR_TARGET * stats["floor"].median_ms,
    }


def plot(rows: list[dict[str, Any]], title: str) -> Any:
    """Median ms of the three paths per batch, with hivtp / floor above each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.27
    for i, name in enumerate(PATHS):
        xs = [j + (i - 1) * width for j in range(len(rows))]
        axis.bar(xs, [row[name].median_ms for row in rows], width, label=name)
    for j, row in enumerate(rows):
        top = max(row[name].median_ms for name in PATHS)
        axis.annotate(f"hivtp/floor {row['hivtp_over_floor']:.3f}", (j, top), ha="center", va="bottom", fontsize=8)
    axis.set_xticks(range(len(rows)), [f"batch {row['batch']} ({row['crops']} crops)" for row in rows])
    axis.set(ylabel="median ms", title=title)
    axis.title.set_fontsize(8)
    axis.legend(fontsize=8)
    return figure


def run_vision(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    config = config_from(args)
    hf_config = source_config(args)
    check_sizes(hf_config, config, args.batch or VISION_BATCHES, max_crops(hf_config), device, dtype)
    ops = prune_ops(args.ops, device)
    model, processor, label = load_model(args, device, dtype, vision_only=True)  # the vision path keeps its real sizes
    check_model(model)
    image = bench_image(args.image, hf_config)
    rows = [{"config": config.mode, **measure_batch(model, processor, image, batch, config, ops, args, device)}
            for batch in tqdm(args.batch or VISION_BATCHES, desc="vision batches", unit="batch")]
    meta = run_metadata(device)
    weights = "random weights" if args.random_init else "checkpoint weights"
    print(f"hivtp bench vision: {label} ({weights}), {meta['device']}, {dtype}, {config.mode} mode, image "
          f"{image.size[0]}x{image.size[1]}, {args.repeats} interleaved rounds, {meta['torch_threads']} threads, ops {args.ops}")
    print(f"{'B':>3} {'crops':>5} {'kept/crop':>9} {'Kmax':>5} {'clock':>5} {'stock ms':>10} {'floor ms':>10} "
          f"{'hivtp ms':>10} {'hivtp/floor':>11} {'paired':>7} {'hivtp/stock':>11} {'ok':>3}")
    for r in rows:
        for clock, m in (("wall", r), ("cpu", r.get("cpu_time"))):
            if m is None:
                continue
            print(f"{r['batch']:>3} {r['crops']:>5} {r['kept_per_crop']:>9.1f} {r['kmax']:>5} {clock:>5} "
                  f"{m['stock'].median_ms:>10.2f} {m['floor'].median_ms:>10.2f} {m['hivtp'].median_ms:>10.2f} "
                  f"{m['hivtp_over_floor']:>11.4f} {m['hivtp_over_floor_paired_median']:>7.4f} "
                  f"{m['hivtp_over_stock']:>11.4f} {'yes' if m['meets_target'] else 'no':>3}")
    print(f"target: hivtp <= {FLOOR_TARGET} x floor (floor = same tower and feature layer, projector on as many tokens "
          "as hivtp projects); medians of interleaved rounds (paired: median of the per-round ratios). On a CPU, "
          "wall = elapsed time, cpu = the process's CPU time over its threads (the work, without waits for a core).")
    record = {**meta, "stage": "vision", "model": label, "weights": weights, "dtype": str(dtype), "ops": args.ops,
              "image_size": list(image.size), "hivtp": config.to_dict(), "warmup": args.warmup, "rounds": args.repeats,
              "target": f"hivtp <= {FLOOR_TARGET} x floor", "rows": rows}
    path = output_path(args, "vision", label, meta)
    write_json(path, record)
    save_figure(path.with_suffix(".png"), plot(rows, f"{label}, {meta['device']}, {meta['date_utc']}, commit {meta['commit']}"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
