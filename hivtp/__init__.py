"""hivtp: HIVTP visual-token pruning for LLaVA (arXiv 2509.23663).

The reference algorithm lives in `hivtp.plugins.reference`, the HF integration in
`hivtp.runtime.hf`; this module re-exports the public API.
"""

from hivtp.config import HIVTPConfig
from hivtp.plugins.reference import importance_scores, importance_scores_from_qk, select_tokens
from hivtp.runtime.hf import HIVTPModel, apply, prune_inputs

__all__ = [
    "HIVTPConfig",
    "HIVTPModel",
    "apply",
    "importance_scores",
    "importance_scores_from_qk",
    "prune_inputs",
    "select_tokens",
]
