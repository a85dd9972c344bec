"""The synthetic shapes task: deterministic, answers right by construction, every object inside one patch."""

from __future__ import annotations

import numpy as np
import pytest

from hivtp.demo import tiny_tokenizer
from hivtp.shapes import ANSWERS, CELL, COUNTS, HELD_OUT_SEED, KINDS, SIDE, held_out, sample


def test_a_seed_is_a_sample() -> None:
    for seed in (0, 7, HELD_OUT_SEED + 3):
        a, b = sample(seed), sample(seed)
        assert a == b
        assert np.array_equal(np.asarray(a.image()), np.asarray(b.image()))
    assert sample(1) != sample(2)


def test_held_out_is_balanced_and_outside_training_seeds() -> None:
    samples = held_out(50)
    assert [s.kind for s in samples[:5]] == list(KINDS)
    assert all(s.seed >= HELD_OUT_SEED for s in samples)
    assert {k: sum(s.kind == k for s in samples) for k in KINDS} == {k: 10 for k in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_answers_follow_from_the_scene(kind: str) -> None:
    for s in (sample(seed, kind) for seed in range(300)):
        assert s.answer in ANSWERS and 1 <= len(s.things) <= len(COUNTS)
        assert len({(t.row, t.col) for t in s.things}) == len(s.things)
        assert len({(t.colour, t.shape) for t in s.things}) == len(s.things)
        words = s.question.split()
        assert set(s.about) <= set(s.things) and (s.about or s.answer == "no")
        if kind == "count":
            assert s.answer == COUNTS[len(s.things) - 1]
        elif kind == "exist":
            assert (s.answer == "yes") == any(t.colour == words[3] and t.shape == words[4] for t in s.things)
        elif kind == "color":
            (match,) = [t for t in s.things if t.shape == words[4]]  # the named shape is unique
            assert s.answer == match.colour
        elif kind == "shape":
            (match,) = [t for t in s.things if t.colour == words[4]]
            assert s.answer == match.shape
        else:
            (t,) = [t for t in s.things if (t.colour, t.shape) == (words[2], words[3])]
            half = SIDE // CELL // 2
            expected = ("left" if t.col < half else "right") if "left" in words else ("top" if t.row < half else "bottom")
            assert s.answer == expected


def test_every_object_stays_inside_its_patch() -> None:
    """Saturated pixels (objects; the background is grey) lie only in the cells of the scene's things."""
    for s in (sample(seed) for seed in range(100)):
        pixels = np.asarray(s.image()).astype(int)
        coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 60  # [S, S]
        cells = coloured.reshape(SIDE // CELL, CELL, SIDE // CELL, CELL).any(axis=(1, 3))
        assert {(int(r), int(c)) for r, c in zip(*np.nonzero(cells))} == {(t.row, t.col) for t in s.things}


def test_the_tokenizer_knows_every_word() -> None:
    tokenizer = tiny_tokenizer()
    for s in held_out(100):
        ids = tokenizer(f"{s.question} {s.answer}")["input_ids"]
        assert tokenizer.unk_token_id not in ids, s.question
