"""`hivtp fidelity`: how often pruning changes the model's answer, on any folder of images.

No dataset download: the reference is the same model without pruning. For each budget, HIVTP and two
baselines that keep the same number of tokens (uniform spatial sampling: every P/K-th patch in raster
order; random: K patches drawn per image with a seeded generator) answer greedily; reported are the
share of images whose answer equals the full model's, and the mean first-token KL(full || pruned).
The baselines swap only the selection step (`PruneOps`), so they keep HIVTP's count and layout, per
crop for LLaVA-NeXT.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from hivtp.config import HIVTPConfig
from hivtp.generate import build_prompt
from hivtp.shapes import KINDS, Sample
from hivtp.runtime.hf import PruneOps, apply
from hivtp.timing import run_metadata, write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
METHODS = ("hivtp", "uniform", "random")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return paths


def baseline_indices(method: str, images: int, patches: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """[M, min(k, P)] ascending patch indices: every P/K-th patch ('uniform') or K drawn at random ('random')."""
    k = min(k, patches)
    if method == "uniform":
        row = ((torch.arange(k) + 0.5) * patches / k).long()  # [k] raster-order stride P/K
        return row.expand(images, k).clone()
    if method == "random":
        return torch.stack([torch.randperm(patches, generator=generator)[:k].sort().values for _ in range(images)])
    raise ValueError(f"unknown baseline {method!r}; expected 'uniform' or 'random'")


def baseline_ops(method: str, generator: torch.Generator) -> PruneOps:
    """Scoring as usual, but the kept patches chosen by a baseline: same count, same layout as HIVTP."""

    def select(scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig) -> tuple[torch.Tensor, torch.Tensor]:
        M, P = scores.shape
        indices = baseline_indices(method, M, P, config.budget, generator).to(scores.device)  # [M, K]
        return indices, torch.full((M,), indices.shape[1], dtype=torch.int64, device=scores.device)

    return PruneOps(select=select)


def greedy(model: Any, processor: Any, max_new_tokens: int, **inputs: Any) -> tuple[str, torch.Tensor]:
    """(answer text, first-token logits [V] fp32) of one greedy generation."""
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    new_tokens = out.sequences[0, -len(out.logits):]  # stock generate prepends input_ids, embeds-only does not
    return processor.decode(new_tokens, skip_special_tokens=True).strip(), out.logits[0][0].float()


def kl_divergence(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """KL(p_reference || p) in nats, from logits [V]."""
    ref = torch.log_softmax(reference_logits, dim=-1)
    return float((ref.exp() * (ref - torch.log_softmax(logits, dim=-1))).sum())


@torch.inference_mode()
def compare_image(model: Any, processor: Any, image: Image.Image, prompt: str, configs: list[HIVTPConfig],
                  max_new_tokens: int, generator: torch.Generator) -> dict[str, Any]:
    """One image: the full answer, then per (budget, method) whether the answer matches and the KL."""
    inputs = processor(images=[image], text=[build_prompt(processor, prompt)], return_tensors="pt").to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    full_text, full_logits = greedy(model, processor, max_new_tokens, **inputs)
    result: dict[str, Any] = {"full": full_text, "runs": []}
    for config in configs:
        for method in METHODS:
            ops = None if method == "hivtp" else baseline_ops(method, generator)
            text, logits = greedy(apply(model, config, ops), processor, max_new_tokens, **inputs)
            result["runs"].append({"budget": config.budget, "method": method, "answer": text,
                                   "same_answer": text == full_text, "first_token_kl": kl_divergence(full_logits, logits)})
    return result


def summarize(per_image: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (budget, method): share of same answers and mean first-token KL over the images."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for image in per_image:
        for run in image["runs"]:
            groups.setdefault((run["budget"], run["method"]), []).append(run)
    return [{"budget": budget, "method": method, "images": len(runs),
             "same_answer_rate": sum(r["same_answer"] for r in runs) / len(runs),
             "mean_first_token_kl": sum(r["first_token_kl"] for r in runs) / len(runs)}
            for (budget, method), runs in groups.items()]


@torch.inference_mode()
def predict(model: Any, processor: Any, samples: list[Sample], batch_size: int = 50) -> list[str]:
    """Greedy one-word answers [len(samples)] from the last position's logits; `model` may be pruned (`apply`)."""
    answers: list[str] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        inputs = processor(images=[s.image() for s in chunk], text=[build_prompt(processor, s.question) for s in chunk],
                           padding=True, return_tensors="pt").to(model.device)
        logits = model(**inputs).logits[:, -1]  # [b, V], left padding: the last column is every row's last token
        answers += processor.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
    return answers


def accuracy(samples: list[Sample], answers: list[str]) -> dict[str, float]:
    """Share of right answers overall and per question kind."""
    right = [s.answer == a for s, a in zip(samples, answers, strict=True)]
    kinds = {kind: [r for r, s in zip(right, samples) if s.kind == kind] for kind in KINDS}
    return {"overall": sum(right) / len(right), **{k: sum(v) / len(v) for k, v in kinds.items() if v}}


def run_fidelity(args: argparse.Namespace) -> None:
    from hivtp.bench import MODEL_TYPE_BUDGETS, PRESET_BUDGETS
    from hivtp.cli import config_from
    from hivtp.demo import build_tiny_llava
    from hivtp.loading import load_image, load_llava

    paths = list_images(args.images)
    images = [load_image(p) for p in paths]
    base = config_from(args)
    with tempfile.TemporaryDirectory(prefix="hivtp-demo-") as scratch:
        model, processor = load_llava(args.model or build_tiny_llava(Path(scratch), kind="llava"), device=args.device)
    label = Path(args.model).name if args.model else "demo-tiny-llava"
    defaults = MODEL_TYPE_BUDGETS[model.config.model_type] if args.model else PRESET_BUDGETS["tiny"]
    budgets = args.budgets or ((base.budget,) if base.budget else defaults)
    configs = [replace(base, budget=k) for k in budgets]
    generator = torch.Generator().manual_seed(args.seed)
    per_image = [{"image": str(path), **compare_image(model, processor, image, args.prompt, configs, args.max_new_tokens, generator)}
                 for path, image in tqdm(list(zip(paths, images)), desc="fidelity", unit="image")]
    rows = summarize(per_image)
    weights = "checkpoint weights" if args.model else "random weights (demo model: the numbers only show the pipeline runs)"
    print(f"hivtp fidelity: {label} ({weights}), {len(paths)} images, prompt {args.prompt!r}, {args.max_new_tokens} new tokens")
    print(f"{'budget':>7} {'method':<8} {'same answer':>12} {'first-token KL':>15}")
    for row in rows:
        print(f"{row['budget']:>7} {row['method']:<8} {row['same_answer_rate']:>12.1%} {row['mean_first_token_kl']:>15.4f}")
    meta = run_metadata(model.device)
    out = Path(args.out or Path("results/fidelity") / f"{label}-{meta['date_utc'][:10]}.json")
    write_json(out, {**meta, "model": label, "weights": weights, "prompt": args.prompt, "max_new_tokens": args.max_new_tokens,
                     "seed": args.seed, "hivtp": base.to_dict(), "rows": rows, "per_image": per_image})
    print(f"wrote {out}")


def add_parser(commands: Any) -> None:
    """Register `hivtp fidelity` on the CLI's subparsers."""
    from hivtp.bench import comma_ints
    from hivtp.cli import add_config_arguments, positive_int

    fid = commands.add_parser("fidelity", help="same-answer rate and first-token KL of pruned vs full model")
    fid.add_argument("--images", required=True, help="folder of images (.png/.jpg/...)")
    fid.add_argument("--model", help="local HF LLaVA-1.5 / LLaVA-NeXT checkpoint directory (default: built-in tiny demo)")
    fid.add_argument("--prompt", default="what is in the picture ?")
    fid.add_argument("--budgets", type=comma_ints, help="budgets per image (per crop for NeXT); default per model")
    fid.add_argument("--max-new-tokens", type=positive_int, default=16)
    fid.add_argument("--seed", type=int, default=0, help="seed of the random-selection baseline")
    fid.add_argument("--device", default="cpu")
    fid.add_argument("--out", help="JSON path (default: results/fidelity/<model>-<date>.json)")
    add_config_arguments(fid)
    fid.set_defaults(run=run_fidelity)
