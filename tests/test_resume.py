"""Crash-safe resume: a run killed mid-stream and resumed writes the same results file as one that never stopped."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from clpeft.checkpoint import CHECKPOINT, load_checkpoint
from clpeft.cli import main
from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.run import run

ROOT = Path(__file__).resolve().parent.parent


class Crash(RuntimeError):
    pass


def crash_after(k):
    def hook(i, strategy, stream):
        if i == k:
            raise Crash(f"simulated crash after experience {k}")
    return hook


def test_sigkill_during_experience_3_then_resume_gives_the_same_results_file(tmp_path, fast_scenario, monkeypatch):
    """Same seed, same machine, same thread count: the killed run works with one thread (OMP_NUM_THREADS=1),
    so the resumed and the clean run here do too (the recorded losses differ in their last bits otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _sigkill_then_resume(tmp_path, fast_scenario)
    finally:
        torch.set_num_threads(threads)


def _sigkill_then_resume(tmp_path, fast_scenario):
    fast_scenario["stream"].update(n_experiences=5, first_experience_classes=2)
    fast_scenario["train"]["epochs"] = 2
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(fast_scenario))
    args = ["run", str(path), "--strategy", "finetune", "--pet", "lora", "--seed", "3", "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "clpeft", *args, "--out", str(killed)], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    state = None
    while time.time() < deadline and proc.poll() is None:
        if (killed / CHECKPOINT).exists():
            try:
                state = torch.load(killed / CHECKPOINT, weights_only=True)
            except Exception:  # noqa: BLE001 - cannot happen with atomic writes, but never kill on a guess
                state = None
            if state is not None and state["experience"] >= 2:
                proc.send_signal(signal.SIGKILL)  # now inside experience 3 (0-based), or its evaluation
                break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "results.json").exists()
    assert state["experience"] in (2, 3)
    assert main([*args, "--out", str(killed), "--resume"]) == 0
    assert not (killed / CHECKPOINT).exists()  # removed once the results are written
    clean = tmp_path / "clean"
    assert main([*args, "--out", str(clean)]) == 0
    assert (killed / "results.json").read_bytes() == (clean / "results.json").read_bytes()


LENET = {"model": {"backbone": "lenet", "pretrained": False}}  # cheap where the strategy needs no ViT


@pytest.mark.parametrize("strategy,pet,scenario_extra", [
    ("lae", "adapter", {}),  # offline PET born at experience 1, EMA state
    ("wa", "adapter", {"options": {"memory_size": 20}}),  # exemplar memory and teacher
    ("exssnet", "supermask", {**LENET, "options": {"kkt": "always"}}),  # masks, used weights, KKT record
    ("joint", None, LENET),  # the data of earlier experiences
])
def test_every_resumable_strategy_continues_exactly(tmp_path, fast_scenario, strategy, pet, scenario_extra):
    fast_scenario["train"]["epochs"] = 2 if strategy == "lae" else 1
    config = resolve(fast_scenario, strategy=strategy, pet=pet, overrides=scenario_extra)
    with pytest.raises(Crash):
        run(config, out_dir=tmp_path / "a", after_experience=crash_after(1))
    assert load_checkpoint(tmp_path / "a", config.run_id)["experience"] == 0
    resumed = run(config, out_dir=tmp_path / "a", resume=True)
    clean = run(config, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()
    assert resumed["accuracy_matrix"] == clean["accuracy_matrix"]


def test_resume_refuses_another_config_and_unresumable_strategies(tmp_path, fast_scenario):
    config = resolve(fast_scenario, strategy="finetune")
    with pytest.raises(Crash):
        run(config, out_dir=tmp_path, after_experience=crash_after(1))
    other = resolve(fast_scenario, strategy="finetune", seed=5)
    with pytest.raises(ClpeftError, match="another configuration"):
        run(other, out_dir=tmp_path, resume=True)
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ClpeftError, match="cannot be read"):
        run(config, out_dir=tmp_path, resume=True)
    ewc = resolve(fast_scenario, strategy="ewc")
    with pytest.raises(Crash):
        run(ewc, out_dir=tmp_path / "ewc", after_experience=crash_after(1))
    with pytest.raises(ClpeftError, match="cannot resume"):
        run(ewc, out_dir=tmp_path / "ewc", resume=True)


def tensorboard_scalars(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.glob("events.out.tfevents.*"))
    assert len(files) == 1, files  # an earlier attempt's events are not left beside the replayed ones
    acc = EventAccumulator(str(files[0]))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_history(folder: Path) -> list[dict]:
    """The history rows of the one offline W&B run in ``folder`` (its record log: 32 KiB blocks of chunks)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    runs = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    data, pos, buf, rows = runs[0].read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                row = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                rows.append({k: v for k, v in row.items() if k not in ("_timestamp", "_runtime")})  # wall clock
    return rows


def test_live_logs_after_a_crash_and_resume_equal_an_uninterrupted_runs(tmp_path, fast_scenario, monkeypatch):
    """Round two, item 3: --log csv after a kill and --resume kept only the resumed experiences' rows."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    fast_scenario["loggers"] = ["csv", "tensorboard", "wandb"]
    config = resolve(fast_scenario, strategy="finetune")
    run(config, out_dir=tmp_path / "clean")
    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):  # experience 1 is logged, but the checkpoint holds experience 0 only
        run(config, out_dir=crashed, after_experience=crash_after(1))
    assert len((crashed / "logs" / "experiences.csv").read_text().splitlines()) == 1 + 2
    run(config, out_dir=crashed, resume=True)
    for name in ("epochs.csv", "experiences.csv"):
        assert (crashed / "logs" / name).read_bytes() == (tmp_path / "clean" / "logs" / name).read_bytes()
    clean_tb = tensorboard_scalars(tmp_path / "clean" / "logs" / "tensorboard")
    assert clean_tb["eval/accuracy_seen"] and tensorboard_scalars(crashed / "logs" / "tensorboard") == clean_tb
    clean_wb = wandb_history(tmp_path / "clean" / "logs" / "wandb")
    assert sum("eval/accuracy_seen" in row for row in clean_wb) == 3 and wandb_history(crashed / "logs" / "wandb") == clean_wb
