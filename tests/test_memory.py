"""Freed heap memory goes back to the OS after every experience, so a long stream's resident memory stays bounded."""
import sys

import pytest

from clpeft.config import resolve
from clpeft.utils import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux's")
def test_release_freed_memory_calls_glibc_malloc_trim_on_linux():
    assert memory.release_freed_memory() is True


def test_the_run_loop_releases_freed_memory_after_every_experience(fast_scenario, monkeypatch):
    import clpeft.run as run_module

    calls = []
    monkeypatch.setattr(run_module, "release_freed_memory", lambda: calls.append(1) or True)
    fast_scenario["model"] = {"backbone": "lenet", "pretrained": False}
    run_module.run(resolve(fast_scenario, strategy="finetune"))
    assert len(calls) == 3  # one per experience of the fast scenario
