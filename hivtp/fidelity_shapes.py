"""`hivtp fidelity` shapes mode: what each method keeps, and the accuracy the decoder gets from it.

Each method's kept sets are computed once per budget from the vision tower alone, by the function
pruning itself uses (`select_and_project`), then replayed to the decoder, so the selection metrics and
the accuracies describe the very same tokens. Rows per model:
- full (nothing pruned); hivtp-paper (paper mode, variable count); objects (every object of the scene,
  nothing else: as few tokens as objects);
- per budget K (tokens per image, per crop for NeXT): HIVTP with the configured score layers ('hivtp-rel'
  for the default relative depth, 'hivtp' for explicit layers) and with the paper's absolute layers
  6, 7, 8 ('hivtp-abs'); CLS top-k, uniform and random (`hivtp.fidelity`); oracle (the question's
  objects, plus random patches up to K).
Columns: recall (share of the things questions are about that stay visible in at least one view: the
image, or for NeXT the base view or a crop) and all-kept (share of questions whose every subject stays
visible; questions about nothing, e.g. 'is there ...? no', count as kept), from the tower alone; then
accuracy with 95% Wilson intervals, in the deployed layout (positions renumbered) and with every kept
token at its original position id (`HIVTPConfig.positions='original'`, a torch-only ablation).
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from hivtp.config import PAPER_SCORE_LAYERS, POSITIONS, RELATIVE, HIVTPConfig
from hivtp.fidelity import METHODS, Predictions, accuracy, encode, method_setup, predict, with_counts
from hivtp.runtime.hf import PruneOps, Scorer, apply, default_ops, patch_grid, select_and_project
from hivtp.runtime.layout import crops_per_image, flatten_crops
from hivtp.shapes import CELL, KINDS, SIDE, Sample, Thing, held_out
from hivtp.timing import run_metadata, save_figure, write_json

BUDGETS = (32, 16, 8, 4)  # of 64 patches per image / crop: 50, 25, 12.5 and 6.25 %
Z95 = 1.959964  # two-sided 95% normal quantile
Selection = list[tuple[torch.Tensor, torch.Tensor]]  # per batch: indices [C, Kmax] (-1 padded), counts [C]


@dataclass(frozen=True)
class Batch:
    inputs: Any  # processor output of `samples`
    samples: list[Sample]
    crops: list[int]  # views per sample: 1 for LLaVA; base + crops for NeXT


def wilson(right: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion right / n (sound at 0 and n, unlike p +- 1.96 se)."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = right / n, Z95**2
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (0.0 if right == 0 else max(0.0, centre - half)), (1.0 if right == n else min(1.0, centre + half))


def scored(samples: list[Sample], answers: list[str]) -> dict[str, Any]:
    """Accuracy overall and per kind (`fidelity.accuracy`), each with its 95% interval."""
    shares = accuracy(samples, answers)
    sizes = Counter(s.kind for s in samples)
    per_kind = {k: v for k, v in shares.items() if k != "overall"}
    return {"accuracy": shares["overall"], "accuracy_ci": wilson(round(shares["overall"] * len(samples)), len(samples)),
            "per_kind": per_kind, "per_kind_ci": {k: wilson(round(v * sizes[k]), sizes[k]) for k, v in per_kind.items()}}


def views_per_image(model: Any, processed: Any, images: int) -> list[int]:
    """Views of each processed image: 1 for LLaVA; NeXT's base view plus its real crops."""
    if "image_sizes" not in processed:
        return [1] * images
    cfg = model.config
    return crops_per_image(processed["image_sizes"], cfg.image_grid_pinpoints, cfg.vision_config.image_size)


def batches_of(model: Any, processor: Any, samples: list[Sample]) -> list[Batch]:
    """The samples encoded once (`fidelity.encode`), with each one's view count."""
    batches, size = [], 0
    for inputs in encode(processor, samples):
        b = inputs["input_ids"].shape[0]
        batches.append(Batch(inputs, samples[size : size + b], views_per_image(model, inputs, b)))
        size += b
    return batches


def cell_views(model: Any, processor: Any) -> list[list[set[int]]]:
    """For each cell of the scene grid: per view of a SIDE-px image, the patches that show that cell.

    Found by the image processor itself: a white cell on black, against all-black and all-white
    images (so padding, which both share, never counts), a patch shows the cell if most of its pixels
    do. LLaVA: the cell's own patch; NeXT: that patch in the base view and its place in the crops."""
    grid = SIDE // CELL
    images = [np.zeros((SIDE, SIDE, 3), np.uint8), np.full((SIDE, SIDE, 3), 255, np.uint8)]
    for cell in range(grid * grid):
        image = np.zeros((SIDE, SIDE, 3), np.uint8)
        row, col = divmod(cell, grid)
        image[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = 255
        images.append(image)
    processed = processor.image_processor([Image.fromarray(i) for i in images], return_tensors="pt")
    pixels = processed["pixel_values"].float()  # [2 + G, views, 3, S, S] (NeXT) or [2 + G, 3, S, S]
    if pixels.dim() == 4:
        pixels = pixels[:, None]
    pixels = pixels[:, : views_per_image(model, processed, len(images))[0]]  # every image has the same size
    black, white, cells = pixels[0], pixels[1], pixels[2:]  # [V, 3, S, S] x2, [G, V, 3, S, S]
    lit = ((cells - black) > 0.5 * (white - black)) & ((white - black) > 0)  # [G, V, 3, S, S]
    patch = model.config.vision_config.patch_size
    share = lit.float().mean(2).unflatten(-1, (-1, patch)).unflatten(-3, (-1, patch)).mean(dim=(-1, -3))  # [G, V, h, w]
    return [[set(torch.nonzero(view.flatten() > 0.5).flatten().tolist()) for view in per_cell] for per_cell in share]


def visible(thing: Thing, kept: list[set[int]], views: list[list[set[int]]]) -> bool:
    """Whether some view keeps a patch that shows the thing."""
    return any(shown & kept_view for shown, kept_view in zip(views[thing.row * (SIDE // CELL) + thing.col], kept))


def kept_sets(batches: list[Batch], selection: Selection) -> list[list[set[int]]]:
    """Per sample, per view, the kept patch indices."""
    out = []
    for batch, (indices, counts) in zip(batches, selection):
        rows = [set(row[: int(k)].tolist()) for row, k in zip(indices, counts)]
        starts = np.cumsum([0, *batch.crops])
        out += [rows[a:b] for a, b in zip(starts[:-1], starts[1:])]
    return out


def subject_metrics(samples: list[Sample], kept: list[list[set[int]]], views: list[list[set[int]]]) -> dict[str, float]:
    """recall: share of subjects visible; all_kept: share of questions whose every subject is visible."""
    flags = [[visible(t, k, views) for t in s.about] for s, k in zip(samples, kept)]
    subjects = [f for per in flags for f in per]
    return {"subject_recall": sum(subjects) / max(len(subjects), 1),
            "all_subjects_kept": sum(all(per) for per in flags) / len(flags)}


Scores = list[tuple[tuple[int, int], torch.Tensor]]  # per batch: patch grid, scores [C, P]


@torch.inference_mode()
def tower_scores(model: Any, batches: list[Batch], config: HIVTPConfig, score: Scorer) -> Scores:
    """Every view's scores from the vision tower alone, computed by pruning's own `select_and_project`."""
    out = []
    for batch in batches:
        recorded: list[torch.Tensor] = []

        def record(scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig) -> tuple[torch.Tensor, torch.Tensor]:
            recorded.append(scores)  # [C, P]; keep nothing, project nothing
            return with_counts(scores.new_zeros(scores.shape[0], 0, dtype=torch.int64))

        pixels = flatten_crops(batch.inputs["pixel_values"], batch.crops).to(model.device, model.dtype)  # [C, 3, S, S]
        grid = select_and_project(model, pixels, config, PruneOps(score=score, select=record))[0]
        out.append((grid, recorded[0]))
    return out


def tower_selection(model: Any, batches: list[Batch], config: HIVTPConfig, ops: PruneOps | None,
                    cache: dict[Any, Scores]) -> Selection:
    """Every view's kept patches from the vision tower alone (the decoder never runs). One tower pass per
    scorer and score layers: every budget, and every method that ignores the scores, reuses it (on CUDA
    HIVTP's Triton scorer and the baselines' reference scorer are two keys, so two passes)."""
    ops = ops or default_ops(model.device)
    key = (layers_label(model, config), ops.score)
    if key not in cache:
        cache[key] = tower_scores(model, batches, config, ops.score)
    return [tuple(t.cpu() for t in ops.select(scores, grid, config)[:2]) for grid, scores in cache[key]]


def label_selection(batches: list[Batch], views: list[list[set[int]]], patches: int, budget: int | None,
                    everything: bool, generator: torch.Generator) -> Selection:
    """Kept patches from the labels: the question's subjects plus random fill up to `budget` of the
    view's `patches` (oracle), or with everything=True and no budget every object of the scene and
    nothing else (objects)."""
    selection = []
    for batch in batches:
        rows = []
        for sample, crops in zip(batch.samples, batch.crops):
            things = sample.things if everything else sample.about
            for view in range(crops):
                must = sorted({p for t in things for p in views[t.row * (SIDE // CELL) + t.col][view]})
                if budget is not None:
                    must = [must[i] for i in torch.randperm(len(must), generator=generator)[:budget].tolist()]
                    rest = [p for p in torch.randperm(patches, generator=generator).tolist() if p not in must]
                    must = sorted(must + rest[: budget - len(must)])
                rows.append(must)
        counts = torch.tensor([len(r) for r in rows])
        indices = torch.full((len(rows), max(1, int(counts.max()))), -1, dtype=torch.int64)
        for i, row in enumerate(rows):
            indices[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        selection.append((indices, counts))
    return selection


class Replay:
    """A `Selector` that hands out a precomputed selection, batch after batch (one `predict` pass)."""

    def __init__(self, selection: Selection) -> None:
        self.batches = iter(selection)

    def __call__(self, scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig) -> tuple[torch.Tensor, torch.Tensor]:
        indices, counts = next(self.batches)
        if indices.shape[0] != scores.shape[0]:
            raise ValueError(f"replayed selection has {indices.shape[0]} views, the batch {scores.shape[0]}")
        return indices.to(scores.device), counts.to(scores.device)


def no_scores(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """queries [L, M, H, N, d] -> [M, P] zeros: replayed or random selections need no scores."""
    return queries.new_zeros(queries.shape[1], queries.shape[3] - 1, dtype=torch.float32)


def replayed(model: Any, processor: Any, batches: list[Batch], selection: Selection, positions: str) -> Predictions:
    """The decoder's answers when it sees exactly `selection`."""
    runner = apply(model, HIVTPConfig(score_layers=(0,), positions=positions), PruneOps(score=no_scores, select=Replay(selection)))
    return predict(runner, processor, [b.inputs for b in batches])


def layers_label(model: Any, config: HIVTPConfig) -> str:
    layers = config.for_tower(model.config.vision_config.num_hidden_layers, model.config.vision_feature_layer).layers
    return ",".join(map(str, layers))


def selections(model: Any, batches: list[Batch], views: list[list[set[int]]], base: HIVTPConfig,
               budgets: tuple[int, ...], seed: int) -> list[tuple[str, str, int | None, Selection]]:
    """(method, score layers, budget, selection) of every row with pruning, in table order."""
    generator, cache = torch.Generator().manual_seed(seed), {}
    grid = patch_grid(model.config.vision_config)
    patches = grid[0] * grid[1]
    hivtp = "hivtp-rel" if base.score_layers == RELATIVE else "hivtp"
    paper_layers = replace(base, score_layers=PAPER_SCORE_LAYERS)
    with_abs = layers_label(model, base) != layers_label(model, paper_layers)
    paper = replace(base, budget=None)
    runs = [("hivtp-paper", layers_label(model, paper), None, tower_selection(model, batches, paper, None, cache)),
            ("objects", "-", None, label_selection(batches, views, patches, None, True, generator))]
    for budget in budgets:
        config = replace(base, budget=budget)
        runs.append((hivtp, layers_label(model, config), budget, tower_selection(model, batches, config, None, cache)))
        if with_abs:
            runs.append(("hivtp-abs", layers_label(model, paper_layers), budget,
                         tower_selection(model, batches, replace(paper_layers, budget=budget), None, cache)))
        for method in METHODS[1:]:  # the baselines
            method_config, ops = method_setup(method, model, config, generator)
            layers = layers_label(model, method_config) if method == "cls" else "-"
            runs.append((method, layers, budget, tower_selection(model, batches, method_config, ops, cache)))
        runs.append(("oracle", "-", budget, label_selection(batches, views, patches, budget, False, generator)))
    return runs


def shapes_rows(model: Any, processor: Any, label: str, samples: list[Sample], base: HIVTPConfig,
                budgets: tuple[int, ...], seed: int, positions: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every row of one model; `positions` empty: selection metrics only (no decoder)."""
    batches = batches_of(model, processor, samples)
    views = cell_views(model, processor)
    grid = patch_grid(model.config.vision_config)
    rows = []
    if positions:
        full = predict(model, processor, [b.inputs for b in batches])
        rows.append({"model": label, "method": "full", "layers": "-", "budget": None, "tokens_kept": full.visual_tokens,
                     "patches_kept": float(grid[0] * grid[1]), "subject_recall": 1.0, "all_subjects_kept": 1.0,
                     **scored(samples, full.answers), "original_positions": None})
    for method, layers, budget, selection in tqdm(selections(model, batches, views, base, budgets, seed),
                                                  desc=f"fidelity {label}", unit="run", disable=None):
        counts = torch.cat([c for _, c in selection]).float()
        row = {"model": label, "method": method, "layers": layers, "budget": budget, "patches_kept": float(counts.mean()),
               **subject_metrics(samples, kept_sets(batches, selection), views), "original_positions": None}
        for layout in positions:
            predictions = replayed(model, processor, batches, selection, layout)
            if layout == POSITIONS[0]:  # the deployed layout
                row.update(tokens_kept=predictions.visual_tokens, **scored(samples, predictions.answers))
            else:
                row["original_positions"] = scored(samples, predictions.answers)
        rows.append(row)
    return rows


def percent(value: float, ci: tuple[float, float] | list[float]) -> str:
    return f"{value:6.1%} ({ci[0]:.1%}-{ci[1]:.1%})".replace("%", "")


def print_tables(rows: list[dict[str, Any]]) -> None:
    """Selection and accuracy per row; then accuracy per question kind (deployed layout)."""
    decoder = any("accuracy" in r for r in rows)
    head = f"{'model':<18} {'method':<12} {'layers':<6} {'budget':>6} {'patches':>7} {'recall':>7} {'all-kept':>8}"
    if decoder:
        head += f" {'tokens':>6}  {'accuracy % (95% CI)':<21} {'orig. positions %':<21}"
    print(head)
    for r in rows:
        line = (f"{r['model']:<18} {r['method']:<12} {r['layers']:<6} {r['budget'] or '-':>6} {r['patches_kept']:>7.1f} "
                f"{r['subject_recall']:>7.1%} {r['all_subjects_kept']:>8.1%}")
        if "accuracy" in r:
            original = r["original_positions"]
            line += (f" {r['tokens_kept']:>6.1f}  {percent(r['accuracy'], r['accuracy_ci']):<21} "
                     + (percent(original["accuracy"], original["accuracy_ci"]) if original else "-"))
        print(line)
    if not decoder:
        return
    print(f"\naccuracy % per question kind (95% CI), positions renumbered\n{'model':<18} {'method':<12} {'budget':>6} "
          + " ".join(f"{k:<20}" for k in KINDS))
    for r in rows:
        print(f"{r['model']:<18} {r['method']:<12} {r['budget'] or '-':>6} "
              + " ".join(f"{percent(r['per_kind'][k], r['per_kind_ci'][k]) if k in r['per_kind'] else '-':<20}" for k in KINDS))


def plot(rows: list[dict[str, Any]], title: str) -> Any:
    """Accuracy (95% CI) against visual tokens kept, one panel per model, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, name in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == name]
        for method in dict.fromkeys(r["method"] for r in mine if r["budget"] is not None):
            line = sorted((r for r in mine if r["method"] == method), key=lambda r: r["tokens_kept"])
            errors = [[r["accuracy"] - r["accuracy_ci"][0] for r in line], [r["accuracy_ci"][1] - r["accuracy"] for r in line]]
            ax.errorbar([r["tokens_kept"] for r in line], [r["accuracy"] for r in line], yerr=errors, fmt="o",
                        capsize=2, label=method, linestyle="--" if method == "oracle" else "-")
        for marker, method in (("*", "full"), ("s", "hivtp-paper"), ("D", "objects")):
            for r in (r for r in mine if r["method"] == method):
                ax.plot([r["tokens_kept"]], [r["accuracy"]], marker, markersize=9, label=method)
        ax.set(xlabel="visual tokens the LLM saw per image", ylabel="held-out accuracy (95% CI)", title=name, ylim=(0, 1.02))
        ax.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def run_shapes(args: argparse.Namespace, base: HIVTPConfig) -> None:
    from hivtp.demo import shipped_model
    from hivtp.loading import load_llava

    models = [Path(args.model)] if args.model else [shipped_model("llava"), shipped_model("llava_next")]
    samples = held_out(args.questions)
    budgets = args.budgets or BUDGETS
    positions = () if args.selection_only else POSITIONS if args.positions == "both" else POSITIONS[:1]
    rows = []
    for directory in models:
        model, processor = load_llava(directory, device=args.device, hivtp_config=base)
        rows += shapes_rows(model, processor, directory.name, samples, base, budgets, args.seed, positions)
    print(f"hivtp fidelity: {len(samples)} held-out shapes questions, {len(samples) // len(KINDS)} per kind; budget = "
          f"patches kept per image (per view for NeXT); patches = mean kept per view; recall / all-kept: question "
          f"subjects visible in a kept patch, from the tower alone; tokens = mean visual tokens the LLM saw per image")
    print_tables(rows)
    meta = run_metadata(model.device)
    out = args.out  # checked by the command: hivtp.outputs
    write_json(out, {**meta, "task": "shapes", "questions": len(samples), "seed": args.seed, "hivtp": base.to_dict(),
                     "positions": list(positions), "rows": rows})
    if positions:
        title = f"hivtp fidelity, shapes task, {len(samples)} held-out questions, commit {meta['commit']}"
        save_figure(out.with_suffix(".png"), plot(rows, title))
        print(f"wrote {out} and {out.with_suffix('.png')}")
    else:
        print(f"wrote {out}")
