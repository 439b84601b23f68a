"""Configs from other libraries (peft) translated into clpeft's."""
from __future__ import annotations

from clpeft.errors import ClpeftError


def from_foreign_config(config):
    raise ClpeftError(f"inject_pet needs a clpeft PET config (e.g. LoRAConfig), got {type(config).__name__}")
