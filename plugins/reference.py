"""HIVTP reference: importance scores and hierarchical token selection in plain torch.

This file is the specification the Triton kernels and the TensorRT plugin are tested against.

Shape legend (used in every comment below):
    B batch (images, or crops for LLaVA-NeXT)   L score layers   H heads   d head dim
    N = 1 + P tokens (CLS first)   P patches = h * w   K kept tokens   Kmax static output width

Scores (paper, Sec. 3): s_j = 1 / (L * H * N) * sum_{l, h, i} A_l[h, i, j], the attention that
token j receives in the middle encoder layers, averaged over layers, heads and *all* query rows
(CLS row included, no renormalisation), CLS column dropped.
Cost of the streaming form: one Q K^T pass, 2 * L * B * H * N^2 * d FLOPs, and L * B * H * N^2 exps;
reads L * B * H * N * d elements of Q and of K each, writes B * P scores. The [B, H, N, N] map never
exists in memory: a chunk of (layer, image, head) maps and query rows at a time, sized to stay in cache.
"""

from __future__ import annotations

import torch

from hivtp.checks import REAL, check_config, check_grid, check_same_device, check_sizes, check_tensor
from hivtp.config import HIVTPConfig, is_int
from hivtp.plugins.geometry import SelectionGeometry, selection_geometry

STAGE_GLOBAL, STAGE_LOCAL, STAGE_FILL, STAGE_NONE = 0, 1, 2, -1


def importance_scores(attentions: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Scores from softmax attention probabilities (the definition).

    attentions: [L, B, H, N, N] (or a list of L tensors [B, H, N, N]) -> scores [B, P] fp32.
    """
    if isinstance(attentions, (list, tuple)):
        if not attentions:
            raise ValueError("attentions is empty: pass the score layers' probabilities [L, B, H, N, N]")
        layers = [check_tensor(f"attentions[{i}]", a, 4, REAL) for i, a in enumerate(attentions)]
        if len({a.shape for a in layers}) != 1:
            raise ValueError(f"attentions' layers differ in shape: {sorted({tuple(a.shape) for a in layers})}")
        check_same_device(**{f"attentions[{i}]": a for i, a in enumerate(layers)})
        attentions = torch.stack(layers)
    probs = check_tensor("attentions", attentions, 5, REAL)
    L, B, H, N, M = probs.shape
    if N != M or N < 2:
        raise ValueError(f"attentions must be square maps [L, B, H, N, N] over CLS + patches (N >= 2), got {tuple(probs.shape)}")
    check_sizes("attentions", probs, layers=L, heads=H)
    received = probs.float().sum(dim=(0, 2, 3))  # [B, N]: sum over layers, heads, query rows
    return received[:, 1:] / (L * H * N)  # [B, P]


MAP_BYTES = 32 << 20  # fp32 logits per chunk: the per-layer [H, N, N] map of one ViT-L/14-336 image (21 MB) fits an L3


def importance_scores_from_qk(queries: torch.Tensor, keys: torch.Tensor, block_size: int = 1024) -> torch.Tensor:
    """Scores streamed from the score layers' Q and K (pre-scale), never materialising [B, H, N, N].

    queries, keys: [L, B, H, N, d] -> scores [B, P] fp32 (not differentiable: selection is discrete).
    The scale d^-0.5 is applied here, once. One Q K^T pass: a block of `block_size` query rows holds its
    whole logits rows, so its softmax is exact and its column sums follow at once. The (layer, image,
    head) maps are batched up to MAP_BYTES of logits: three large ops per chunk, all in one reused
    buffer (logits, softmax in place, column sums accumulated by a matmul with ones), because on a CPU
    each op's threads meet at a barrier, which costs a scheduler slice whenever the machine is shared.
    """
    check_tensor("queries", queries, 5, REAL)
    check_tensor("keys", keys, 5, REAL)
    if queries.shape != keys.shape or queries.shape[3] < 2:
        raise ValueError(f"queries and keys must both be [L, B, H, N, d] with N >= 2, got {tuple(queries.shape)} and {tuple(keys.shape)}")
    check_same_device(queries=queries, keys=keys)
    L, B, H, N, d = queries.shape
    check_sizes("queries", queries, layers=L, heads=H, channels=d)
    if not is_int(block_size) or block_size <= 0:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    maps = L * B * H  # one softmax map per (layer, image, head)
    q = queries.detach().float().reshape(maps, N, d)  # [L*B*H, N, d]
    k = keys.detach().float().reshape(maps, N, d)  # [L*B*H, N, d]
    rows = min(block_size, N)
    pairs = min(maps, max(1, MAP_BYTES // (4 * rows * N)))  # maps per chunk
    received = torch.zeros(maps, 1, N, dtype=torch.float32, device=q.device)  # [L*B*H, 1, N]
    logits = torch.empty(pairs, rows, N, dtype=torch.float32, device=q.device)  # [c, bq, N], reused
    ones = torch.ones(pairs, 1, rows, dtype=torch.float32, device=q.device)  # [c, 1, bq]: sums over rows
    for p0 in range(0, maps, pairs):
        k_t = k[p0 : p0 + pairs].transpose(-1, -2)  # [c, d, N]
        for r0 in range(0, N, rows):
            q_blk = q[p0 : p0 + pairs, r0 : r0 + rows]  # [c, bq, d]
            c, bq = q_blk.shape[:2]
            out = logits[:c, :bq]  # [c, bq, N]
            torch.baddbmm(out, q_blk, k_t, beta=0, alpha=d**-0.5, out=out)  # scaled logits
            torch.softmax(out, -1, out=out)  # in place: one buffer is the chunk's whole working set
            received[p0 : p0 + c].baddbmm_(ones[:c, :, :bq], out)  # += column sums
    return received.view(L, B, H, N).sum((0, 2))[:, 1:] / (L * H * N)  # [B, P]


def rank_tokens(scores: torch.Tensor) -> torch.Tensor:
    """Position of each token in the one total order HIVTP uses everywhere (0 = best).

    Higher score first; NaN after every other value (-inf included); -0.0 equals +0.0; equal scores
    go to the lower index. scores: [B, P] -> ranks [B, P] int64, a permutation of 0..P-1 per row.
    Two stable sorts (least significant key first) give the lexicographic (is_nan, -score, index).
    """
    s = scores.float()
    is_nan = torch.isnan(s)  # [B, P]
    s = torch.where(is_nan | (s == 0), torch.zeros_like(s), s)  # canonical zero; NaN ordered by is_nan
    order = torch.sort(-s, dim=1, stable=True).indices  # [B, P]
    order = order.gather(1, torch.sort(is_nan.gather(1, order).to(torch.uint8), dim=1, stable=True).indices)
    positions = torch.arange(s.shape[1], device=s.device).expand_as(order)  # [B, P]
    return torch.empty_like(order).scatter_(1, order, positions)  # [B, P]


def _global_stage(ranks: torch.Tensor, geo: SelectionGeometry) -> torch.Tensor:
    """Each region's top `region_quota` tokens. ranks [B, P] -> is_global [B, P] bool."""
    B, P = ranks.shape
    key = geo.region_of * P + ranks  # [B, P]: region-major, then by rank
    order = key.argsort(dim=1)  # [B, P]; keys are unique, so no tie order is needed
    region = geo.region_of[order]  # [B, P]
    pos_in_region = torch.arange(P, device=ranks.device) - geo.region_start[region]  # [B, P]
    keep_sorted = pos_in_region < geo.region_quota[region]  # [B, P]
    return torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)  # [B, P]


def _window_best(ranks: torch.Tensor, is_global: torch.Tensor, geo: SelectionGeometry) -> torch.Tensor:
    """Each window's best non-global token (windows of global tokens only yield none). -> [B, P] bool."""
    B, P = ranks.shape
    key = torch.where(is_global, torch.full_like(ranks, P), ranks)  # [B, P]; P = "not a candidate"
    window = geo.window_of.expand(B, P)  # [B, P]
    best = torch.full((B, geo.num_windows), P, dtype=ranks.dtype, device=ranks.device)  # [B, W]
    best = best.scatter_reduce(1, window, key, reduce="amin")  # [B, W]
    return ~is_global & (ranks == best.gather(1, window))  # [B, P]


def _compact(kept: torch.Tensor, stage: torch.Tensor, kmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kept mask [B, P] -> (indices [B, Kmax] ascending then -1, counts [B], stages [B, Kmax])."""
    B, P = kept.shape
    slot = torch.where(kept, kept.cumsum(1) - 1, torch.full_like(stage, kmax))  # [B, P]; kmax = sentinel slot
    positions = torch.arange(P, device=kept.device).expand(B, P)  # [B, P]
    indices = torch.full((B, kmax + 1), -1, dtype=torch.int64, device=kept.device)
    indices = indices.scatter(1, slot, positions)[:, :kmax]  # [B, Kmax]
    stages = torch.full((B, kmax + 1), STAGE_NONE, dtype=torch.int64, device=kept.device)
    stages = stages.scatter(1, slot, stage)[:, :kmax]  # [B, Kmax]
    return indices, kept.sum(1), stages


def select_tokens(
    scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig, return_stages: bool = False
) -> tuple[torch.Tensor, ...]:
    """Hierarchical selection: global stage (top tokens per region) + local stage (best per window).

    scores: [B, P] with P = h * w -> indices [B, Kmax] int64 (kept patch indices ascending, then -1),
    counts [B] int64, and with return_stages also stages [B, Kmax] (STAGE_GLOBAL / _LOCAL / _FILL, -1).
    Paper mode keeps a variable count per image (<= Kmax); budget mode exactly min(budget, P).
    """
    check_tensor("scores", scores, 2, REAL)
    grid, config = check_grid(grid), check_config(config)
    if scores.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not match a {grid[0]}x{grid[1]} patch grid")
    geo = selection_geometry(tuple(grid), config, scores.device)
    B, P = scores.shape
    ranks = rank_tokens(scores)  # [B, P]
    is_global = _global_stage(ranks, geo)  # [B, P]
    is_local = _window_best(ranks, is_global, geo)  # [B, P]
    stage = torch.full_like(ranks, STAGE_FILL).masked_fill(is_local, STAGE_LOCAL).masked_fill(is_global, STAGE_GLOBAL)
    if config.budget is None:
        kept = is_global | is_local  # [B, P]
    else:
        # one priority key: global, then window candidates, then the rest; each class by rank.
        # Taking the first K keeps all global tokens, the K_local best candidates, then fills.
        order = (stage * P + ranks).argsort(dim=1)[:, : geo.kmax]  # [B, K]
        kept = torch.zeros_like(is_global).scatter_(1, order, True)  # [B, P]
    indices, counts, stages = _compact(kept, stage, geo.kmax)
    return (indices, counts, stages) if return_stages else (indices, counts)


def gather_kept(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """features [B, P, D], indices [B, Kmax] (-1 padded) -> [B, Kmax, D], zeros in padded slots."""
    valid = indices >= 0  # [B, Kmax]
    picked = features.gather(1, indices.clamp(min=0)[..., None].expand(-1, -1, features.shape[-1]))
    return picked * valid[..., None].to(picked.dtype)  # [B, Kmax, D]
