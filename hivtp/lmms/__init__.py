"""hivtp in lmms-eval: the `hivtp_llava` model and the offline `hivtp_shapes` task.

lmms-eval (0.7.3) finds models through its v2 model registry, which reads the entry-point group
`lmms_eval.models`; pyproject.toml points `hivtp_llava` at `manifest` below. lmms-eval imports
every such entry point whenever it starts, so this module stays light: nothing from torch,
transformers or lmms-eval is imported until a function needs it.

    python -m lmms_eval --model hivtp_llava --model_args pretrained=DIR,budget=192 --tasks mme ...
    python -m lmms_eval ... --include_path "$(python -m hivtp.lmms)" --tasks hivtp_shapes
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

MODEL_NAME = "hivtp_llava"
CHAT_CLASS = "hivtp.lmms.llava_hf.HivtpLlava"  # what `--model hivtp_llava` resolves to, like llava_hf
SIMPLE_CLASS = "hivtp.lmms.llava_hf.HivtpLlavaSimple"  # with `--force_simple`
SHAPES_TASK = "hivtp_shapes"
SHAPES_QUESTIONS = 50  # hivtp.shapes.held_out(50): 10 of each question kind


def manifest() -> Any:
    """The `lmms_eval.models` entry point: a ModelManifest naming both classes by path (imported on use)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, chat_class_path=CHAT_CLASS, simple_class_path=SIMPLE_CLASS)


def tasks_dir() -> Path:
    """The folder to pass to lmms-eval's `--include_path` (it holds the `hivtp_shapes` task)."""
    path = Path(str(resources.files("hivtp") / "lmms" / "tasks"))
    if not (path / SHAPES_TASK / f"{SHAPES_TASK}.yaml").is_file():
        raise ValueError(f"hivtp's lmms-eval tasks are missing ({path}); reinstall hivtp")
    return path
