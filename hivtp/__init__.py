"""hivtp: HIVTP visual-token pruning for LLaVA (arXiv 2509.23663).

The reference algorithm lives in `hivtp.plugins.reference`, the HF integration in
`hivtp.runtime.hf`; this module re-exports the public API. The exports are resolved on first use
(PEP 562), so `import hivtp.cli` and `hivtp --help` do not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "HIVTPConfig": "hivtp.config",
    "HIVTPModel": "hivtp.runtime.hf",
    "apply": "hivtp.runtime.hf",
    "importance_scores": "hivtp.plugins.reference",
    "importance_scores_from_qk": "hivtp.plugins.reference",
    "prune_inputs": "hivtp.runtime.hf",
    "select_tokens": "hivtp.plugins.reference",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from hivtp.config import HIVTPConfig
    from hivtp.plugins.reference import importance_scores, importance_scores_from_qk, select_tokens
    from hivtp.runtime.hf import HIVTPModel, apply, prune_inputs


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hivtp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
