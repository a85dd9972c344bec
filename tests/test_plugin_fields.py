"""plugins/plugin_fields.py is the one list of plugin fields: check HIVTPConfig, the C++ creators and the README against it."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import fields

import pytest

from hivtp.config import HIVTPConfig
from hivtp.plugins import plugin_fields as pf
from test_plugin_host import PLUGIN_DIR, build_plugin

README = PLUGIN_DIR / "README.md"


def test_names_are_config_fields():
    config_names = {f.name for f in fields(HIVTPConfig)}
    carried = {f.name for f in pf.PLUGIN_FIELDS if f.config_field}
    assert carried <= config_names, f"plugin fields that are no HIVTPConfig field: {carried - config_names}"
    assert carried | set(pf.CONFIG_ONLY_FIELDS) == config_names, (
        f"HIVTPConfig fields neither carried nor listed in CONFIG_ONLY_FIELDS: {config_names - carried - set(pf.CONFIG_ONLY_FIELDS)}"
    )
    assert not {f.name for f in pf.PLUGIN_FIELDS if not f.config_field} & config_names
    assert len({f.name for f in pf.PLUGIN_FIELDS}) == len(pf.PLUGIN_FIELDS), "duplicate field names"


def test_types_and_plugins():
    for f in pf.PLUGIN_FIELDS:
        assert f.trt_type in ("kINT32", "kFLOAT32"), f"{f.name}: the ONNX parser only delivers kINT32 / kFLOAT32"
        assert f.onnx_type in ("INT", "INTS", "FLOAT"), f.name
        assert (f.trt_type == "kFLOAT32") == (f.onnx_type == "FLOAT"), f.name
        assert f.plugins and set(f.plugins) <= {pf.SCORE, pf.SELECT}, f.name


def test_defaults_encode_the_config_defaults():
    """The creators' defaults are the default config on a 24-layer tower (relative layers -> 6, 7, 8)."""
    encoded = pf.encode(HIVTPConfig().for_tower(24, -2))
    for f in pf.PLUGIN_FIELDS:
        for plugin in f.plugins:
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            assert encoded[plugin][f.name] == default, f"{plugin}.{f.name}: default {default} != encoded config default"


def test_encode_needs_resolved_score_layers():
    with pytest.raises(ValueError, match="resolve it with HIVTPConfig.for_tower"):
        pf.encode(HIVTPConfig())


def test_encode_budget_none_is_zero():
    assert pf.encode(HIVTPConfig(score_layers=(6, 7, 8)))[pf.SELECT]["budget"] == 0
    assert pf.encode(HIVTPConfig(budget=64, score_layers=(6, 7, 8)), grid=(24, 24))[pf.SELECT] == {
        "regions": [2, 2], "global_ratio": 0.25, "window": 2, "budget": 64, "grid_h": 24, "grid_w": 24,
    }
    assert pf.encode(HIVTPConfig(score_layers=(3, 5)))[pf.SCORE] == {"score_layers": [3, 5]}


def test_readme_table_is_generated_from_the_list():
    text = README.read_text()
    match = re.search(r"<!-- plugin_fields:begin -->\n(.*?)\n<!-- plugin_fields:end -->", text, re.S)
    assert match, "README.md lost its <!-- plugin_fields:begin/end --> markers"
    assert match.group(1).strip() == pf.readme_table(), (
        "README parameter table differs from plugins/plugin_fields.py: paste `python -m hivtp.plugins.plugin_fields`"
    )


def test_readme_lists_the_io_order():
    text = README.read_text()
    for plugin, io in pf.PLUGIN_IO.items():
        section = text.split(f"### `{plugin}`", 1)[1].split("###", 1)[0]
        for kind in ("input", "output"):
            for i, name in enumerate(io[f"{kind}s"]):
                assert f"| {kind} {i} | `{name}`" in section, f"README {plugin}: {kind} {i} should be `{name}`"


@pytest.fixture(scope="module")
def creator_fields() -> dict:
    build = build_plugin()
    result = subprocess.run([str(build / "hivtp_host_tests"), "--print-fields"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("plugin", [pf.SCORE, pf.SELECT])
def test_cpp_creator_declares_the_list(creator_fields: dict, plugin: str):
    creator = creator_fields[plugin]
    assert creator["namespace"] == pf.PLUGIN_NAMESPACE and creator["version"] == pf.PLUGIN_VERSION
    assert creator["nb_outputs"] == len(pf.PLUGIN_IO[plugin]["outputs"])
    expected = [(f.name, f.trt_type) for f in pf.fields_of(plugin)]
    assert [(f["name"], f["type"]) for f in creator["fields"]] == expected
    defaults = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in pf.fields_of(plugin)}
    assert creator["defaults"] == defaults, f"C++ defaults of {plugin} differ from plugin_fields.py"
