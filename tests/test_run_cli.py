"""Runs end to end: determinism, results files, reports, and one-line errors with exit code 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clpeft.cli import main
from clpeft.utils.io import atomic_write, atomic_write_json

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def scenario_file(tmp_path, fast_scenario):
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(fast_scenario))
    return path


def test_same_seed_gives_an_identical_results_file_and_a_report(tmp_path, scenario_file, capsys):
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        assert main(["run", str(scenario_file), "--strategy", "finetune", "--pet", "lora", "--seed", "1",
                     "--out", str(out), "--quiet"]) == 0
        outs.append(out)
    a, b = ((o / "results.json").read_bytes() for o in outs)
    assert a == b
    results = json.loads(a)
    assert len(results["accuracy_matrix"]) == 3 and results["parameters"]["pet"] > 0
    assert (outs[0] / "results.csv").read_text().count("\n") == 1 + 9
    assert "train_seconds_per_experience" in json.loads((outs[0] / "runtime.json").read_text())
    assert main(["run", str(scenario_file), "--strategy", "prototype", "--seed", "2", "--out", str(tmp_path / "p"), "--quiet"]) == 0
    report = tmp_path / "report"
    assert main(["report", str(tmp_path), "-o", str(report)]) == 0
    text = (report / "index.md").read_text()
    assert "finetune+lora" in text and "prototype" in text and "± 0.0" in text
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == ["stream0_accuracy_curve.png", "stream0_accuracy_matrix.png", "stream0_forgetting.png",
                    "stream0_loss.png"]  # prototype has no training loss; finetune's is drawn
    assert all((report / p).stat().st_size > 5000 for p in pngs)
    assert (report / "index.html").read_text().startswith("<!doctype html>")


def test_supsup_from_the_command_line_reports_task_il_and_task_inference(tmp_path, scenario_file):
    out = tmp_path / "supsup"
    for k in range(2):
        assert main(["run", str(scenario_file), "--strategy", "supsup", "--pet", "supermask", "--backbone", "lenet",
                     "--seed", "0", "--out", str(out / str(k)), "--quiet"]) == 0
    a, b = ((out / str(k) / "results.json").read_bytes() for k in range(2))
    assert a == b  # deterministic, task inference included
    results = json.loads(a)
    assert results["config"]["model"]["backbone"] == "lenet" and len(results["task_inference_matrix"]) == 3
    assert results["strategy_summary"]["variant"] == "supsup"
    assert main(["report", str(out / "0"), "-o", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "index.md").read_text()
    assert "| supsup+supermask | " in text and "task inference" in text


def _error_run(capsys, args):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("extra,match", [
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--pet", "ia3"], "unknown PET module 'ia3'"),
    (["--device", "cuda"], "use --device cpu"),
    (["--checkpoint", "__missing__.pth"], "does not exist"),
])
def test_bad_arguments_give_one_line_exit_2_and_no_results(tmp_path, scenario_file, capsys, extra, match):
    if extra[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is present, so asking for cuda is not an error here")
    out = tmp_path / "out"
    code, err = _error_run(capsys, ["run", str(scenario_file), "--out", str(out), "--quiet", *extra])
    assert code == 2 and len(err) == 1 and match in err[0]
    assert not out.exists() or not (out / "results.json").exists()


@pytest.mark.parametrize("content,match", [
    ("stream: {dataset: digits, n_experiences: 3\n", "not valid YAML at line"),
    ("stream: {dataset: nowhere}\n", "unknown stream dataset"),
    ("stream: {dataset: digits, n_experiences: 3}\n", "does not divide the 10 classes"),
    ("stream: {dataset: digits, n_experiences: 2}\ntrian: {}\n", "unknown key 'trian'"),
    ("stream: {dataset: digits, n_experiences: 2}\ntrain: {epoch: 1}\n", "unknown training setting 'epoch'"),
    ("stream: {dataset: fashion_mnist, root: /nonexistent, n_experiences: 2}\n", "dataset-fashion-mnist"),
])
def test_bad_scenarios_give_one_line_exit_2(tmp_path, capsys, content, match):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, err = _error_run(capsys, ["run", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and len(err) == 1 and match in err[0], err
    assert not (tmp_path / "o" / "results.json").exists()


def test_wrong_checkpoint_shape_is_a_one_line_error(tmp_path, scenario_file, capsys):
    from clpeft.models import create_backbone

    net, _ = create_backbone("vit_tiny_fmnist_scratch", pretrained=False)
    state = net.state_dict()
    state["pos_embed"] = torch.zeros(1, 17, 96)
    torch.save(state, tmp_path / "bad.pth")
    code, err = _error_run(capsys, ["run", str(scenario_file), "--checkpoint", str(tmp_path / "bad.pth"), "--quiet",
                                    "--out", str(tmp_path / "o")])
    assert code == 2 and "pos_embed" in err[0] and "shape" in err[0]


def test_cli_process_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "clpeft", "run", "no_such_scenario"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("clpeft: error: scenario 'no_such_scenario' not found")


def test_atomic_write_leaves_nothing_when_the_writer_crashes(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"ok": 1})

    def crash(path):
        path.write_text('{"half": ')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_every_flag_has_help_text():
    import argparse

    from clpeft.cli import parser

    top = parser()
    subparsers = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"clpeft {name} {action.option_strings or action.dest} has no --help text"


def test_run_flags_and_set_reach_the_resolved_config(tmp_path, scenario_file):
    from clpeft.cli import parser, run_overrides
    from clpeft.config import load_scenario, resolve

    args = parser().parse_args(["run", str(scenario_file), "--set", "train.lr=0.02", "--set", "pet.rank=3", "--pet", "lora",
                                "--set", "options.lam=1", "--epochs", "2", "--set", "stream.eval_order=dirichlet"])
    named, overrides = run_overrides(args)
    overrides.pop("options")
    config = resolve(load_scenario(str(scenario_file)), pet=named["pet"], overrides=overrides)
    assert (config.train.lr, config.train.epochs, config.pet_settings["rank"], config.stream.eval_order) == \
        (0.02, 2, 3, "dirichlet")
