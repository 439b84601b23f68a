"""`clpeft sweep`: grid expansion, Ray and in-process engines, skipping finished runs, failure records."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clpeft.cli import main
from clpeft.errors import ClpeftError
from clpeft.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def scenario_path(tmp_path, fast_scenario):
    fast_scenario["model"] = {"backbone": "lenet", "pretrained": False}  # cheap: the sweep is under test
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(fast_scenario))
    return path


def write_sweep(tmp_path, scenario_path, **spec):
    spec = {"scenario": str(scenario_path), "out": str(tmp_path / "sweep"), **spec}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_expands_to_every_combination_with_dotted_overrides(tmp_path, scenario_path):
    path = write_sweep(tmp_path, scenario_path, grid={"strategy": ["finetune", "prototype"], "seed": [0, 1, 2],
                                                      "train.lr": [0.01, 0.001]},
                       include=[{"strategy": "joint", "seed": 5}], fixed={"train": {"epochs": 2}})
    sweep = load_sweep(path)
    assert len(sweep.configs) == 2 * 3 * 2 + 1
    assert len({c.run_id for c in sweep.configs}) == len(sweep.configs)
    assert {(c.strategy, c.seed, c.train.lr) for c in sweep.configs[:12]} == {
        (s, seed, lr) for s in ("finetune", "prototype") for seed in (0, 1, 2) for lr in (0.01, 0.001)}
    assert all(c.train.epochs == 2 for c in sweep.configs)
    assert sweep.configs[-1].strategy == "joint" and sweep.configs[-1].seed == 5


@pytest.mark.parametrize("spec,message", [
    ({"grid": {"strategy": ["finetune"]}, "typo": 1}, "unknown key 'typo'"),
    ({"grid": {"lr": [0.1]}}, "unknown key 'lr'"),
    ({"grid": {"optimizer.lr": [0.1]}}, "must start with one of train"),
    ({"grid": {"seed": []}}, "empty list"),
    ({}, "defines no runs"),
    ({"grid": {"strategy": ["nope"]}}, "unknown strategy 'nope'"),
])
def test_bad_sweep_files_fail_with_one_line(tmp_path, scenario_path, spec, message):
    with pytest.raises(ClpeftError, match=message):
        load_sweep(write_sweep(tmp_path, scenario_path, **spec))


def test_failed_run_is_recorded_the_sweep_goes_on_and_the_report_lists_it(tmp_path, scenario_path):
    # an absurd SGD rate makes the loss overflow: the run must fail loudly, not finish with garbage
    path = write_sweep(tmp_path, scenario_path, grid={"train.lr": [1e30, 0.05]}, fixed={"train": {"optimizer": "sgd"}})
    sweep = load_sweep(path)
    summary = run_sweep(sweep, engine="local", log=lambda line: None)
    assert (summary["done"], summary["failed"]) == (1, 1)
    bad, good = summary["records"]
    assert bad["status"] == "failed" and "NaN or infinite" in bad["error"]
    failure = json.loads((sweep.out / bad["run_id"] / "failed.json").read_text())
    assert failure["config"]["train"]["lr"] == 1e30 and "Traceback" in failure["traceback"]
    assert not (sweep.out / bad["run_id"] / "results.json").exists()
    assert json.loads((sweep.out / "sweep.json").read_text())["failed"] == 1
    report = (sweep.report / "index.md").read_text()
    assert "Failed runs (1" in report and bad["run_id"] in report
    assert "Failed runs" in (sweep.report / "index.html").read_text()


def test_relaunched_sweep_after_a_kill_runs_only_unfinished_runs(tmp_path, scenario_path):
    path = write_sweep(tmp_path, scenario_path, grid={"seed": [0, 1, 2]}, fixed={"train": {"epochs": 3}})
    sweep = load_sweep(path)
    cmd = [sys.executable, "-m", "clpeft", "sweep", str(path), "--engine", "local", "--no-report"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = sweep.out / sweep.configs[0].run_id / "results.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert first.exists() and proc.returncode == -signal.SIGKILL, "killed too early or finished too soon"
    finished_before = {c.run_id: (sweep.out / c.run_id / "results.json").stat().st_mtime_ns
                       for c in sweep.configs if (sweep.out / c.run_id / "results.json").exists()}
    assert len(finished_before) < 3
    assert main(["sweep", str(path), "--engine", "local", "--no-report"]) == 0
    summary = json.loads((sweep.out / "sweep.json").read_text())
    status = {r["run_id"]: r["status"] for r in summary["records"]}
    assert {rid for rid, s in status.items() if s == "skipped"} == set(finished_before)
    assert sum(s == "done" for s in status.values()) == 3 - len(finished_before)
    for run_id, mtime in finished_before.items():  # not rewritten
        assert (sweep.out / run_id / "results.json").stat().st_mtime_ns == mtime


def test_ray_engine_runs_each_run_once_as_a_task_and_matches_in_process(tmp_path, toy_plugin):
    """A user's strategy, data set and backbone (plugin files) in Ray workers, which import them themselves."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'clpeft[ray]'")
    from conftest import TOY_SCENARIO

    scenario = tmp_path / "toy.yaml"
    scenario.write_text(yaml.safe_dump({**TOY_SCENARIO, "imports": [str(toy_plugin)]}))
    plugin = ROOT / "examples" / "plugins" / "l2_anchor.py"
    path = write_sweep(tmp_path, scenario, grid={"strategy": ["l2_anchor", "prototype"], "train.lr": [0.05, 1e30]},
                       fixed={"train": {"optimizer": "sgd"}}, imports=[str(plugin)])
    sweep = load_sweep(path)
    summary = run_sweep(sweep, engine="ray", workers=2, log=lambda line: None)
    assert summary["engine"] == "ray" and summary["runs"] == 4
    assert summary["failed"] == 1  # l2_anchor at 1e30; the prototype never takes a gradient step
    again = run_sweep(sweep, engine="ray", workers=2, log=lambda line: None)
    assert (again["skipped"], again["failed"]) == (3, 1)  # finished runs are skipped, the failed one retried
    local = load_sweep(path, out=tmp_path / "local")
    run_sweep(local, engine="local", report=False, log=lambda line: None)
    for config in sweep.configs:
        ray_file, local_file = sweep.out / config.run_id / "results.json", local.out / config.run_id / "results.json"
        assert ray_file.exists() == local_file.exists()
        if ray_file.exists():
            assert json.loads(ray_file.read_text())["accuracy_matrix"] == json.loads(local_file.read_text())["accuracy_matrix"]
