"""torchrun on CPU (gloo): a run on 2 processes gives the single-process accuracy matrix.

Every rank trains on its slice of the single-process global batch and gradients are summed over ranks,
so the two runs differ only in floating-point summation order. Stated tolerance: every entry of the
accuracy matrix within 0.02 of the single-process run (what we measured: identical matrices).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.02


def launch(args, out, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] \
        if nproc > 1 else [sys.executable]
    return subprocess.run([*prefix, "-m", "clpeft", "run", *args, "--out", str(out), "--quiet"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def scenario_file(tmp_path, fast_scenario):
    lenet = {"backbone": "lenet", "pretrained": False}  # cheap where no PET needs the ViT
    fast_scenario["strategies"] = {"finetune": {"model": lenet}, "wa": {"options": {"memory_size": 20}, "model": lenet},
                                   "exssnet": {"model": lenet, "pet": "supermask"},
                                   "lae": {"options": {"pet_warmup_epochs": 0}}}  # 1 epoch: no head-only warm-up
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(fast_scenario))
    return path


@pytest.mark.parametrize("strategy,pet", [("finetune", "none"), ("lae", "adapter"), ("wa", "none"), ("exssnet", None)])
def test_two_gloo_processes_match_one_process(tmp_path, scenario_file, strategy, pet):
    args = [str(scenario_file), "--strategy", strategy] + (["--pet", pet] if pet else [])
    single, double = launch(args, tmp_path / "one", 1), launch(args, tmp_path / "two", 2)
    assert single.returncode == 0, single.stderr[-2000:]
    assert double.returncode == 0, double.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert b["distributed"] == {"processes": 2, "backend": "gloo", "batch_size_global": 64}
    assert "distributed" not in a
    for row_a, row_b in zip(a["accuracy_matrix"], b["accuracy_matrix"], strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            assert abs(x - y) <= TOLERANCE, (a["accuracy_matrix"], b["accuracy_matrix"])
    assert double.stdout.count("A_T=") == 1  # rank 0 alone reports (and writes)
    assert not (tmp_path / "two" / "checkpoint.pt").exists()


def test_strategies_that_are_not_ddp_safe_refuse(tmp_path, scenario_file):
    result = launch([str(scenario_file), "--strategy", "replay"], tmp_path / "r", 2)
    assert result.returncode != 0
    assert "not DDP-safe" in result.stderr and "without torchrun" in result.stderr
