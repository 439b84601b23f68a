"""Run directories: one run owns its output directory, and what is already in it is checked, not assumed.

- **Ownership.** A run holds an exclusive ``flock`` on its directory for its whole life; a second run
  into the same directory fails at once. The kernel drops the lock when its process dies, so a lock
  left by a killed run is taken over by the next one without any stale-file guesswork.
- **Pre-flight.** Before any data or model is built: the path is not a file, the directory can be
  created and written, and some disk space is free.
- **What is there.** ``results.json`` and ``checkpoint.pt`` carry the run id (seed + config hash); a
  directory holding *another* configuration's files is never reported as complete nor resumed.
  :func:`plan` is the one rule ``clpeft run`` and ``clpeft sweep`` share.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from clpeft.errors import ClpeftError

RESULTS = "results.json"
CHECKPOINT = "checkpoint.pt"
FAILED = "failed.json"
MIN_FREE_BYTES = 64 * 2**20
OUTPUTS = (RESULTS, "results.csv", "runtime.json", "loss.csv", CHECKPOINT, FAILED)


def results_run_id(out_dir: Path) -> str | None:
    """The run id recorded in ``out_dir/results.json``; a file that cannot be read counts as another run's."""
    try:
        return str(json.loads((out_dir / RESULTS).read_text()).get("run_id"))
    except (OSError, ValueError, AttributeError):
        return "<unreadable results.json>"


def plan(out_dir: Path, run_id: str, resume: bool, overwrite: bool = False) -> str:
    """``"complete"`` (this run's results are there), ``"resume"`` (its checkpoint is, and resuming is wanted),
    or ``"fresh"``; raises when the directory holds another configuration's results."""
    out_dir = Path(out_dir)
    if (out_dir / RESULTS).exists():
        found = results_run_id(out_dir)
        if overwrite:
            return "fresh"
        if found != run_id:
            raise ClpeftError(f"{out_dir} holds the results of another run ({found}), not of {run_id}; choose another "
                              "--out (or pass --overwrite to replace them)")
        return "complete"
    if resume and (out_dir / CHECKPOINT).exists():
        return "resume"
    return "fresh"


def preflight(out_dir: Path) -> bool:
    """Check that ``out_dir`` can hold a run; returns whether it had to be created."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ClpeftError(f"--out {out_dir} is an existing file; choose a directory")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as exc:
        if created:
            _remove_if_empty(out_dir)
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        fix = "free disk space" if exc.errno == errno.ENOSPC else "choose a writable --out"
        raise ClpeftError(f"cannot write to {out_dir} ({reason}); {fix}") from None
    free = shutil.disk_usage(out_dir).free
    if free < MIN_FREE_BYTES:
        if created:
            _remove_if_empty(out_dir)
        raise ClpeftError(f"only {free / 2**20:.0f} MiB free where {out_dir} lives; free at least "
                          f"{MIN_FREE_BYTES // 2**20} MiB or choose another --out")
    return created


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


@contextmanager
def claimed(out_dir: Path):
    """Hold the run directory's lock for the block; a second holder fails at once with the fix."""
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClpeftError(f"{out_dir} is in use by another clpeft run right now; wait for it to finish or choose "
                              "another --out") from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def owned(out_dir: Path | None, writer: bool = True):
    """Pre-flight and lock ``out_dir`` for a run (no-op without a directory, or on a non-writing rank).

    If the run fails before it saved anything and the directory was made for it, the directory goes too:
    a failed run leaves no empty or partial directory that looks like a result."""
    if out_dir is None or not writer:
        yield
        return
    out_dir = Path(out_dir)
    created = preflight(out_dir)
    try:
        with claimed(out_dir):
            remove_stale_temporaries(out_dir)
            yield
    except BaseException:
        if created and not any(out_dir.iterdir()):
            _remove_if_empty(out_dir)
        raise


def remove_stale_temporaries(out_dir: Path) -> None:
    """Half-written files (``.NAME.*.tmp``) that a killed run left behind: never read, removed once the directory
    is ours (the lock is held, so no live writer owns them)."""
    for tmp in Path(out_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def clear_outputs(out_dir: Path) -> None:
    """Remove an earlier run's files (``--overwrite``), so that a crash cannot leave them looking current."""
    for name in OUTPUTS:
        (Path(out_dir) / name).unlink(missing_ok=True)
