"""The precision of the matrix products: float32, bfloat16 or float16, on any device.

    resolve_precision(device, "auto")   bf16 on Ampere and later GPUs, fp16 on older ones, fp32 on a CPU
    autocast(device, precision)         the context the forward passes run in
    grad_scaler(device, precision)      the loss scaling that float16 training needs (None otherwise)
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

__all__ = ["PRECISIONS", "check_precision", "resolve_precision", "autocast", "grad_scaler"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision



def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """The precision of the matrix products: precision itself, or for "auto" the device's best.

    "auto" is bf16 on a GPU that supports it (Ampere and later: as fast as fp16, and no gradient
    scaling, since bf16 has float32's range), fp16 on older GPUs, and fp32 on a CPU (where bf16
    matrix products are slower than fp32 on most processors).
    """
    if check_precision(precision) != "auto":
        return precision
    if device.type == "cuda":  # bf16 in hardware from compute capability 8 (Ampere) on
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str = "auto"):
    """Mixed precision (torch.autocast) for bf16 and fp16, plain float32 for fp32; on any device.

    For fp32 it is a null context, not a disabled autocast: entering even a disabled one costs
    about half a millisecond on a CPU, which is a tenth of a small training step.
    """
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)



def grad_scaler(device: torch.device, precision: str = "auto") -> Optional[torch.amp.GradScaler]:
    """A gradient scaler for fp16 training, on any device; None (a plain step) for fp32 and bf16.

    fp16's smallest normal number is 6e-5: small gradients would round to zero unless the loss is
    scaled up before backward() and the gradients scaled back down before the step.
    """
    if resolve_precision(device, precision) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)

