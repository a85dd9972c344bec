"""lmms-eval's `llava_hf` model with HIVTP pruning, registered as `llava_hf_hivtp`.

lmms-eval's `LlavaHf.__init__` refuses unknown keyword arguments, so the HIVTP fields travel in
`--model_args` with a `hivtp_` prefix, are taken out here, and the loaded model is wrapped with
`hivtp.apply` (whose `forward` / `generate` are what `LlavaHf.loglikelihood` / `generate_until`
call). lmms-eval splits `--model_args` on commas, so tuples use other separators
(`hivtp_score_layers=relative`, the default, scores at the paper's relative depth):

    python -m hivtp.lmms_eval_adapter --model llava_hf_hivtp \\
        --model_args pretrained=llava-hf/llava-1.5-7b-hf,hivtp_budget=192,hivtp_score_layers=6/7/8,hivtp_regions=2x2 \\
        --tasks mme --batch_size 1 --output_path results/lmms_eval/

`python -m hivtp.lmms_eval_adapter` registers the model, then runs lmms-eval's own CLI with the
remaining arguments. Single process only (`LlavaHf` itself asserts batch size 1; under multi-GPU
data parallelism `_model` is a DDP wrapper, which `hivtp.apply` refuses with a ValueError).
Nothing here imports lmms_eval at module import time, so the adapter is testable without it.
"""

from __future__ import annotations

import importlib
import sys
from functools import lru_cache
from typing import Any

from hivtp.config import RELATIVE, HIVTPConfig
from hivtp.runtime.hf import apply

MODEL_NAME = "llava_hf_hivtp"
PREFIX = "hivtp_"
CLASS_PATH = "hivtp.lmms_eval_adapter.LlavaHfHivtp"
LLAVA_HF_MODULES = ("lmms_eval.models.simple.llava_hf", "lmms_eval.models.llava_hf")  # newer, older layout


def _tuple(value: Any, separators: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    text = str(value)
    for sep in separators:
        text = text.replace(sep, " ")
    try:
        return tuple(int(part) for part in text.split())
    except ValueError:
        raise ValueError(f"expected integers separated by {' or '.join(separators)}, got {value!r}") from None


def split_model_args(kwargs: dict[str, Any]) -> tuple[dict[str, Any], HIVTPConfig]:
    """(the kwargs for LlavaHf, the HIVTPConfig from the `hivtp_*` ones). Values may be strings or numbers."""
    rest = {k: v for k, v in kwargs.items() if not k.startswith(PREFIX)}
    ours = {k[len(PREFIX):]: v for k, v in kwargs.items() if k.startswith(PREFIX)}
    parsers = {
        "budget": lambda v: None if str(v).lower() in ("none", "") else int(v),
        "score_layers": lambda v: v if str(v) == RELATIVE else _tuple(v, "/:"),
        "regions": lambda v: _tuple(v, "x/:"),
        "global_ratio": float,
        "window": int,
    }
    unknown = sorted(set(ours) - set(parsers))
    if unknown:
        raise ValueError(f"unknown HIVTP model_args {[PREFIX + k for k in unknown]}; known: {[PREFIX + k for k in parsers]}")
    try:
        fields = {k: parsers[k](v) for k, v in ours.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad HIVTP model_args {ours}: {err}") from None
    return rest, HIVTPConfig(**fields)


def make_adapter(base: type) -> type:
    """A subclass of lmms-eval's LlavaHf (or anything that sets `self._model` in __init__) that prunes."""

    class LlavaHfHivtp(base):  # type: ignore[misc, valid-type]
        """llava_hf + HIVTP: `hivtp_*` model_args configure pruning, the rest go to llava_hf."""

        def __init__(self, **kwargs: Any) -> None:
            rest, config = split_model_args(kwargs)
            super().__init__(**rest)
            self.hivtp_config = config
            self._model = apply(self._model, config)

    return LlavaHfHivtp


def _llava_hf() -> type:
    for module_name in LLAVA_HF_MODULES:
        try:
            return importlib.import_module(module_name).LlavaHf
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"lmms_eval has no LlavaHf in {' or '.join(LLAVA_HF_MODULES)}")


@lru_cache(maxsize=1)
def adapter_class() -> type:
    """The LlavaHf subclass, built once; ImportError without lmms-eval."""
    adapter = make_adapter(_llava_hf())
    adapter.__module__, adapter.__qualname__ = CLASS_PATH.rsplit(".", 1)
    return adapter


def __getattr__(name: str) -> Any:
    """`hivtp.lmms_eval_adapter.LlavaHfHivtp` resolves lazily, so lmms-eval's path-based loaders find it."""
    if name == "LlavaHfHivtp":
        return adapter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register() -> bool:
    """Register `llava_hf_hivtp` with every lmms-eval registry present; False when lmms-eval is not installed.

    @register_model's MODEL_REGISTRY (checked first by newer `api.registry.get_model`), the name ->
    class-path tables of `lmms_eval.models` (older releases), and the v2 manifest registry (newest).
    """
    try:
        registry = importlib.import_module("lmms_eval.api.registry")
        models = importlib.import_module("lmms_eval.models")
    except ImportError:
        return False
    registry.register_model(MODEL_NAME)(adapter_class())
    for table in ("AVAILABLE_SIMPLE_MODELS", "AVAILABLE_MODELS"):
        if isinstance(getattr(models, table, None), dict):
            getattr(models, table)[MODEL_NAME] = CLASS_PATH
    manifests = getattr(models, "MODEL_REGISTRY_V2", None)
    if manifests is not None:
        from lmms_eval.models.registry_v2 import ModelManifest

        manifests.register_manifest(ModelManifest(model_id=MODEL_NAME, simple_class_path=CLASS_PATH), overwrite=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Register the model, then hand the command line to lmms-eval's CLI."""
    # run as __main__, this file is a second module object: register the importable one
    if not importlib.import_module("hivtp.lmms_eval_adapter").register():
        print("hivtp: error: lmms-eval is not installed (pip install lmms-eval), so llava_hf_hivtp cannot run", file=sys.stderr)
        return 2
    from lmms_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
