"""Vision-path ONNX export: custom ops, shapes, checker, the ONNX -> plugin contract, and onnxruntime
(hivtp nodes run by the reference) = the torch backend on tiny LLaVA and LLaVA-NeXT."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from helpers import assert_one_error_line

pytest.importorskip("onnxscript")
from hivtp.build import ops  # noqa: E402
from hivtp.build.export import ONNX_OPSET, exported_config, export_vision  # noqa: E402
from hivtp.config import HIVTPConfig  # noqa: E402
from hivtp.loading import load_llava  # noqa: E402
from hivtp.plugins import plugin_fields as pf  # noqa: E402

CONFIGS = {"paper": HIVTPConfig(), "budget": HIVTPConfig(budget=5, score_layers=(2, 4))}
ONNX_TYPES = {"INT": onnx.AttributeProto.INT, "INTS": onnx.AttributeProto.INTS, "FLOAT": onnx.AttributeProto.FLOAT}


@pytest.fixture(scope="module")
def fp32_models(tiny_dirs) -> dict[str, tuple[object, object]]:
    """kind -> (model, processor) in fp32, loaded once for the module (exports and checks leave them unchanged)."""
    return {kind: load_llava(directory, dtype=torch.float32) for kind, directory in tiny_dirs.items()}


@pytest.fixture(scope="module")
def exported(fp32_models, tmp_path_factory) -> dict[tuple[str, str], tuple[Path, int]]:
    """(kind, mode) -> (onnx path, Kmax): each tiny model exported once per config, fp32."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for kind, (model, _) in fp32_models.items():
        for mode, config in CONFIGS.items():
            info = export_vision(model, config, root / f"{kind}-{mode}.onnx", max_batch=8)
            out[kind, mode] = (info.path, info.kmax)
    return out


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("mode", list(CONFIGS))
@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_graph_io_keeps_static_shapes(exported, kind, mode) -> None:
    path, kmax = exported[kind, mode]
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    (pixels,) = graph.input
    batch = dims(pixels)[0]
    assert isinstance(batch, str) and dims(pixels)[1:] == [3, 112, 112]
    outputs = {o.name: o for o in graph.output}
    assert dims(outputs["features"]) == [batch, kmax, 64]
    assert dims(outputs["counts"]) == [batch] and dims(outputs["indices"]) == [batch, kmax]
    assert outputs["counts"].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert outputs["indices"].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert kmax == (5 if mode == "budget" else 32)
    assert exported_config(path) == CONFIGS[mode].for_tower(10, -2)  # the layers the export scores with


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_plugin_contract(exported, mode) -> None:
    """Domain = namespace = plugin_namespace attribute, op type = plugin name, other attributes = plugin fields
    (names, INT/INTS/FLOAT, values)."""
    path, _ = exported["llava", mode]
    model = onnx.load(str(path))
    assert {(o.domain, o.version) for o in model.opset_import} >= {("", ONNX_OPSET), (pf.PLUGIN_NAMESPACE, 1)}
    nodes = [n for n in model.graph.node if n.domain == pf.PLUGIN_NAMESPACE]
    assert sorted(n.op_type for n in nodes) == [pf.SCORE, pf.SELECT]
    assert not [f for f in model.functions if f.domain == pf.PLUGIN_NAMESPACE], "plugins must be nodes, not functions"
    expected = pf.encode(CONFIGS[mode].for_tower(10, -2), grid=(8, 8))  # the attribute holds the resolved layers
    for node in nodes:
        fields = pf.fields_of(node.op_type)
        attrs = {a.name: a for a in node.attribute}
        # the parser's fallback importer tries namespace "" before the node's domain unless this attribute is set
        namespace = attrs.pop(ops.NAMESPACE_ATTRIBUTE, None)
        assert namespace is not None and namespace.type == onnx.AttributeProto.STRING, node.op_type
        assert namespace.s.decode() == pf.PLUGIN_NAMESPACE
        assert sorted(attrs) == sorted(f.name for f in fields), node.op_type
        for f in fields:
            assert attrs[f.name].type == ONNX_TYPES[f.onnx_type], f"{node.op_type}.{f.name}"
            assert onnx.helper.get_attribute_value(attrs[f.name]) == pytest.approx(expected[node.op_type][f.name])
        assert len(node.input) == 2 and len(node.output) == (1 if node.op_type == pf.SCORE else 3)
    score, select = sorted(nodes, key=lambda n: n.op_type)
    assert select.input[0] == score.output[0], "Select's input 0 must be Score's scores"
    graph_outputs = [o.name for o in model.graph.output]
    assert graph_outputs[1:] == list(select.output[1:]), "counts and indices come straight from Select"


@pytest.mark.parametrize("mode", list(CONFIGS))
@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_onnxruntime_matches_torch(exported, fp32_models, two_images, kind, mode) -> None:
    pytest.importorskip("onnxruntime_extensions")
    from hivtp.build.ort_check import compare

    model, processor = fp32_models[kind]
    error = compare(model, processor, exported[kind, mode][0], two_images)
    assert error < 1e-4


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_the_default_build_graph_checks_on_onnxruntime(fp32_models, two_images, kind, tmp_path) -> None:
    """fp16 with plugin nodes (what `hivtp build` writes by default): Casts around the fp32 reference ops, and the
    fp32 torch backend as the truth: indices and counts exact, features to fp16's precision."""
    pytest.importorskip("onnxruntime_extensions")
    from hivtp.build.ort_check import compare

    model, processor = fp32_models[kind]
    info = export_vision(model, CONFIGS["budget"], tmp_path / "fp16.onnx", max_batch=8, dtype=torch.float16)
    assert 0 < compare(model, processor, info.path, two_images) < 0.05


def test_ort_check_refuses_what_it_cannot_run_in_one_line(fp32_models, tiny_dirs, tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime_extensions")
    from hivtp.build.ort_check import main

    model, _ = fp32_models["llava"]
    bf16 = export_vision(model, CONFIGS["paper"], tmp_path / "bf16.onnx", max_batch=2, dtype=torch.bfloat16).path
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not an onnx model")
    for path, reason in [(bf16, "is a bf16 graph"), (tmp_path / "garbage.onnx", "cannot read the ONNX file")]:
        assert main(["--model", str(tiny_dirs["llava"]), "--onnx", str(path)]) == 2
        err = capsys.readouterr().err
        assert_one_error_line(err)
        assert reason in err, err


def test_batch_rows_are_independent(exported, tiny_dirs) -> None:
    """Dynamic batch: one image alone = the same image inside a batch of 3."""
    pytest.importorskip("onnxruntime_extensions")
    from hivtp.build.ort_check import ort_session, run_vision

    session = ort_session(exported["llava", "paper"][0])
    pixels = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    batched = run_vision(session, pixels)
    alone = run_vision(session, pixels[1:2])
    assert torch.equal(alone[2], batched[2][1:2]) and torch.equal(alone[1], batched[1][1:2])
    torch.testing.assert_close(alone[0], batched[0][1:2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_custom_ops_fake_matches_eager(config) -> None:
    config = config.for_tower(10, -2)
    torch.manual_seed(0)
    L, B, H, N, d, D = len(config.score_layers), 3, 2, 65, 8, 6
    queries, keys, features = torch.randn(L, B, H, N, d), torch.randn(L, B, H, N, d), torch.randn(B, N - 1, D)
    torch.library.opcheck(torch.ops.hivtp.score.default, (queries, keys, list(config.score_layers)))
    scores = ops.score(queries, keys, config)
    attrs = pf.encode(config, grid=(8, 8))[pf.SELECT]
    torch.library.opcheck(torch.ops.hivtp.select.default, (scores, features, *attrs.values()))
    selected, counts, indices = ops.select(scores, features, (8, 8), config)
    assert counts.dtype == indices.dtype == torch.int32
    from hivtp.plugins.reference import select_tokens

    ref_indices, ref_counts = select_tokens(scores, (8, 8), config)
    assert torch.equal(indices.long(), ref_indices) and torch.equal(counts.long(), ref_counts)


def test_score_refuses_a_layer_count_mismatch() -> None:
    q = torch.randn(2, 1, 1, 5, 4)
    with pytest.raises(ValueError, match="score_layers"):
        torch.ops.hivtp.score(q, q, [6, 7, 8])


def test_export_leaves_no_fake_tensors_behind(exported) -> None:
    """Tracing must not poison selection_geometry's cache (it once cached FakeTensors)."""
    from torch._subclasses.fake_tensor import FakeTensor

    from hivtp.plugins.geometry import selection_geometry

    geometry = selection_geometry((8, 8), HIVTPConfig(), torch.device("cpu"))
    assert not isinstance(geometry.region_of, FakeTensor)


def test_large_weights_go_to_external_data(fp32_models, two_images, tmp_path, monkeypatch) -> None:
    """Above EXTERNAL_DATA_BYTES the weights sit in `<name>.data` (protobuf stops at 2 GiB); checker and ORT follow."""
    pytest.importorskip("onnxruntime_extensions")
    from hivtp.build import export
    from hivtp.build.ort_check import compare

    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 0)
    model, processor = fp32_models["llava"]
    info = export_vision(model, HIVTPConfig(budget=6), tmp_path / "model.onnx")
    data = [p.name for p in tmp_path.iterdir() if p.name != "model.onnx"]
    graph = onnx.load(str(info.path), load_external_data=False).graph
    inline = [t.name for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL and t.ByteSize() > 1024]
    assert data and not inline, f"weights stayed inline: {inline}"  # (the graph itself, with source paths, is ~1 MB)
    assert compare(model, processor, info.path, two_images) < 1e-4
