"""No silent wrong number: regressions for what was once averaged, lost or reported as fine.

1. a report never averages runs that differ in a setting as if they were seeds;
2. (``test_bad_inputs``) resuming into another configuration's results is refused;
3. single-class experiences: every strategy either trains parameters that move or is refused;
4. (``test_lae``) an LAE warm-up that takes every epoch is refused;
5. a run that could not learn is marked ``diverged`` in results, sweep status and report;
6. (``test_bad_inputs``) a second run into a directory in use fails at once; here, Ctrl-C says how to go on.
"""
import json
import time
from pathlib import Path

import pytest
import yaml

from clpeft.cli import main
from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.reports.report import aggregate, build_report
from clpeft.reports.results import assess_health, chance_threshold, learned_right_after
from clpeft.run import run
from clpeft.strategies import STRATEGIES
from clpeft.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parent.parent
LENET = {"backbone": "lenet", "pretrained": False}


@pytest.fixture
def lenet_scenario(fast_scenario):
    fast_scenario["model"] = dict(LENET)
    fast_scenario["train"].update(lr=0.01, epochs=1)
    return fast_scenario


def write(tmp_path, scenario, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(scenario))
    return path


def test_report_keeps_runs_with_different_settings_apart_and_counts_distinct_seeds(tmp_path, lenet_scenario):
    path = write(tmp_path, lenet_scenario)
    for seed, epochs in [(0, 1), (0, 2), (1, 1)]:
        assert main(["run", str(path), "--seed", str(seed), "--epochs", str(epochs), "--quiet",
                     "--out", str(tmp_path / "runs" / f"e{epochs}s{seed}")]) == 0
    for lr in (0.01, 0.02):  # a sweep over train.lr: two settings, never one row
        assert main(["run", str(path), "--seed", "0", "--set", f"train.lr={lr}", "--set", "train.epochs=2", "--quiet",
                     "--out", str(tmp_path / "runs" / f"lr{lr}")]) == 0
    import shutil

    shutil.copytree(tmp_path / "runs" / "e1s0", tmp_path / "runs" / "copy_of_e1s0")  # the same run twice
    from clpeft.reports.report import load_runs

    rows = aggregate(load_runs([tmp_path / "runs"]).results)
    labels = {row.label: row for row in rows}
    assert set(labels) == {"finetune [train.epochs=1, train.lr=0.01]", "finetune [train.epochs=2, train.lr=0.01]",
                           "finetune [train.epochs=2, train.lr=0.02]"}
    one_epoch = labels["finetune [train.epochs=1, train.lr=0.01]"]
    assert sorted(one_epoch.seeds) == [0, 1] and len(one_epoch.duplicates) == 1  # counted once, listed apart
    two_epochs = labels["finetune [train.epochs=2, train.lr=0.01]"]  # --epochs 2 and --set train.epochs=2: one setting
    assert two_epochs.seeds == [0] and len(two_epochs.duplicates) == 1
    build_report([tmp_path / "runs"], tmp_path / "report")
    text = (tmp_path / "report" / "index.md").read_text()
    assert "| finetune [train.epochs=1, train.lr=0.01] | 2 |" in text
    assert "Settings that differ between rows:" in text and "| method | train.epochs | train.lr |" in text
    assert "Duplicate runs of a seed already counted" in text and text.count("/results.json |") == 2
    csv_rows = (tmp_path / "report" / "runs.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 6 and "train.lr" in csv_rows[0] and "final_accuracy" in csv_rows[0]


def test_an_unreadable_results_file_is_listed_and_blocks_nothing(tmp_path, lenet_scenario):
    path = write(tmp_path, lenet_scenario)
    assert main(["run", str(path), "--quiet", "--out", str(tmp_path / "runs" / "good")]) == 0
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "results.json").write_text('{"run_id": ')
    (tmp_path / "runs" / "good" / "runtime.json").write_text("not json")  # damaged wall times: the run still counts
    assert main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "index.md").read_text()
    assert "Unreadable results (1, not in the tables above)" in text and "broken/results.json" in text
    assert "| finetune | 1 |" in text


def follow_advice(message: str, scenario: dict) -> dict:
    """Apply every ``stream.KEY: VALUE`` a refusal names (and a ``drop stream.KEY``) to ``scenario``."""
    import re

    for key, value in re.findall(r"stream\.(\w+): (\d+)", message):
        scenario["stream"][key] = int(value)
    for key in re.findall(r"drop stream\.(\w+)", message):
        scenario["stream"].pop(key, None)
    return scenario


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_ten_by_one_stream_runs_where_a_later_experience_learns_and_its_refusal_advice_works(name, lenet_scenario):
    """10 experiences of one class: experience 0's seen-class loss is identically 0, so it is skipped where a later
    experience's loss covers its class; a method whose loss never covers 2 classes for some class (current-scope
    losses, or training only in experience 0) is refused, and the settings the refusal names are then accepted."""
    lenet_scenario["stream"] = {"dataset": "digits", "n_experiences": 10}
    cls = STRATEGIES[name]
    pet = {"lae": "adapter", "jare": "lora", "exssnet": "supermask", "ssnet": "supermask", "supsup": "supermask",
           "inflora": "lora", "sd_lora": "lora", "ease": "adapter", "mos": "adapter",
           "aper": "adapter"}.get(name)
    lenet_scenario["train"]["epochs"] = 2  # LAE's warm-up leaves it one epoch
    config = resolve(lenet_scenario, strategy=name, pet=pet) if (
        cls.trains_in == "none" or (cls.trains_in == "every" and cls.effective_loss_scope(
            resolve(dict(lenet_scenario, stream={"dataset": "digits", "n_experiences": 5}), strategy=name,
                    pet=pet).train) == "seen")) else None
    if config is not None:
        assert config.stream.n_experiences == 10
        return
    with pytest.raises(ClpeftError, match="the loss is identically 0 and that class can never be learned") as refusal:
        resolve(lenet_scenario, strategy=name, pet=pet)
    fixed = follow_advice(str(refusal.value), lenet_scenario)
    assert fixed["stream"] != {"dataset": "digits", "n_experiences": 10}
    resolve(fixed, strategy=name, pet=pet)  # the advice, followed, is accepted


def test_a_ten_by_one_stream_skips_experience_0_says_so_and_learns_the_rest(lenet_scenario, capsys):
    lenet_scenario["stream"] = {"dataset": "digits", "n_experiences": 10}
    lenet_scenario["train"]["epochs"] = 2
    results = run(resolve(lenet_scenario, strategy="replay"))
    note = "experience 0 holds 1 class: a cross-entropy over it is identically 0, so its training is skipped"
    assert [n for n in results["notes"] if note in n] and note in capsys.readouterr().err
    assert {e["experience"] for e in results["training"]} == set(range(1, 10))
    assert results["health"]["status"] == "ok", results["health"]
    (a, b), (na, nb) = results["accuracy_matrix"][1][:2], results["test_samples"][:2]
    assert a > 0 and (a * na + b * nb) / (na + nb) > chance_threshold(2, na + nb)  # class 0 learned with experience 1


def test_b2_inc1_trains_and_every_phase_moves_its_parameters(lenet_scenario):
    lenet_scenario["stream"] = {"dataset": "digits", "n_experiences": 9, "first_experience_classes": 2}
    lenet_scenario["train"]["epochs"] = 2
    result = run(resolve(lenet_scenario, strategy="joint"))
    assert len(result["accuracy_matrix"]) == 9 and result["health"]["status"] == "ok", result["health"]
    assert {e["experience"] for e in result["training"]} == set(range(9))


def test_a_phase_that_moves_nothing_fails_the_run(lenet_scenario, monkeypatch):
    from clpeft.strategies.finetune import Finetune

    monkeypatch.setattr(Finetune, "optimizer_groups", lambda self, params: [{"params": params, "lr": 0.0}])
    with pytest.raises(ClpeftError, match="no trainable parameter moved during experience 0"):
        run(resolve(lenet_scenario, strategy="finetune"))


def test_a_loss_that_is_zero_everywhere_fails_the_run(lenet_scenario, monkeypatch):
    from clpeft.strategies.finetune import Finetune

    monkeypatch.setattr(Finetune, "training_loss", lambda self, logits, y, x: 0.0 * logits.sum())
    with pytest.raises(ClpeftError, match="the training loss was exactly 0 at every step of experience 0"):
        run(resolve(lenet_scenario, strategy="finetune"))


def test_health_verdicts():
    fine = [{"experience": 0, "phase": "train", "epoch": 0, "steps": 9, "loss": 0.9, "first_step_loss": 2.3}]
    flat = [{"experience": 0, "phase": "train", "epoch": 0, "steps": 9, "loss": 2.29, "first_step_loss": 2.3}]
    assert assess_health(0.8, 10, 360, fine) == {"status": "ok", "reasons": []}
    assert assess_health(0.8, 10, 360, flat)["status"] == "ok"  # a good result needs no falling loss
    forgot = assess_health(0.11, 10, 360, fine)  # learned (the loss fell) yet ends at chance
    assert forgot["status"] == "at_chance" and "is at chance" in forgot["reasons"][0]
    # a run with test-time adaptation is judged on the trained model's own accuracy, and the reason says which
    tta = assess_health(0.11, 10, 360, fine, "final accuracy before test-time adaptation")
    assert tta["reasons"][0].startswith("final accuracy before test-time adaptation 11.0 % is at chance")
    stuck = assess_health(0.11, 10, 360, flat)  # at chance and nothing learned
    assert stuck["status"] == "not_learned" and "no training phase lowered its loss" in stuck["reasons"][0]
    rising = fine + [{"experience": 1, "phase": "train", "epoch": 0, "steps": 9, "loss": 30.0, "first_step_loss": 2.0,
                      "classes": 10}]
    verdict = assess_health(0.8, 10, 360, rising)
    assert verdict["status"] == "diverged" and "rose from 2 to 30 in experience 1" in verdict["reasons"][0]
    assert "above the 2.3 of a uniform guess" in verdict["reasons"][0]
    assert chance_threshold(10, 360) == pytest.approx(0.1 + 2 * (0.09 / 360) ** 0.5)


def test_each_phase_is_judged_against_its_own_start_and_a_uniform_guess():
    # ExSSNeT's weight phase starts right after its mask phase fitted (0.133) and wobbles up to 0.294 on 2 classes:
    # still far better than guessing (ln 2 = 0.693), so not diverged
    two_phases = [
        {"experience": 0, "phase": "mask", "epoch": 0, "steps": 25, "loss": 0.576, "first_step_loss": 0.698, "classes": 2},
        {"experience": 0, "phase": "mask", "epoch": 1, "steps": 25, "loss": 0.292},
        {"experience": 0, "phase": "weights", "epoch": 0, "steps": 25, "loss": 0.504, "first_step_loss": 0.133,
         "classes": 2},
        {"experience": 0, "phase": "weights", "epoch": 1, "steps": 25, "loss": 0.294}]
    assert assess_health(0.43, 10, 1000, two_phases) == {"status": "ok", "reasons": []}
    worse = two_phases[:3] + [{"experience": 0, "phase": "weights", "epoch": 1, "steps": 25, "loss": 0.9}]
    verdict = assess_health(0.43, 10, 1000, worse)
    assert verdict["status"] == "diverged" and "(weights phase)" in verdict["reasons"][0]


def test_a_long_streams_health_reasons_stay_one_short_line_each():
    """100 experiences at chance, or 100 phases whose loss rose: each reason names five and counts the rest."""
    learned = [{"experience": e, "accuracy": 0.5, "classes": 2, "samples": 10} for e in range(100)]
    rising = [{"experience": e, "phase": "train", "epoch": 0, "steps": 2, "loss": 9.0, "first_step_loss": 0.7,
               "classes": 2} for e in range(100)]
    verdict = assess_health(0.001, 200, 1000, rising, learned=learned)
    assert verdict["status"] == "diverged" and len(verdict["reasons"]) == 5 + 1 + 2
    assert verdict["reasons"][5] == "… and in 95 more phases"
    chance = next(r for r in verdict["reasons"] if r.startswith("right after"))
    assert "experiences 0 (50.0 % on 2 classes)" in chance and "4 (50.0 %" in chance and "5 (50.0 %" not in chance
    assert "and 95 more (100 of 100)" in chance and len(chance) < 300


def test_an_experience_at_chance_on_its_own_classes_right_after_learning_is_not_learned():
    fine = [{"experience": 0, "phase": "train", "epoch": 0, "steps": 9, "loss": 0.4, "first_step_loss": 0.7,
             "classes": 2}]
    learned = [{"experience": 0, "accuracy": 0.95, "classes": 2, "samples": 72},
               {"experience": 1, "accuracy": 0.51, "classes": 2, "samples": 72},  # 0.5 + 2 SE = 0.618
               {"experience": 2, "accuracy": float("nan"), "classes": 2, "samples": 72},  # no task-IL head: not judged
               {"experience": 3, "accuracy": 0.0, "classes": 1, "samples": 36}]  # one class: no chance to beat
    verdict = assess_health(0.8, 10, 360, fine, learned=learned)
    assert verdict["status"] == "not_learned"
    assert verdict["reasons"] == ["right after it was learned, experience 1 (51.0 % on 2 classes) scored at chance "
                                  "on its own classes"]
    learned[1]["accuracy"] = 0.62
    assert assess_health(0.8, 10, 360, fine, learned=learned)["status"] == "ok"
    assert learned_right_after([[0.9, 0.0], [0.8, 0.7]], [(0, 2), (2, 5)], [10, 15]) == [
        {"experience": 0, "accuracy": 0.9, "classes": 2, "samples": 10},
        {"experience": 1, "accuracy": 0.7, "classes": 3, "samples": 15}]


def test_a_run_whose_last_experience_scores_well_but_that_learned_nothing_is_not_ok():
    # the case: loss flat at ln(seen classes), experience 0 at 0.500 on its 2 classes, yet A_T above chance
    results = run(resolve({"name": "flat", "stream": {"dataset": "digits", "n_experiences": 5},
                           "model": {"backbone": "lenet", "pretrained": False},
                           "train": {"epochs": 1, "lr": 1.0e-6, "batch_size": 64}}, strategy="finetune"))
    assert results["metrics"]["final_accuracy"] > chance_threshold(10, sum(results["test_samples"]))
    assert results["health"]["status"] == "not_learned"
    assert "scored at chance on their own classes" in results["health"]["reasons"][0]


def test_a_run_that_cannot_learn_is_marked_in_results_sweep_and_report(tmp_path, lenet_scenario):
    path = write(tmp_path, lenet_scenario)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"scenario": str(path), "out": str(tmp_path / "sweep"),
                                          "grid": {"train.lr": [1e-9, 0.01]}}))
    summary = run_sweep(load_sweep(sweep_file), engine="local", log=lambda line: None)
    assert (summary["not_learned"], summary["done"], summary["failed"]) == (1, 1, 0)
    bad = next(r for r in summary["records"] if r["status"] == "not_learned")
    assert "scored at chance on" in bad["reasons"][0] and "no training phase lowered its loss" in bad["reasons"][0]
    results = json.loads((Path(bad["out"]) / "results.json").read_text())
    assert results["health"]["status"] == "not_learned"
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["not_learned"] == 1
    report = (tmp_path / "sweep" / "report" / "index.md").read_text()
    assert "⚠ 1/1 not learned" in report and "Runs marked diverged, not learned or at chance (1" in report
    again = run_sweep(load_sweep(sweep_file), engine="local", log=lambda line: None)
    assert again["skipped"] == 2 and any(r.get("health") == "not_learned" for r in again["records"])


HELD = """
import os
import time
from clpeft.strategies import register
from clpeft.strategies.finetune import Finetune

@register("held_finetune")
class HeldFinetune(Finetune):
    def before_experience(self):
        super().before_experience()
        deadline = time.time() + 120
        while self.experience_index >= 1 and os.path.exists(HOLD) and time.time() < deadline:
            time.sleep(0.05)  # held after experience 0's checkpoint until the test presses Ctrl-C
"""


def test_ctrl_c_says_how_far_the_run_got_and_how_to_continue(tmp_path, lenet_scenario, capsys):
    """Ctrl-C (here: an interrupt of the main thread once experience 0 is checkpointed) exits 130 with one line."""
    import _thread
    import signal
    import threading

    hold = tmp_path / "hold"
    hold.touch()
    plugin = tmp_path / "held.py"
    plugin.write_text(f"HOLD = {str(hold)!r}\n" + HELD)
    lenet_scenario["train"]["epochs"] = 5
    path = write(tmp_path, lenet_scenario)
    out = tmp_path / "run"

    def interrupt_after_the_first_checkpoint():
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "checkpoint.pt").exists():
            time.sleep(0.01)
        _thread.interrupt_main()

    # Ctrl-C as a terminal delivers it: Python's own SIGINT handler (an earlier test in this process, e.g. one that
    # starts Ray or torchrun workers, may have replaced it, and interrupt_main does nothing without it)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        watcher = threading.Thread(target=interrupt_after_the_first_checkpoint, daemon=True)
        watcher.start()
        code = main(["run", str(path), "--import", str(plugin), "--strategy", "held_finetune", "--quiet", "--out",
                     str(out)])
        watcher.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(err) == 1, err
    assert err[0].startswith("clpeft: interrupted after experience 0") and f"--resume --out {out}" in err[0]
    assert not (out / "results.json").exists() and (out / "checkpoint.pt").exists()
    hold.unlink()
    assert main(["run", str(path), "--import", str(plugin), "--strategy", "held_finetune", "--quiet", "--out", str(out),
                 "--resume"]) == 0
    assert (out / "results.json").exists()
