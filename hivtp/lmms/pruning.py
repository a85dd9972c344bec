"""What `hivtp_llava` adds to lmms-eval's `llava_hf`: HIVTP options in `--model_args`, and the pruned
model as `llava_hf` calls it. Nothing here imports lmms-eval, so it is tested without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import torch

from hivtp.config import RELATIVE, HIVTPConfig, is_int
from hivtp.runtime.hf import HIVTPModel

PAPER_MODE = ("none", "paper")  # budget=none / budget=paper: the paper's ratio / window mode


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any) -> Any:
    """lmms-eval reads `-4` as the float -4.0 (only digit strings become ints): give whole numbers back as ints."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _integer(name: str, value: Any, alternatives: str = "") -> int:
    value = _whole(value)
    if is_int(value):
        return value  # HIVTPConfig refuses <= 0
    raise ValueError(f"{name}: expected a positive integer{alternatives}, got {value!r}")


def _budget(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() in PAPER_MODE:
        return None
    return _integer("budget", value, f", or {' / '.join(PAPER_MODE)} for paper mode")


def _numbers(separators: str) -> Callable[[Any], tuple[int | float, ...]]:
    """`6/7/8` -> (6, 7, 8), `2x2` -> (2, 2); a single number -> (n,). HIVTPConfig judges the values."""

    def parse(value: Any) -> tuple[int | float, ...]:
        if _is_number(value):
            return (_whole(value),)
        text = str(value)
        for separator in separators:
            text = text.replace(separator, " ")
        parts = text.split()
        try:
            return tuple(int(p) if p.lstrip("-").isdigit() else float(p) for p in parts) if parts else ()
        except ValueError:
            raise ValueError(f"expected numbers separated by {' or '.join(separators)}, got {value!r}") from None

    return parse


def _ratio(value: Any) -> float:
    if not _is_number(value):
        raise ValueError(f"global_ratio: expected a number in [0, 1], got {value!r}")
    return float(value)


def _window(value: Any) -> int:
    return _integer("window", value)


def _score_layers(value: Any) -> Any:
    """'relative' (the default: the paper's depth on this tower), or layer indices separated by '/'."""
    return RELATIVE if str(value).strip() == RELATIVE else _numbers("/")(value)


# model_args name -> parser; lmms-eval splits --model_args on commas, so tuples use / and x
OPTIONS: dict[str, Callable[[Any], Any]] = {
    "budget": _budget,
    "score_layers": _score_layers,
    "regions": _numbers("x/"),
    "global_ratio": _ratio,
    "window": _window,
}


def split_model_args(model_args: dict[str, Any], llava_hf_args: Iterable[str]) -> tuple[dict[str, Any], HIVTPConfig]:
    """(llava_hf's own arguments, the HIVTPConfig) from `--model_args` as lmms-eval parsed them
    (`192` arrives as int, `0.5` as float, `true` as bool, anything else as str).

    One ValueError names every unknown argument, or the first bad HIVTP option.
    """
    known = set(llava_hf_args)
    unknown = sorted(set(model_args) - known - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"hivtp_llava: unknown model_args {unknown}; HIVTP options: {', '.join(OPTIONS)}; "
            f"llava_hf options: {', '.join(sorted(known))}"
        )
    try:
        fields = {name: OPTIONS[name](value) for name, value in model_args.items() if name in OPTIONS}
        config = HIVTPConfig(**fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"hivtp_llava: bad HIVTP model_args: {err}") from None
    return {k: v for k, v in model_args.items() if k not in OPTIONS}, config


def check_batch_size(value: Any) -> None:
    """lmms-eval's llava_hf asserts batch size 1 in the middle of a run; refuse anything else up front."""
    if str(value).strip() != "1":
        raise ValueError(f"hivtp_llava: batch_size must be 1 (lmms-eval's llava_hf generates one request at a time), got {value!r}")


def unprune(values: torch.Tensor, source_positions: torch.Tensor, length: int) -> torch.Tensor:
    """Per-position values of the pruned layout [B, T, ...] back at their prompt positions [B, length, ...];
    positions that pruning dropped hold zeros."""
    B, T = source_positions.shape
    index = source_positions.masked_fill(source_positions < 0, length)  # pads -> slot `length`, dropped below
    index = index.view(B, T, *([1] * (values.dim() - 2))).expand_as(values)
    out = values.new_zeros(B, length + 1, *values.shape[2:])
    return out.scatter(1, index, values)[:, :length]


class EvalModel(HIVTPModel):
    """HIVTPModel as lmms-eval's `llava_hf` calls it.

    - `forward` returns logits at the prompt's own positions [B, S, V] (the loss is the pruned
      sequence's): `llava_hf.loglikelihood` slices them by the unpruned prompt's length.
    - `generate` keeps the errors it raises: `llava_hf.generate_until` logs and swallows them and
      scores an empty answer, which `HivtpLlava` turns back into a failed run.
    """

    def __init__(self, model: Any, config: HIVTPConfig) -> None:
        super().__init__(model, config)
        self.errors: list[Exception] = []

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, image_sizes=None, labels=None, **kwargs):
        out = super().forward(input_ids, pixel_values, attention_mask, image_sizes, labels, **kwargs)
        if pixel_values is not None:
            out.logits = unprune(out.logits, self.last_pruned.sequence.source_positions, input_ids.shape[1])
        return out

    __call__ = forward

    def generate(self, *args, **kwargs):
        try:
            return super().generate(*args, **kwargs)
        except Exception as err:
            self.errors.append(err)
            raise
