"""Device and mixed-precision selection with errors that name the fix."""
from __future__ import annotations

import contextlib

import torch

from clpeft.errors import ClpeftError

AMP_MODES = ("off", "bf16")


def resolve_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ClpeftError(f"--device {name} was asked for but no CUDA GPU is visible; use --device cpu")
        return torch.device(name)
    raise ClpeftError(f"unknown device {name!r}; use cpu or cuda[:N]")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the given device, or a no-op context when ``amp == 'off'``."""
    if amp not in AMP_MODES:
        raise ClpeftError(f"unknown amp mode {amp!r}; use one of {', '.join(AMP_MODES)}")
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
