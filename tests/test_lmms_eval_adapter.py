"""The lmms-eval adapter, offline: model_args parsing, the LlavaHf subclass on a tiny local model, and
registration against a stand-in `lmms_eval` package shaped like lmms-eval's (api.registry.register_model,
models.AVAILABLE_SIMPLE_MODELS, models/simple/llava_hf.LlavaHf); lmms-eval itself is not installed."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

import hivtp.lmms_eval_adapter as adapter
from hivtp import HIVTPConfig, HIVTPModel
from hivtp.demo import sample_image_path
from hivtp.generate import build_prompt
from hivtp.loading import load_image

FAKE_LMMS_EVAL = {
    "lmms_eval/__init__.py": "",
    "lmms_eval/api/__init__.py": "",
    "lmms_eval/api/model.py": "class lmms:\n    pass\n",
    "lmms_eval/api/registry.py": """
        from lmms_eval.api.model import lmms
        MODEL_REGISTRY = {}
        def register_model(*names):
            def decorate(cls):
                for name in names:
                    assert issubclass(cls, lmms)
                    MODEL_REGISTRY[name] = cls
                return cls
            return decorate
    """,
    "lmms_eval/models/__init__.py": "AVAILABLE_SIMPLE_MODELS = {'llava_hf': 'LlavaHf'}\n",
    "lmms_eval/models/simple/__init__.py": "",
    "lmms_eval/models/simple/llava_hf.py": """
        from transformers import AutoProcessor, LlavaForConditionalGeneration
        from lmms_eval.api.model import lmms
        class LlavaHf(lmms):
            def __init__(self, pretrained, device="cpu", batch_size=1, **kwargs):
                assert kwargs == {}, f"Unexpected kwargs: {kwargs}"
                self._model = LlavaForConditionalGeneration.from_pretrained(pretrained).to(device)
                self._image_processor = AutoProcessor.from_pretrained(pretrained)
            @property
            def model(self):
                return self._model
    """,
}


@pytest.fixture()
def fake_lmms_eval(tmp_path, monkeypatch):
    for name, text in FAKE_LMMS_EVAL.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "lmms_eval" or m.startswith("lmms_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    adapter.adapter_class.cache_clear()
    yield
    for name in [m for m in sys.modules if m == "lmms_eval" or m.startswith("lmms_eval.")]:
        del sys.modules[name]
    adapter.adapter_class.cache_clear()


def test_split_model_args() -> None:
    rest, config = adapter.split_model_args(
        {"pretrained": "x", "device": "cpu", "hivtp_budget": 192, "hivtp_score_layers": "5/6/7", "hivtp_regions": "3x2",
         "hivtp_global_ratio": "0.5", "hivtp_window": 3}
    )
    assert rest == {"pretrained": "x", "device": "cpu"}
    assert config == HIVTPConfig(budget=192, score_layers=(5, 6, 7), regions=(3, 2), global_ratio=0.5, window=3)
    assert adapter.split_model_args({"hivtp_budget": "None"})[1] == HIVTPConfig()
    assert adapter.split_model_args({"hivtp_score_layers": 8})[1].score_layers == (8,)
    assert adapter.split_model_args({"hivtp_score_layers": "relative"})[1] == HIVTPConfig()
    with pytest.raises(ValueError, match="unknown HIVTP model_args"):
        adapter.split_model_args({"hivtp_bugdet": 1})
    with pytest.raises(ValueError, match="bad HIVTP model_args"):
        adapter.split_model_args({"hivtp_regions": "2,two"})


def test_without_lmms_eval(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "lmms_eval", None)  # import lmms_eval -> ImportError
    adapter.adapter_class.cache_clear()
    assert adapter.register() is False
    assert adapter.main(["--model", "llava_hf_hivtp"]) == 2
    assert "lmms-eval is not installed" in capsys.readouterr().err
    with pytest.raises(ImportError):
        adapter.LlavaHfHivtp  # noqa: B018
    adapter.adapter_class.cache_clear()


def test_registers_and_prunes_through_llava_hf(fake_lmms_eval, tiny_dirs) -> None:
    assert adapter.register() is True
    from lmms_eval.api.registry import MODEL_REGISTRY
    from lmms_eval.models import AVAILABLE_SIMPLE_MODELS

    cls = MODEL_REGISTRY["llava_hf_hivtp"]
    assert AVAILABLE_SIMPLE_MODELS["llava_hf_hivtp"] == "hivtp.lmms_eval_adapter.LlavaHfHivtp"
    assert adapter.LlavaHfHivtp is cls  # the class path above resolves to the registered class

    lmm = cls(pretrained=str(tiny_dirs["llava"]), device="cpu", hivtp_budget=8)
    assert isinstance(lmm.model, HIVTPModel) and lmm.hivtp_config.budget == 8
    processor = lmm._image_processor
    text = build_prompt(processor, "what color is the circle ?")
    inputs = processor(images=[load_image(sample_image_path())], text=[text], return_tensors="pt")
    with torch.inference_mode():
        out = lmm.model.generate(**inputs, max_new_tokens=2, do_sample=False)  # as LlavaHf.generate_until calls it
        loss = lmm.model(**inputs, labels=inputs["input_ids"]).loss  # as LlavaHf.loglikelihood calls it
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2 and torch.isfinite(loss)
    assert int(lmm.model.last_pruned.kept_tokens.sum()) == 8
    with pytest.raises(AssertionError, match="Unexpected kwargs"):
        cls(pretrained=str(tiny_dirs["llava"]), not_a_llava_hf_arg=1)
