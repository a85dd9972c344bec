"""Synthetic shapes VQA: the task the shipped tiny LLaVA models are trained and evaluated on.

A scene is 1-4 small coloured shapes on a plain, lightly noisy background, each inside one cell of
the tower's 8x8 patch grid, so objects cover at most 4 of 64 patches and pruning can lose them.
Every question has a one-word answer. Everything is a pure function of an integer seed: training
uses seeds below HELD_OUT_SEED, held-out evaluation seeds from HELD_OUT_SEED up, so no evaluation
scene or question was ever seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (214, 39, 40), "green": (44, 160, 44), "blue": (40, 90, 230), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
COUNTS = ("one", "two", "three", "four")
KINDS = ("count", "exist", "color", "shape", "position")
ANSWERS = (*COUNTS, "yes", "no", *COLOURS, *SHAPES, "left", "right", "top", "bottom")
HELD_OUT_SEED = 1_000_000_000
SIDE, CELL = 112, 14  # image side and patch side of the tiny tower: an 8x8 grid


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    row: int  # patch-grid cell, 0..7
    col: int


@dataclass(frozen=True)
class Sample:
    seed: int
    kind: str
    question: str
    answer: str
    things: tuple[Thing, ...]
    about: tuple[Thing, ...]  # the things the answer depends on (count: all; exist: the pair, if present)

    def image(self) -> Image.Image:
        return render(self.things, np.random.default_rng([self.seed, 1]))


def random_things(rng: np.random.Generator) -> tuple[Thing, ...]:
    """1-4 things in distinct cells with distinct (colour, shape) pairs."""
    grid = SIDE // CELL
    n = int(rng.integers(1, len(COUNTS) + 1))
    cells = rng.choice(grid * grid, n, replace=False)
    pairs = rng.choice(len(COLOURS) * len(SHAPES), n, replace=False)
    colours = list(COLOURS)
    return tuple(
        Thing(colours[p // len(SHAPES)], SHAPES[p % len(SHAPES)], int(c) // grid, int(c) % grid)
        for c, p in zip(cells, pairs)
    )


def render(things: tuple[Thing, ...], rng: np.random.Generator) -> Image.Image:
    """Background grey 90-170 with noise (std 6), each thing 9-12 px, centred in its cell +-1 px."""
    grey = int(rng.integers(90, 171))
    pixels = grey + rng.normal(0.0, 6.0, (SIDE, SIDE, 1))
    image = Image.fromarray(np.clip(pixels.repeat(3, axis=2), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for thing in things:
        size = int(rng.integers(9, 13))
        cx, cy = (thing.col + 0.5) * CELL + rng.integers(-1, 2), (thing.row + 0.5) * CELL + rng.integers(-1, 2)
        half = size / 2
        box = (cx - half, cy - half, cx + half - 1, cy + half - 1)
        fill = COLOURS[thing.colour]
        if thing.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif thing.shape == "square":
            inset = size * 0.08
            draw.rectangle((box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset), fill=fill)
        else:
            draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return image


def _unique(things: tuple[Thing, ...], attribute: str) -> list[Thing]:
    values = [getattr(t, attribute) for t in things]
    return [t for t in things if values.count(getattr(t, attribute)) == 1]


def sample(seed: int, kind: str | None = None) -> Sample:
    """The scene and question of `seed` (kind drawn from the seed unless given)."""
    rng = np.random.default_rng([seed, 0])
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind not in KINDS:
        raise ValueError(f"unknown question kind {kind!r}; expected one of {KINDS}")
    while True:  # colour / shape questions need a thing whose named attribute is unique: redraw until so
        things = random_things(rng)
        if kind in ("color", "shape") and (named := _unique(things, "shape" if kind == "color" else "colour")):
            t = named[int(rng.integers(len(named)))]
            if kind == "color":
                return Sample(seed, kind, f"what color is the {t.shape} ?", t.colour, things, (t,))
            return Sample(seed, kind, f"what shape is the {t.colour} object ?", t.shape, things, (t,))
        if kind == "count":
            return Sample(seed, kind, "how many shapes are there ?", COUNTS[len(things) - 1], things, things)
        if kind == "exist":
            present = {(t.colour, t.shape) for t in things}
            pool = sorted(present) if rng.random() < 0.5 else sorted({(c, s) for c in COLOURS for s in SHAPES} - present)
            colour, shape = pool[int(rng.integers(len(pool)))]
            about = tuple(t for t in things if (t.colour, t.shape) == (colour, shape))
            return Sample(seed, kind, f"is there a {colour} {shape} ?", "yes" if about else "no", things, about)
        if kind == "position":
            t = things[int(rng.integers(len(things)))]
            half = SIDE // CELL // 2
            if rng.random() < 0.5:
                return Sample(seed, kind, f"is the {t.colour} {t.shape} on the left or right ?", "left" if t.col < half else "right", things, (t,))
            return Sample(seed, kind, f"is the {t.colour} {t.shape} at the top or bottom ?", "top" if t.row < half else "bottom", things, (t,))


def held_out(n: int, offset: int = 0) -> list[Sample]:
    """n held-out samples, the kinds in turn (n // 5 or more of each)."""
    return [sample(HELD_OUT_SEED + offset + i, KINDS[i % len(KINDS)]) for i in range(n)]
