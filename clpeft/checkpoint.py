"""Crash-safe resume: a checkpoint after every experience, written atomically, loaded safely.

A checkpoint holds what the next experience needs to continue exactly as if the run had never
stopped: the model's state (backbone, every PET instance, head chunks, per-task statistics), the
strategy's own state (``CLStrategy.resume_state``), every RNG state, and the accuracy rows so far.
Optimizers are not saved: every strategy builds a fresh one per experience (and per phase). Files are
plain tensors and containers, loaded with ``weights_only=True``.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from clpeft.errors import ClpeftError
from clpeft.rundir import CHECKPOINT
from clpeft.utils.io import atomic_write, writing

FORMAT = 2
KEYS = ("run_id", "experience", "model", "strategy", "rng", "history")


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: Path, payload: dict) -> Path:
    payload = {"format": FORMAT, **payload}
    path = Path(out_dir) / CHECKPOINT
    with writing(path, "the checkpoint"):
        return atomic_write(path, lambda p: torch.save(payload, p))


def load_checkpoint(out_dir: Path, run_id: str) -> dict | None:
    """The last complete checkpoint in ``out_dir`` (None when there is none); refuses another config's."""
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ClpeftError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise ClpeftError(f"checkpoint {path} has format {found}, this clpeft writes {FORMAT}; delete it to start over")
    if not isinstance(state, dict) or any(key not in state for key in KEYS):
        missing = next((k for k in KEYS if not isinstance(state, dict) or k not in state), "?")
        raise ClpeftError(f"checkpoint {path} is damaged (no {missing!r}); delete it to start over")
    if state.get("run_id") != run_id:  # the run id carries the seed and the hash of the resolved config
        raise ClpeftError(f"checkpoint {path} belongs to another configuration; use another --out or delete it")
    return state
