"""The plugin-free vision graph (`--select-impl onnx`): selection = the reference bit for bit (ties, NaN, -0.0,
+-inf, both modes), eagerly and as ONNX run by a plain onnxruntime session (no custom op registered), and the
whole exported graph of LLaVA-1.5 and LLaVA-NeXT = the torch backend."""

from __future__ import annotations

import onnx
import pytest
import torch

pytest.importorskip("onnxscript")
import onnxruntime as ort  # noqa: E402

from hivtp.build.export import export_vision  # noqa: E402
from hivtp.build.standard_ops import StandardSelection, attention_scores, rank_table  # noqa: E402
from hivtp.config import HIVTPConfig  # noqa: E402
from hivtp.loading import load_llava  # noqa: E402
from hivtp.plugins.reference import gather_kept, importance_scores_from_qk, rank_tokens, select_tokens  # noqa: E402

CONFIGS = {
    "paper": HIVTPConfig(), "budget": HIVTPConfig(budget=7), "paper-3x2": HIVTPConfig(regions=(3, 2), window=3, global_ratio=0.3),
    "budget-all": HIVTPConfig(budget=10**6),
}
SPECIALS = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, 1.0])


def score_maps(kind: str, batch: int, patches: int, generator: torch.Generator) -> torch.Tensor:
    """[B, P] scores: random, heavily tied, tied with NaN and -0.0, or only special values."""
    if kind == "random":
        return torch.randn(batch, patches, generator=generator)
    if kind == "ties":
        return torch.randint(0, 3, (batch, patches), generator=generator).float()
    if kind == "nan":
        s = torch.randint(0, 4, (batch, patches), generator=generator).float()
        return s.masked_fill(s == 3, float("nan")).masked_fill(s == 1, -0.0)
    return SPECIALS[torch.randint(0, len(SPECIALS), (batch, patches), generator=generator)]


def assert_same_selection(scores: torch.Tensor, grid: tuple[int, int], config: HIVTPConfig, outputs) -> None:
    features = torch.arange(scores.numel() * 3, dtype=torch.float32).view(*scores.shape, 3)
    indices, counts = select_tokens(scores, grid, config)
    selected, got_counts, got_indices = outputs(scores, features)
    assert got_indices.dtype == got_counts.dtype == torch.int32
    assert torch.equal(got_indices.long(), indices), (scores, got_indices, indices)
    assert torch.equal(got_counts.long(), counts)
    assert torch.equal(selected, gather_kept(features, indices))


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
@pytest.mark.parametrize("kind", ["random", "ties", "nan", "specials"])
def test_selection_equals_the_reference(config, kind) -> None:
    generator = torch.Generator().manual_seed(hash((kind, str(config))) % 2**31)
    for h, w in [(1, 1), (1, 7), (3, 5), (8, 8), (7, 12), (12, 12)]:
        scores = score_maps(kind, 3, h * w, generator)
        assert_same_selection(scores, (h, w), config, StandardSelection((h, w), config))


def test_rank_table_is_the_reference_total_order() -> None:
    """before[i, j] for every pair = (rank_i < rank_j) of the reference, with NaN last and -0.0 == +0.0."""
    scores = torch.tensor([[1.0, float("nan"), -0.0, 0.0, float("inf"), float("nan"), -float("inf"), 1.0]])
    P = scores.shape[1]
    lower = torch.arange(P)[:, None] < torch.arange(P)[None, :]
    ranks = rank_tokens(scores)[0]
    assert torch.equal(rank_table(scores, lower)[0], ranks[:, None] < ranks[None, :])
    assert ranks.tolist() == [1, 6, 3, 4, 0, 7, 5, 2]  # inf, 1.0 (idx 0), 1.0 (idx 7), -0.0, 0.0, -inf, NaN, NaN


def test_all_equal_scores_go_to_the_lower_index_in_every_stage() -> None:
    """Budget 5 on 4x4, one region: global keeps 0, 1; the 2x2 windows' best candidates are 4, 2, 8, 10, and
    the first three by index (2, 4, 8) fill the budget."""
    config = HIVTPConfig(budget=5, regions=(1, 1))
    _, counts, indices = StandardSelection((4, 4), config)(torch.zeros(1, 16), torch.zeros(1, 16, 1))
    assert indices.tolist() == [[0, 1, 2, 4, 8]] == select_tokens(torch.zeros(1, 16), (4, 4), config)[0].tolist()
    assert counts.tolist() == [5]


def test_scores_match_the_definition() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 2, 4, 65, 8, generator=generator), torch.randn(3, 2, 4, 65, 8, generator=generator)
    torch.testing.assert_close(attention_scores(q, k), importance_scores_from_qk(q, k), rtol=1e-5, atol=1e-7)
    assert attention_scores(q.half(), k.half()).dtype == torch.float32


# ---- as ONNX, in a plain onnxruntime session -------------------------------------------------------


def plain_session(path) -> ort.InferenceSession:
    """onnxruntime with nothing registered: every node must be a standard ONNX op."""
    model = onnx.load(str(path))
    assert {n.domain for n in model.graph.node} == {""}, "the plugin-free graph must hold standard ops only"
    assert {o.domain for o in model.opset_import} == {""}
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_selection_as_onnx_equals_the_reference(config, tmp_path) -> None:
    """The exported selection alone, fed tied / NaN / +-inf / -0.0 scores: onnxruntime's TopK, comparisons and
    GatherElements give the reference's indices, counts and rows exactly."""
    grid = (7, 9)
    module = StandardSelection(grid, config).eval()
    scores, features = torch.zeros(2, 63), torch.zeros(2, 63, 3)
    batch = torch.export.Dim("batch", min=1, max=16)
    program = torch.onnx.export(module, (scores, features), dynamo=True, opset_version=18, input_names=["scores", "features"],
                                dynamic_shapes=({0: batch}, {0: batch}), verbose=False)
    program.save(tmp_path / "select.onnx")
    session = plain_session(tmp_path / "select.onnx")

    def run(s: torch.Tensor, f: torch.Tensor):
        return tuple(torch.from_numpy(x) for x in session.run(None, {"scores": s.numpy(), "features": f.numpy()}))

    generator = torch.Generator().manual_seed(1)
    for kind in ("random", "ties", "nan", "specials"):
        assert_same_selection(score_maps(kind, 5, 63, generator), grid, config, run)


@pytest.fixture(scope="module")
def plugin_free_exports(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin-free")
    out = {}
    for kind, directory in tiny_dirs.items():
        model, processor = load_llava(directory, dtype=torch.float32)
        for mode in ("paper", "budget"):
            info = export_vision(model, CONFIGS[mode], root / f"{kind}-{mode}.onnx", max_batch=8, select_impl="onnx")
            out[kind, mode] = (model, processor, info)
    return out


@pytest.mark.parametrize("mode", ["paper", "budget"])
@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_plugin_free_graph_equals_the_torch_backend(plugin_free_exports, two_images, kind, mode) -> None:
    """LLaVA-1.5 and LLaVA-NeXT (crops as the batch): kept indices and counts exact, LLM rows to 1e-4."""
    from hivtp.build.ort_check import compare, has_plugin_nodes

    model, processor, info = plugin_free_exports[kind, mode]
    assert info.select_impl == "onnx" and not has_plugin_nodes(info.path)
    plain_session(info.path)
    assert compare(model, processor, info.path, two_images) < 1e-4


def test_plugin_free_graph_batch_rows_are_independent(plugin_free_exports) -> None:
    from hivtp.build.ort_check import run_vision

    session = plain_session(plugin_free_exports["llava", "budget"][2].path)
    pixels = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    batched, alone = run_vision(session, pixels), run_vision(session, pixels[1:2])
    assert torch.equal(alone[2], batched[2][1:2]) and torch.equal(alone[1], batched[1][1:2])
    torch.testing.assert_close(alone[0], batched[0][1:2], rtol=1e-5, atol=1e-5)


def test_unknown_select_impl_is_refused(tiny_dirs, tmp_path) -> None:
    model, _ = load_llava(tiny_dirs["llava"], dtype=torch.float32)
    with pytest.raises(ValueError, match="select_impl must be one of"):
        export_vision(model, HIVTPConfig(), tmp_path / "x.onnx", select_impl="triton")
