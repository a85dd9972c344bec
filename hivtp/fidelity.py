"""`hivtp fidelity`: how much of the model's accuracy each pruning method keeps, at equal token counts.

Two modes:
- shapes (default, `hivtp.fidelity_shapes`): the shipped tiny LLaVA-1.5 / LLaVA-NeXT, trained on the
  synthetic shapes task (`hivtp.shapes`), answer held-out questions; reported are what each method
  keeps of the question's subjects and the accuracy overall and per question kind.
- agreement (`--images DIR`, any checkpoint): no labels, so the reference is the same model without
  pruning: the share of images whose greedy answer is unchanged, and the mean first-token KL.

Methods, each at budgets of K tokens per image (per crop for NeXT): HIVTP, and three baselines that
keep exactly as many tokens: uniform grid sampling (every P/K-th patch in raster order), random (K
patches drawn per image, seeded), and CLS-attention top-k (VisionZip's dominant tokens: the heads-mean
attention the CLS query pays each patch in the layer that produces the feature layer). Baselines swap
only the scoring / selection steps (`PruneOps`), so they share HIVTP's layout, per crop for NeXT.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from hivtp.config import HIVTPConfig
from hivtp.generate import build_prompt
from hivtp.runtime.hf import HIVTPModel, PruneOps, apply
from hivtp.shapes import KINDS, Sample
from hivtp.timing import run_metadata, write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
METHODS = ("hivtp", "uniform", "random", "cls")


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


def cls_attention(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """queries, keys [L, M, H, N, d] -> [M, P] fp32: softmax attention of the CLS row, mean over layers and heads."""
    q, k = queries[:, :, :, :1].float(), keys.float()  # [L, M, H, 1, d], [L, M, H, N, d]
    attention = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)  # [L, M, H, 1, N]
    return attention.mean(dim=(0, 2))[:, 0, 1:]  # [M, P]: the CLS column dropped


def with_counts(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] indices, every row full -> (indices, counts [M]): the `select_tokens` contract."""
    return indices, torch.full((indices.shape[0],), indices.shape[1], dtype=torch.int64, device=indices.device)


def top_k(scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The budget's highest-scoring patches, ascending."""
    P = scores.shape[1]
    return with_counts(scores.topk(min(config.budget or P, P), dim=1).indices.sort(dim=1).values)  # [M, K]


def method_setup(method: str, model: Any, config: HIVTPConfig, generator: torch.Generator) -> tuple[HIVTPConfig, PruneOps | None]:
    """(config, ops) that make `apply(model, config, ops)` keep `config.budget` tokens chosen by `method`."""
    if method == "hivtp":
        return config, None
    if method == "cls":  # the encoder layer whose output is the feature layer (-2 of 24 -> layer 22)
        layer = model.config.vision_feature_layer % (model.config.vision_config.num_hidden_layers + 1) - 1
        return replace(config, score_layers=(layer,)), PruneOps(score=cls_attention, select=top_k)

    def select(scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig) -> tuple[torch.Tensor, torch.Tensor]:
        M, P = scores.shape
        return with_counts(baseline_indices(method, M, P, config.budget or P, generator).to(scores.device))  # [M, K]

    return config, PruneOps(select=select)


# ---- shapes mode: accuracy on held-out synthetic questions ----

@dataclass
class Predictions:
    answers: list[str]  # greedy one-word answer per sample
    visual_tokens: float  # mean visual tokens per image the LLM saw
    kept_patches: list[set[int]] | None  # per sample, the patches kept in the base image / crop (None: nothing pruned)


def encode(processor: Any, samples: list[Sample], batch_size: int = 50) -> list[Any]:
    """The samples through the processor in left-padded batches: rendered once, reused by every method."""
    return [processor(images=[s.image() for s in chunk], text=[build_prompt(processor, s.question) for s in chunk],
                      padding=True, return_tensors="pt")
            for chunk in (samples[i : i + batch_size] for i in range(0, len(samples), batch_size))]


@torch.inference_mode()
def predict(model: Any, processor: Any, batches: list[Any]) -> Predictions:
    """Answers from the last position's logits for `encode`d batches; `model` may be pruned (`apply`)."""
    result = Predictions([], 0.0, [] if isinstance(model, HIVTPModel) else None)
    for batch in batches:
        inputs = batch.to(model.device)
        b = inputs["input_ids"].shape[0]
        logits = model(**inputs).logits[:, -1]  # [b, V], left padding: the last column is every row's last token
        result.answers += [processor.tokenizer.decode([i]).strip() for i in logits.argmax(-1).tolist()]
        if result.kept_patches is None:
            result.visual_tokens += float((inputs["input_ids"] == model.config.image_token_id).sum())
        else:
            pruned = model.last_pruned
            result.visual_tokens += float(pruned.kept_tokens.sum())
            base = pruned.indices[:: pruned.indices.shape[0] // b]  # [b, Kmax]: each image's first crop
            result.kept_patches += [set(row[row >= 0].tolist()) for row in base]
    result.visual_tokens /= len(result.answers)
    return result


def accuracy(samples: list[Sample], answers: list[str]) -> dict[str, float]:
    """Share of right answers overall and per question kind."""
    right = [s.answer == a for s, a in zip(samples, answers, strict=True)]
    kinds = {kind: [r for r, s in zip(right, samples) if s.kind == kind] for kind in KINDS}
    return {"overall": sum(right) / len(right), **{k: sum(v) / len(v) for k, v in kinds.items() if v}}


# ---- agreement mode: any checkpoint, any images, the full model as reference ----

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
    for base in configs:
        for method in METHODS:
            config, ops = method_setup(method, model, base, generator)
            text, logits = greedy(apply(model, config, ops), processor, max_new_tokens, **inputs)
            result["runs"].append({"budget": base.budget, "method": method, "answer": text,
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


def run_agreement(args: argparse.Namespace, base: HIVTPConfig) -> None:
    from hivtp.bench import MODEL_TYPE_BUDGETS
    from hivtp.demo import shipped_model
    from hivtp.loading import load_image, load_llava

    paths = list_images(args.images)
    images = [load_image(p) for p in paths]
    directory = Path(args.model) if args.model else shipped_model("llava")
    model, processor = load_llava(directory, device=args.device, hivtp_config=base)
    budgets = args.budgets or MODEL_TYPE_BUDGETS[model.config.model_type]  # --budget K arrives as budgets (K,)
    configs = [replace(base, budget=k) for k in budgets]
    generator = torch.Generator().manual_seed(args.seed)
    per_image = [{"image": str(path), **compare_image(model, processor, image, args.prompt, configs, args.max_new_tokens, generator)}
                 for path, image in tqdm(list(zip(paths, images)), desc="fidelity", unit="image")]
    rows = summarize(per_image)
    print(f"hivtp fidelity: {directory.name}, {len(paths)} images, prompt {args.prompt!r}, {args.max_new_tokens} new tokens")
    print(f"{'budget':>7} {'method':<8} {'same answer':>12} {'first-token KL':>15}")
    for row in rows:
        print(f"{row['budget']:>7} {row['method']:<8} {row['same_answer_rate']:>12.1%} {row['mean_first_token_kl']:>15.4f}")
    meta = run_metadata(model.device)
    write_json(args.out, {**meta, "model": directory.name, "prompt": args.prompt, "max_new_tokens": args.max_new_tokens,
                     "seed": args.seed, "hivtp": base.to_dict(), "rows": rows, "per_image": per_image})
    print(f"wrote {args.out}")
