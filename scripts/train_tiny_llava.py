"""Train the shipped tiny LLaVA-1.5 / LLaVA-NeXT on the synthetic shapes task (hivtp.shapes).

Two stages, because end-to-end training from scratch collapses the tower to one vector per image:
  1. the CLIP tower alone, with dense supervision on its feature layer (hidden_states[-2]): a linear
     head per patch predicts that cell's colour, shape, row and column; a head on CLS the count.
  2. tower frozen; projector + Llama decoder learn to answer (loss on the answer word and </s>),
     with the question before the image, so the image tokens can see it, plus two dense losses on
     the image tokens (training-only linear heads / the model's own lm_head):
     - token loss, on each image token's decoder state after layer TOKEN_LAYER: does its patch hold
       a thing the question is about; from step --cell-loss-from on, also the patch's row and column;
     - answer loss (--answer-loss): the answer word predicted at the subject's own image tokens.
LLaVA-1.5 = two runs: from scratch with the token loss (subject first, cells from step 3200), then
a continuation (--init) that adds the answer loss. What each piece is for, from runs here (one run
each; small-model training is noisy):
- no token loss: the decoder did not bind a named colour or shape to a patch in 1000 steps (count was
  learned, the other kinds stayed at chance);
- subject part: binding appeared at about step 800; but left / right stayed near 60% while top /
  bottom was perfect (rows can be read off the raster order of the sequence, columns only off the
  features); row / column from step 0 instead: no binding by step 1500; row / column added at step
  3200 or a 1500-step continuation with them: left / right still near 60%;
- answer loss: the subject tokens learned to answer, and then within about 400 steps so did the last
  token: position went from 78% to 99% (training batches).
The training-only heads are dropped at export. Selection depends on the tower alone, and the tower is
frozen before the decoder ever sees a question, so nothing here is tuned to any selection method.
LLaVA-NeXT starts from the trained LLaVA-1.5 (same tower, projector and decoder; the newline
embedding is new) and runs stage 2 only, on NeXT's own anyres inputs. No pruning is in stages 1-2.

Stage 3 (--drop-steps, a continuation of a trained checkpoint of the same kind): method-agnostic random
token dropping, so the decoder has seen pruned sequences. Per step a random budget (all patches with
probability --drop-full, else log-uniform in [2, P]; per crop for NeXT), per image / crop a uniformly
random kept set of that size (one budget per step: equal lengths, no padding to pay for); the sequence
is built by `hivtp.runtime.hf.prune_inputs`, i.e. exactly the deployed layout (kept tokens
compacted, positions renumbered, NeXT newlines for rows that keep a token). Tower frozen; projector +
decoder learn from the answer loss only. No selection method is in the loop: the kept sets ignore the
image and the question.

Resumable: `--work` holds checkpoint.pt (written atomically every --save-every steps) and train.log;
rerunning the same command continues where it stopped. Each step's data (and stage 3's kept sets) is a
function of (seed, stage, step), so a resumed run sees the same data as an uninterrupted one. train.log
and the model card record wall-clock and process CPU time (the CPUs may be shared: CPU time is the
cost, wall-clock what it took here), summed over resumed runs.

The exact commands of the shipped models, in order, are in their cards (hivtp/data/models/*/README.md).
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: waiting threads sleep instead of spinning. On CPUs shared with other work,
# spinning threads wait for a partner that is not scheduled: 3-4x the CPU time and wall-clock per step here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from hivtp.config import HIVTPConfig
from hivtp.demo import tiny_config, tiny_processor, tiny_tokenizer
from hivtp.fidelity import accuracy, baseline_indices, encode, predict, with_counts
from hivtp.fidelity_shapes import no_scores
from hivtp.generate import build_prompt
from hivtp.loading import MODEL_CLASSES, checkpoint_type
from hivtp.runtime.hf import PruneOps, apply, patch_grid
from hivtp.shapes import CELL, COLOURS, HELD_OUT_SEED, KINDS, SHAPES, SIDE, held_out, sample
from hivtp.timing import git_commit

GRID = SIDE // CELL
TEXT_HIDDEN, TEXT_LAYERS = 128, 4
TOKEN_LAYER = 2  # decoder hidden_states index the stage-2 token heads read (after 2 of 4 layers)


class Heads(nn.Module):
    """Training-only heads. Stage 1 on the tower's feature layer: per patch colour / shape / row / col,
    count on CLS. Stage 2 on the decoder's image tokens: subject of the question or not, row, column."""

    def __init__(self, width: int, text_width: int) -> None:
        super().__init__()
        self.token_subject = nn.Linear(text_width, 1)
        self.colour = nn.Linear(width, len(COLOURS) + 1)  # 0: no object
        self.shape = nn.Linear(width, len(SHAPES) + 1)
        self.row = nn.Linear(width, GRID)
        self.col = nn.Linear(width, GRID)
        self.count = nn.Linear(width, 5)
        self.token_row = nn.Linear(text_width, GRID)
        self.token_col = nn.Linear(text_width, GRID)

    def loss(self, hidden: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """hidden [B, 1 + P, Dv]; labels: colour / shape [B, P], count [B]."""
        cls, patches = hidden[:, 0], hidden[:, 1:]
        ce = nn.functional.cross_entropy
        B, P = labels["colour"].shape
        cells = torch.arange(P).expand(B, P)
        return (ce(self.colour(patches).flatten(0, 1), labels["colour"].flatten())
                + ce(self.shape(patches).flatten(0, 1), labels["shape"].flatten())
                + ce(self.row(patches).flatten(0, 1), (cells // GRID).flatten())
                + ce(self.col(patches).flatten(0, 1), (cells % GRID).flatten())
                + ce(self.count(cls), labels["count"]))

    def token_loss(self, hidden: torch.Tensor, image_tokens: torch.Tensor, subject: torch.Tensor,
                   rows: torch.Tensor, cols: torch.Tensor, cells: bool) -> torch.Tensor:
        """hidden [B, T, D] decoder states; image_tokens [B, T] bool; subject [B, T_img] in {0, 1};
        rows, cols [T_img] patch row / column of each image token (-100: a NeXT newline); cells: add them."""
        B, T_img = subject.shape
        h = hidden[image_tokens].view(B, T_img, -1)  # [B, T_img, D]
        loss = nn.functional.binary_cross_entropy_with_logits(self.token_subject(h).squeeze(-1), subject)
        if cells:
            ce = nn.functional.cross_entropy
            loss = loss + ce(self.token_row(h).flatten(0, 1), rows.repeat(B), ignore_index=-100)
            loss = loss + ce(self.token_col(h).flatten(0, 1), cols.repeat(B), ignore_index=-100)
        return loss


def step_seeds(args: argparse.Namespace, stage: int, step: int) -> range:
    first = (args.seed * 10 + stage) * 10**7 + step * args.batch
    assert first + args.batch < HELD_OUT_SEED, "training seeds must stay below the held-out range"
    return range(first, first + args.batch)


def dense_labels(samples) -> dict[str, torch.Tensor]:
    colours, shapes = list(COLOURS), list(SHAPES)
    colour = torch.zeros(len(samples), GRID * GRID, dtype=torch.long)
    shape = torch.zeros_like(colour)
    for b, s in enumerate(samples):
        for t in s.things:
            colour[b, t.row * GRID + t.col] = colours.index(t.colour) + 1
            shape[b, t.row * GRID + t.col] = shapes.index(t.shape) + 1
    return {"colour": colour, "shape": shape, "count": torch.tensor([len(s.things) for s in samples])}


def token_targets(samples, next_layout: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(subject [B, T_img], rows [T_img], cols [T_img]) for the image tokens in sequence order.

    LLaVA: 64 patches in raster order. NeXT (one real crop): the base image's 64, then the crop's
    8 rows of 8 patches, each row followed by its newline token (never a subject; row / col -100)."""
    patches = torch.zeros(len(samples), GRID, GRID)
    for b, s in enumerate(samples):
        for t in s.about:
            patches[b, t.row, t.col] = 1.0
    cells = torch.arange(GRID * GRID)
    rows, cols = cells // GRID, cells % GRID
    if not next_layout:
        return patches.flatten(1), rows, cols
    newline = torch.full((GRID, 1), -100)
    crop_rows = torch.cat([rows.view(GRID, GRID), newline], dim=1).flatten()  # [72]
    crop_cols = torch.cat([cols.view(GRID, GRID), newline], dim=1).flatten()
    crop_subject = torch.cat([patches, torch.zeros(len(samples), GRID, 1)], dim=2).flatten(1)  # [B, 72]
    return (torch.cat([patches.flatten(1), crop_subject], dim=1), torch.cat([rows, crop_rows]), torch.cat([cols, crop_cols]))


def subject_answer_loss(logits: torch.Tensor, image_tokens: torch.Tensor, subject: torch.Tensor,
                        answers: torch.Tensor) -> torch.Tensor:
    """The answer word predicted at the subject's own image tokens (their logits [B, T, V], from the
    lm_head like any position): the token that holds the thing computes the answer, the last token
    only has to find it. answers [B] token ids; rows with no subject (exist: no; count, masked by the
    caller: its answer is no one token's) add nothing."""
    B, T_img = subject.shape
    at_images = logits[image_tokens].view(B, T_img, -1)[subject > 0]  # [S, V] for S subject tokens
    rows = (subject > 0).nonzero()[:, 0]  # [S] which sample each subject token belongs to
    return nn.functional.cross_entropy(at_images, answers[rows]) if len(rows) else logits.sum() * 0.0


def question_batch(processor, samples) -> dict[str, torch.Tensor]:
    """Prompt + answer word + </s>, left padded; labels on the last two tokens only."""
    texts = [f"{build_prompt(processor, s.question)} {s.answer}" for s in samples]
    inputs = processor(images=[s.image() for s in samples], text=texts, padding=True, return_tensors="pt")
    B = inputs["input_ids"].shape[0]
    eos = torch.full((B, 1), processor.tokenizer.eos_token_id)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], eos], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(eos)], dim=1)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -2:] = inputs["input_ids"][:, -2:]
    inputs["labels"] = labels
    return dict(inputs)


def drop_budget(generator: torch.Generator, patches: int, full_share: float) -> int:
    """A random token budget: every patch with probability full_share, else log-uniform in [2, P]."""
    u, full = torch.rand(2, generator=generator).tolist()
    return patches if full < full_share else round(math.exp(math.log(2) + u * (math.log(patches) - math.log(2))))


def random_drop_model(model, args: argparse.Namespace, step: int):
    """The model wrapped so that its forward sees its images randomly pruned, in the deployed layout.

    One budget per step (per crop for NeXT): every row then has the same length, so no row pays
    for another's padding."""
    generator = torch.Generator().manual_seed((args.seed * 10 + 3) * 10**7 + step)
    budget = drop_budget(generator, math.prod(patch_grid(model.config.vision_config)), args.drop_full)

    def random_drop(scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """A `Selector` keeping `budget` patches of every image / crop, drawn uniformly (ascending)."""
        return with_counts(baseline_indices("random", *scores.shape, budget, generator))  # [C, k], [C]

    return apply(model, HIVTPConfig(score_layers=(0,)), PruneOps(score=no_scores, select=random_drop))


def lr_at(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class Log:
    """train.log lines stamped with wall-clock and process CPU minutes, both summed over resumed runs."""

    def __init__(self, path: Path) -> None:
        self.path, self.start, self.cpu_start = path, time.time(), time.process_time()
        self.wall_before = self.cpu_before = 0.0  # seconds spent by the runs this one resumes

    def seconds(self) -> tuple[float, float]:
        """(wall, CPU) seconds of training so far."""
        return (self.wall_before + time.time() - self.start, self.cpu_before + time.process_time() - self.cpu_start)

    def __call__(self, message: str) -> None:
        wall, cpu = self.seconds()
        line = f"[wall {wall / 60:6.1f} min | cpu {cpu / 60:6.1f} min] {message}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def save_checkpoint(work: Path, state: dict, log: Log) -> None:
    tmp = work / "checkpoint.pt.tmp"
    state["wall_s"], state["cpu_s"] = log.seconds()
    torch.save(state, tmp)
    os.replace(tmp, work / "checkpoint.pt")


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = Log(work / "train.log")
    tokenizer = tiny_tokenizer()
    processor = tiny_processor(args.kind, tokenizer)
    config = tiny_config(args.kind, len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), TEXT_HIDDEN, TEXT_LAYERS)
    torch.manual_seed(args.seed)
    model = MODEL_CLASSES[args.kind](config)
    heads = Heads(config.vision_config.hidden_size, TEXT_HIDDEN)
    tower = model.model.vision_tower
    stage, step, optim_state, commit = (2 if args.init else 1), 0, None, git_commit()  # the code that trains
    if args.init:  # a LLaVA-1.5 (NeXT's newline embedding starts new) or a checkpoint of the same kind
        init_kind = checkpoint_type(args.init)
        if init_kind not in ("llava", args.kind):
            raise SystemExit(f"train_tiny_llava: error: cannot start a {args.kind} model from a {init_kind} checkpoint")
        init = MODEL_CLASSES[init_kind].from_pretrained(args.init).state_dict()
        missing, unexpected = model.load_state_dict(init, strict=False)
        assert not unexpected and all("image_newline" in k for k in missing), (missing, unexpected)
    checkpoint = work / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        stage, step, optim_state, commit = state["stage"], state["step"], state["optim"], state["commit"]
        log.wall_before, log.cpu_before = state["wall_s"], state["cpu_s"]
        log(f"resumed at stage {stage} step {step}")
    log(f"{args.kind}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {args.threads} threads")

    while stage <= 3:
        steps = {1: args.stage1_steps, 2: args.stage2_steps, 3: args.drop_steps}[stage]
        tower.requires_grad_(stage == 1)
        if stage == 1:
            params = list(tower.parameters()) + list(heads.parameters())
        elif stage == 2:
            token_heads = [heads.token_subject, heads.token_row, heads.token_col]
            params = [p for p in model.parameters() if p.requires_grad] + [p for h in token_heads for p in h.parameters()]
        else:
            params = [p for p in model.parameters() if p.requires_grad]  # projector + decoder (+ NeXT newline)
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
        if optim_state is not None:
            optimizer.load_state_dict(optim_state)
            optim_state = None
        model.train()
        running: dict[str, list[float]] = {}
        tick = time.time()
        while step < steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, args.lr)
            samples = [sample(seed) for seed in step_seeds(args, stage, step)]
            if stage == 1:
                pixels = processor.image_processor([s.image() for s in samples], return_tensors="pt")["pixel_values"]
                hidden = tower(pixels, output_hidden_states=True).hidden_states[config.vision_feature_layer]
                loss = heads.loss(hidden, dense_labels(samples))
                running.setdefault("feature_var", []).append(float(hidden[:, 1:].detach().var(dim=1).mean()))
            elif stage == 3:
                inputs = question_batch(processor, samples)
                dropped = random_drop_model(model, args, step)
                out = dropped(**inputs)
                loss = out.loss
                running.setdefault("visual_tokens", []).append(float(dropped.last_pruned.kept_tokens.float().mean()))
            else:
                inputs = question_batch(processor, samples)
                out = model(**inputs, output_hidden_states=args.token_loss > 0)
                loss = out.loss
                image_tokens = inputs["input_ids"] == config.image_token_id
                targets = token_targets(samples, next_layout=args.kind == "llava_next")
                if args.token_loss > 0:
                    cells = step >= args.cell_loss_from
                    token = heads.token_loss(out.hidden_states[TOKEN_LAYER], image_tokens, *targets, cells=cells)
                    running.setdefault("token_loss", []).append(token.item())
                    loss = loss + args.token_loss * token
                if args.answer_loss > 0:
                    single = torch.tensor([s.kind != "count" for s in samples]).unsqueeze(1)  # [B, 1]
                    answer = subject_answer_loss(out.logits, image_tokens, targets[0] * single, inputs["input_ids"][:, -2])
                    running.setdefault("answer_loss", []).append(answer.item())
                    loss = loss + args.answer_loss * answer
            if stage >= 2:
                guess = out.logits[:, -3].argmax(-1)  # the position that predicts the answer word
                for s, g, a in zip(samples, guess.tolist(), inputs["input_ids"][:, -2].tolist()):
                    running.setdefault(s.kind, []).append(float(g == a))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            running.setdefault("loss", []).append(loss.item())
            step += 1
            if step % args.log_every == 0 or step == steps:
                rate = (time.time() - tick) / len(running["loss"])
                stats = " ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in running.items())
                log(f"stage {stage} step {step}/{steps} {stats} ({rate:.2f} s/step, {rate * (steps - step) / 60:.0f} min left)")
                running, tick = {}, time.time()
            if step % args.save_every == 0 or step == steps:
                save_checkpoint(work, {"stage": stage, "step": step, "model": model.state_dict(), "commit": commit,
                                       "heads": heads.state_dict(), "optim": optimizer.state_dict()}, log)
            if stage >= 2 and args.eval_every and step % args.eval_every == 0:
                model.eval()
                probe = held_out(100, offset=10**8)  # a held-out slice apart from the final evaluation's
                scores = accuracy(probe, predict(model, processor, encode(processor, probe)).answers)
                log(f"probe {json.dumps({k: round(v, 3) for k, v in scores.items()})}")
                model.train()
        stage, step = stage + 1, 0
        save_checkpoint(work, {"stage": stage, "step": 0, "model": model.state_dict(), "commit": commit,
                               "heads": heads.state_dict(), "optim": None}, log)

    model.eval()
    samples = held_out(args.eval_questions)
    scores = accuracy(samples, predict(model, processor, encode(processor, samples)).answers)
    log("held-out accuracy: " + " ".join(f"{k} {v:.1%}" for k, v in scores.items()))
    wall, cpu = log.seconds()
    log(f"training took {wall / 60:.1f} min wall-clock, {cpu / 60:.1f} min process CPU time ({args.threads} threads)")
    export(model, processor, args, scores, Path(args.out), commit, {"wall_min": round(wall / 60, 1), "cpu_min": round(cpu / 60, 1)})
    log(f"wrote {args.out}")


def export(model, processor, args: argparse.Namespace, scores: dict[str, float], out: Path, commit: str,
           time_taken: dict[str, float]) -> None:
    """Weights, tokenizer, processor and model card, swapped in atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    earlier = json.loads((Path(args.init) / "training.json").read_text()) if args.init else {"commands": []}
    commands = [*earlier["commands"], "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])]
    # times per command; None where an earlier record did not keep them (before they were recorded)
    times = [*earlier.get("times", [None] * len(earlier["commands"])), {**time_taken, "threads": args.threads}]
    record = {"kind": args.kind, "held_out_questions": args.eval_questions, "held_out_accuracy": scores,
              "commands": commands, "times": times, "commit": commit, "seed": args.seed,
              "data": {"train_seeds": [f"{first}..{last}" for first, last in seed_ranges(args)],
                       "held_out_seeds": f"{HELD_OUT_SEED}..{HELD_OUT_SEED + args.eval_questions - 1}"}}
    (tmp / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    (tmp / "README.md").write_text(model_card(record, args))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def seed_ranges(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(first, last) training seed of each stage this command ran."""
    stages = [(1, args.stage1_steps)] if not args.init else []
    stages += [(2, args.stage2_steps), (3, args.drop_steps)]
    return [(step_seeds(args, stage, 0).start, step_seeds(args, stage, steps - 1).stop - 1) for stage, steps in stages if steps]


def recipe_text(args: argparse.Namespace) -> str:
    """What the command did, stage by stage (the card's Recipe line)."""
    parts = [f"stage 1: CLIP tower with dense per-patch heads, {args.stage1_steps} steps"
             if not args.init else f"initialised from `{args.init}` (tower, projector, decoder)"]
    if args.stage2_steps:
        parts.append(
            f"stage 2: tower frozen, projector + decoder on the questions (question before the image), "
            f"{args.stage2_steps} steps, batch {args.batch}, AdamW, peak lr {args.lr}, cosine, plus a token loss "
            f"(weight {args.token_loss}): training-only linear heads on each image token's decoder state after "
            f"layer {TOKEN_LAYER} predict whether its patch holds a thing the question is about, and from step "
            f"{args.cell_loss_from} on its row and column; answer loss (weight {args.answer_loss}): the answer word "
            f"predicted at the subject's own image tokens; no pruning")
    if args.drop_steps:
        parts.append(
            f"stage 3: tower frozen, projector + decoder on the questions with method-agnostic random token "
            f"dropping, {args.drop_steps} steps, batch {args.batch}, AdamW, peak lr {args.lr}, cosine: per step "
            f"all patches with probability {args.drop_full}, else a budget log-uniform in [2, 64] (per crop for "
            f"NeXT), per image / crop the kept patches drawn uniformly; sequences built by `prune_inputs` in the deployed layout "
            f"(kept tokens compacted, positions renumbered); answer loss only; no selection method in the loop")
    return "; ".join(parts) + ". The tower, which alone decides what HIVTP and the baselines keep, is frozen after stage 1"


def model_card(record: dict, args: argparse.Namespace) -> str:
    name = "LLaVA-1.5" if args.kind == "llava" else "LLaVA-NeXT"
    rows = "\n".join(f"| {k} | {v:.1%} |" for k, v in record["held_out_accuracy"].items())
    times = "\n".join(
        f"  - command {i + 1}: " + (f"{t['wall_min']} min wall-clock, {t['cpu_min']} min process CPU time "
                                     f"({t['threads']} threads, on a machine shared with other work)"
                                     if t else "not recorded (trained before times were kept)")
        for i, t in enumerate(record["times"]))
    return f"""# Tiny {name} trained on synthetic shapes (hivtp)

A real `{MODEL_CLASSES[args.kind].__name__}` checkpoint small enough to ship in the repository, so that
`hivtp generate`, `hivtp viz` and `hivtp fidelity` answer real questions offline. It knows nothing but
the synthetic shapes task of `hivtp/shapes.py`.

- **Model:** CLIP vision tower (10 layers, hidden 64, 112 px, 14 px patches: CLS + 8x8), 2-layer MLP
  projector, Llama decoder ({TEXT_LAYERS} layers, hidden {TEXT_HIDDEN}); word-level tokenizer; processor
  with the chat template `USER: question <image> ASSISTANT:` (the question before the image).
- **Data:** 1-4 coloured shapes (red/green/blue/yellow circle/square/triangle), each inside one patch,
  on a noisy grey background; questions of kinds {', '.join(KINDS)}; one-word answers. Training seeds
  < {HELD_OUT_SEED}, held-out seeds from {HELD_OUT_SEED} on.
- **Recipe** (of the last command below; the earlier ones trained the model it starts from, see
  scripts/train_tiny_llava.py): {recipe_text(args)}.
- **Commands** (in order; each `--init` is the previous one's output):
{chr(10).join(f"  - `{c}`" for c in record["commands"])}
- **Training data of the last command:** seeds {", ".join(record["data"]["train_seeds"])} (`hivtp.shapes.sample`).
- **Time** (`train.log`; wall-clock and process CPU time, summed over resumed runs):
{times}
- **Code commit:** {record['commit']}

## Held-out accuracy ({record['held_out_questions']} questions, full model, no pruning)

| kind | accuracy |
|---|---|
{rows}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(MODEL_CLASSES), required=True)
    parser.add_argument("--out", required=True, help="directory of the exported checkpoint")
    parser.add_argument("--work", required=True, help="directory of checkpoint.pt and train.log (resume from there)")
    parser.add_argument("--init", help="trained checkpoint to start from (skips stage 1): a LLaVA-1.5, or one of --kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--stage1-steps", type=int, default=1500)
    parser.add_argument("--stage2-steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--token-loss", type=float, default=1.0, help="weight of the stage-2 token loss (0: off)")
    parser.add_argument("--answer-loss", type=float, default=0.0, help="weight of the stage-2 answer-at-subject loss (0: off)")
    parser.add_argument("--cell-loss-from", type=int, default=3200, help="stage-2 step from which the token loss adds row / column")
    parser.add_argument("--drop-steps", type=int, default=0, help="stage-3 steps of random token dropping (0: none)")
    parser.add_argument("--drop-full", type=float, default=0.2, help="stage 3: share of steps that keep every patch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=500, help="stage-2 / 3 steps between held-out probes (0: none)")
    parser.add_argument("--eval-questions", type=int, default=1000)
    return parser


def main() -> None:
    train(build_parser().parse_args())


if __name__ == "__main__":
    main()
