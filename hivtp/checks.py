"""Argument checks shared by the public API: a wrong type, rank or dtype is one `ValueError` that names
the argument, what was expected and what was given, never a torch error from deep inside.
"""

from __future__ import annotations

from typing import Any

import torch

from hivtp.config import HIVTPConfig

REAL = "real floating-point"
INTEGER = "integer"
MASK = "integer or bool"


def describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:120]


def check_tensor(name: str, value: Any, dims: int | tuple[int, ...], kind: str) -> torch.Tensor:
    """value is a tensor of rank `dims` (or one of them) whose dtype is `kind` (REAL, INTEGER or MASK)."""
    ranks = (dims,) if isinstance(dims, int) else dims
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {describe(value)}")
    if value.dim() not in ranks:
        raise ValueError(f"{name} must have {' or '.join(map(str, ranks))} dimensions, got {describe(value)}")
    integer = not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool
    ok = {REAL: value.is_floating_point(), INTEGER: integer, MASK: integer or value.dtype == torch.bool}[kind]
    if not ok:
        raise ValueError(f"{name} must be a {kind} tensor, got {describe(value)}")
    return value


def check_same_device(**tensors: torch.Tensor) -> None:
    """Tensors used together live on one device (torch would raise its own RuntimeError deep inside)."""
    devices = {str(t.device) for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(f"{', '.join(tensors)} must be on one device, got {', '.join(f'{n} on {t.device}' for n, t in tensors.items())}")


def check_sizes(name: str, value: torch.Tensor, **sizes: int) -> None:
    """Dimensions that must not be empty (dimension name -> its size): averages over them would be NaN."""
    empty = [dim for dim, size in sizes.items() if size == 0]
    if empty:
        raise ValueError(f"{name} has no {' and no '.join(empty)}: got {describe(value)}")


def check_grid(grid: Any) -> tuple[int, int]:
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in grid)):
        raise ValueError(f"grid must be two positive ints (rows, cols), got {describe(grid)}")
    return int(grid[0]), int(grid[1])


def check_config(config: Any) -> HIVTPConfig:
    if not isinstance(config, HIVTPConfig):
        hint = " (HIVTPConfig.from_dict(d) builds one from a dict)" if isinstance(config, dict) else ""
        raise ValueError(f"config must be a HIVTPConfig, got {type(config).__name__}{hint}")
    return config
