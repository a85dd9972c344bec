"""HIVTP scoring and selection in standard ONNX ops: the plugin-free vision graph (`--select-impl onnx`).

For users who cannot build or ship the C++ plugin, and for ONNX runtimes: the same scores and the same
kept tokens as `hivtp.plugins.reference`, written only with ops every ONNX runtime and both TensorRT
10.14 and TensorRT-RTX parse (MatMul, Softmax, ReduceSum, IsNaN, Where, comparisons, And / Or / Not,
TopK, GatherElements, Cast). The reference itself does not export: its total order uses stable sorts
and its window stage a scatter-min, whose ONNX forms (TopK, ScatterElements with reduction) leave tie
order and duplicate indices to the runtime. Here no step ever depends on how a runtime breaks ties:

- The total order is a pairwise table `before[b, i, j]` ("token i ranks before token j") built from
  comparisons only: higher score first; NaN after every other value (-inf included), NaN tokens among
  themselves by index; -0.0 equals +0.0; equal scores by lower index. NaN is detected with IsNaN and
  zeroed before any comparison, so no comparison ever sees a NaN (IEEE `NaN > x` is false, which
  would otherwise silently rank NaN like a tie).
- Counting rows of that table gives exact ranks (integers in fp32, exact below 2^24): the global stage
  keeps a token when fewer than its region's quota of same-region tokens rank before it; the local
  stage keeps the non-global token that no other non-global token of its window ranks before; budget
  mode keeps a token when fewer than K tokens come before it in (stage, rank) order.
- Compaction uses TopK on keys that are all distinct (kept tokens by index, then the rest), so the
  ONNX rule "equal values: lower index first" is never needed.

Cost, P patches per image: the [B, P, P] table (331k entries at P = 576) and, for the scores, the
[B, H, N, N] attention probabilities of each score layer in fp32 (the plugin streams them instead).
Legend: B images (crops for NeXT), L score layers, H heads, N = 1 + P tokens, d head dim, P patches,
Kmax kept slots, D feature width.
"""

from __future__ import annotations

import torch

from hivtp.config import HIVTPConfig
from hivtp.plugins.geometry import selection_layout
from hivtp.plugins.reference import STAGE_FILL, STAGE_GLOBAL, STAGE_LOCAL, gather_kept

SELECT_IMPLS = ("plugin", "onnx")  # hivtp TensorRT plugins (default), or this module's standard ops


def attention_scores(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """queries, keys [L, B, H, N, d] (pre-scale) -> scores [B, P] fp32: the definition, one layer at a time."""
    L, B, H, N, d = queries.shape
    received = torch.zeros(B, N, dtype=torch.float32, device=queries.device)  # [B, N]
    for layer in range(L):
        q, k = queries[layer].float(), keys[layer].float()  # [B, H, N, d]
        probs = torch.softmax((q @ k.transpose(-1, -2)) * d**-0.5, dim=-1)  # [B, H, N, N]
        received = received + probs.sum(dim=(1, 2))  # [B, N]: over heads and query rows
    return received[:, 1:] / (L * H * N)  # [B, P]


def rank_table(scores: torch.Tensor, lower_index: torch.Tensor) -> torch.Tensor:
    """scores [B, P] -> before [B, P, P] bool: token i ranks before token j (the reference's total order).

    lower_index: [P, P] bool constant, i < j.
    """
    is_nan = torch.isnan(scores)  # [B, P]
    s = torch.where(is_nan, torch.zeros_like(scores), scores)  # no comparison below sees a NaN
    s_i, s_j = s[:, :, None], s[:, None, :]  # [B, P, 1], [B, 1, P]
    nan_i, nan_j = is_nan[:, :, None], is_nan[:, None, :]
    same_class = nan_i == nan_j  # both numbers, or both NaN (then both are 0 here: index decides)
    return (~nan_i & nan_j) | (same_class & ((s_i > s_j) | ((s_i == s_j) & lower_index)))  # [B, P, P]


def _count_before(before: torch.Tensor, among: torch.Tensor) -> torch.Tensor:
    """before [B, P, P], among [B or 1, P, P] bool -> [B, P] fp32: how many i (where among) rank before each j."""
    return (before & among).float().sum(dim=1)  # exact: counts < 2^24


class StandardSelection(torch.nn.Module):
    """scores [B, P] fp32, features [B, P, D] -> selected [B, Kmax, D], counts [B] int32, indices [B, Kmax] int32.

    The grid geometry (regions, windows, quotas) is baked in as constant tensors, like the plugin's
    attributes; Kmax is static. Same outputs as `ops.select` (the plugin form), bit for bit.
    """

    def __init__(self, grid: tuple[int, int], config: HIVTPConfig) -> None:
        super().__init__()
        layout = selection_layout(tuple(grid), config)
        self.kmax, self.budget = layout.kmax, config.budget
        region = torch.tensor(layout.region_of)  # [P]
        window = torch.tensor(layout.window_of)  # [P]
        P = region.numel()
        index = torch.arange(P)
        self.register_buffer("lower_index", index[:, None] < index[None, :], persistent=False)  # [P, P]
        self.register_buffer("same_region", region[:, None] == region[None, :], persistent=False)  # [P, P]
        self.register_buffer("same_window", window[:, None] == window[None, :], persistent=False)  # [P, P]
        quota = torch.tensor(layout.region_quota, dtype=torch.float32)[region]  # [P]: quota of each patch's region
        self.register_buffer("quota", quota, persistent=False)
        # compaction keys: kept tokens first, each group by ascending index (all distinct)
        self.register_buffer("descending_index", (P - 1 - index).float(), persistent=False)  # [P]
        self.register_buffer("slots", torch.arange(self.kmax), persistent=False)  # [Kmax]

    def kept_mask(self, scores: torch.Tensor) -> torch.Tensor:
        """scores [B, P] -> kept [B, P] bool."""
        before = rank_table(scores.float(), self.lower_index)  # [B, P, P]
        is_global = _count_before(before, self.same_region[None]) < self.quota  # [B, P]
        candidate = ~is_global  # [B, P]
        beaten = _count_before(before, self.same_window[None] & candidate[:, :, None])  # [B, P]
        is_local = candidate & (beaten == 0)  # [B, P]: the best non-global token of each window
        if self.budget is None:
            return is_global | is_local
        stage = torch.where(is_global, STAGE_GLOBAL, torch.where(is_local, STAGE_LOCAL, STAGE_FILL))  # [B, P]
        stage_i, stage_j = stage[:, :, None], stage[:, None, :]
        ahead = (stage_i < stage_j) | ((stage_i == stage_j) & before)  # [B, P, P]: (stage, rank) order
        return ahead.float().sum(dim=1) < self.kmax  # [B, P]: exactly min(budget, P) tokens

    def forward(self, scores: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kept = self.kept_mask(scores)  # [B, P]
        counts = kept.to(torch.int32).sum(dim=1, dtype=torch.int32)  # [B]
        P = kept.shape[1]
        key = kept.float() * P + self.descending_index  # [B, P]: distinct values
        order = torch.topk(key, self.kmax, dim=1).indices  # [B, Kmax]: kept indices ascending, then the rest
        indices = torch.where(self.slots[None] < counts[:, None], order, -1)  # [B, Kmax]
        return gather_kept(features, indices), counts, indices.to(torch.int32)
