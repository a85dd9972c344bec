"""`hivtp fidelity` shapes-mode protocol pieces on tiny seeded models: where each scene cell shows up in
each view, the oracle and objects selections, replaying a selection to the decoder, Wilson intervals.
The end-to-end runs on the shipped models are in test_shipped_models."""

from __future__ import annotations

import pytest
import torch

from hivtp import HIVTPConfig
from hivtp.fidelity import predict
from hivtp.fidelity_shapes import (
    Replay, batches_of, cell_views, kept_sets, label_selection, replayed, subject_metrics, tower_selection, wilson,
)
from hivtp.runtime.hf import apply
from hivtp.shapes import held_out

SAMPLES = held_out(12)


def test_wilson_intervals() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 400)[0] == 0.0 and 0 < wilson(0, 400)[1] < 0.01
    assert wilson(400, 400)[1] == 1.0 and 0.99 < wilson(400, 400)[0] < 1.0
    for right in range(0, 51):
        lo, hi = wilson(right, 50)
        assert 0 <= lo <= right / 50 <= hi <= 1


def test_cell_views(tiny) -> None:
    """LLaVA: cell c is patch c. NeXT (a 112 px image: base view + two half-padded crops): patch c in the
    base view and exactly one patch in exactly one crop, never a padded one."""
    kind, model, processor = tiny
    views = cell_views(model, processor)
    assert len(views) == 64
    for cell, per_view in enumerate(views):
        assert per_view[0] == {cell}
        if kind == "llava":
            assert len(per_view) == 1
        else:
            assert len(per_view) == 3 and sorted(len(v) for v in per_view[1:]) == [0, 1]
    if kind == "llava_next":  # the crops together show every cell exactly once
        assert sum(len(v[1]) for v in views) + sum(len(v[2]) for v in views) == 64


def test_oracle_and_objects_selections(tiny) -> None:
    _, model, processor = tiny
    batches = batches_of(model, processor, SAMPLES)
    views = cell_views(model, processor)
    generator = torch.Generator().manual_seed(0)
    oracle = label_selection(batches, views, 64, 5, False, generator)
    kept = kept_sets(batches, oracle)
    assert all(len(view) == 5 for per_sample in kept for view in per_sample)
    assert subject_metrics(SAMPLES, kept, views) == {"subject_recall": 1.0, "all_subjects_kept": 1.0}
    objects = kept_sets(batches, label_selection(batches, views, 64, None, True, generator))
    for sample, per_sample in zip(SAMPLES, objects):
        assert per_sample[0] == {t.row * 8 + t.col for t in sample.things}  # nothing but the objects


@torch.inference_mode()
def test_replaying_the_towers_selection_is_pruning_itself(tiny) -> None:
    """The decoder sees exactly what `apply` would keep: same kept patches, same logits' answers."""
    _, model, processor = tiny
    batches = batches_of(model, processor, SAMPLES)
    config = HIVTPConfig(budget=6)
    selection = tower_selection(model, batches, config, None, {})
    direct = predict(apply(model, config), processor, [b.inputs for b in batches])
    replay = replayed(model, processor, batches, selection, "renumbered")
    assert replay.answers == direct.answers and replay.kept_patches == direct.kept_patches
    assert replay.visual_tokens == direct.visual_tokens


def test_replay_refuses_a_selection_of_another_batch() -> None:
    replay = Replay([(torch.zeros(2, 3, dtype=torch.int64), torch.full((2,), 3))])
    with pytest.raises(ValueError, match="replayed selection has 2 views, the batch 5"):
        replay(torch.zeros(5, 64), (8, 8), HIVTPConfig())
