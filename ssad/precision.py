"""Numeric precision of network passes: bf16 autocast where the hardware runs it fast, fp32 elsewhere.

bf16 pays off only with native support (AMX or AVX-512 BF16 on a CPU, any recent GPU); emulated bf16
on an AVX2 CPU is an order of magnitude slower than fp32, so ``auto`` detects the capability instead of
assuming it. Losses, statistics and metrics are computed in fp32 whatever the setting.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from ssad.errors import SsadError

Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively: AMX or AVX-512 BF16 on a CPU, bf16 support on a GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str) -> Literal["bf16", "fp32"]:
    """The precision that ``precision`` means on ``device``: ``auto`` becomes bf16 only where it is fast."""
    if precision not in PRECISIONS:
        raise SsadError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision  # type: ignore[return-value]


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context in which network passes run at ``precision`` on ``device`` (bf16 autocast or nothing)."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
