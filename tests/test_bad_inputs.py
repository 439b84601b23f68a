"""A catalogue of bad inputs and faults across the CLI, scenario YAML, sweeps, reports and the Python API.

Every case asserts: exit code 2 (the API: ClpeftError), exactly one line on stderr that names the problem
and the fix, no traceback, and no partial or valid-looking result left behind. Most cases fail when the run
is configured, before any data or model is built; the rest before the first experience trains.
"""
import json
import os
import shutil

import pytest
import torch
import yaml

from clpeft.cli import main
from clpeft.config import resolve
from clpeft.errors import ClpeftError

BASE = {
    "name": "bad",
    "stream": {"dataset": "digits", "n_experiences": 2},
    "model": {"backbone": "lenet", "pretrained": False},
    "train": {"epochs": 1, "lr": 0.001, "batch_size": 64},
}


def merged(**sections):
    out = json.loads(json.dumps(BASE))
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


# (id, scenario: dict | raw text, extra CLI arguments, fragment of the one-line error)
SCENARIO_CASES = [
    ("yaml-syntax", "stream: {dataset: digits, n_experiences: 3\n", [], "not valid YAML at line"),
    ("yaml-python-tag", "stream: !!python/object/apply:os.system ['true']\n", [], "YAML tag that is not allowed"),
    ("top-level-list", "- stream\n", [], "must be a mapping with at least a `stream:` section"),
    ("no-stream", "train: {epochs: 1}\n", [], "must be a mapping with at least a `stream:` section"),
    ("unknown-top-key", merged(trian={}), [], "unknown key 'trian'"),
    ("stream-as-list", merged(stream=["digits"]), [], "`stream:` in"),
    ("train-as-text", merged(train="fast"), [], "`train:` in"),
    ("unknown-train-key", merged(train={"epoch": 1}), [], "unknown training setting 'epoch'"),
    ("lr-text", merged(train={"lr": "abc"}), [], "train.lr must be a number, got 'abc'"),
    ("lr-nan", merged(train={"lr": float("nan")}), [], "train.lr must be a finite number"),
    ("lr-negative", merged(train={"lr": -0.1}), [], "train.lr must be > 0"),
    ("epochs-float", merged(train={"epochs": 1.5}), [], "train.epochs must be an integer, got 1.5"),
    ("epochs-negative", merged(train={"epochs": -1}), [], "train.epochs must be ≥ 0"),
    ("epochs-bool", merged(train={"epochs": True}), [], "train.epochs must be an integer, got True"),
    ("batch-zero", merged(train={"batch_size": 0}), [], "train.batch_size must be ≥ 1"),
    ("optimizer", merged(train={"optimizer": "rmsprop"}), [], "train.optimizer must be one of adam, adamw, sgd"),
    ("loss-scope", merged(train={"loss_scope": "all"}), [], "train.loss_scope must be one of seen, current"),
    ("grad-clip", merged(train={"grad_clip_norm": 0}), [], "train.grad_clip_norm must be > 0"),
    ("n-exp-text", merged(stream={"n_experiences": "five"}), [], "stream.n_experiences must be an integer, got 'five'"),
    ("n-exp-divide", merged(stream={"n_experiences": 3}), [], "does not divide the 10 classes"),
    ("n-exp-zero", merged(stream={"n_experiences": 0}), [], "stream.n_experiences must be ≥ 1"),
    ("class-order-seed", merged(stream={"class_order_seed": "abc"}), [], "class_order_seed must be an integer, `seed` or null"),
    ("class-order-short", merged(stream={"class_order": [0, 1]}), [], "must list each of the 10 classes"),
    ("class-order-and-seed", merged(stream={"class_order": list(range(10)), "class_order_seed": 3}), [], "not both"),
    ("dataset-unknown", merged(stream={"dataset": "nowhere"}), [], "unknown stream dataset 'nowhere'"),
    ("dataset-number", merged(stream={"dataset": 5}), [], "stream.dataset must be text, got 5"),
    ("eval-order", merged(stream={"eval_order": "random"}), [], "stream.eval_order must be one of"),
    ("dirichlet-alpha", merged(stream={"dirichlet_alpha": 0}), [], "stream.dirichlet_alpha must be > 0"),
    ("first-classes", merged(stream={"first_experience_classes": 11}), [], "does not split 10 classes"),
    ("stream-unknown-key", merged(stream={"size": 3}), [], "unknown stream setting 'size'"),
    ("backbone-unknown", merged(model={"backbone": "vit_gigantic_patch99"}), [], "unknown backbone 'vit_gigantic_patch99'"),
    ("head-std", merged(model={"head_init_std": -1}), [], "model.head_init_std must be > 0"),
    ("model-unknown-key", merged(model={"bakbone": "lenet"}), [], "unknown model setting 'bakbone'"),
    ("model-kwargs-list", merged(model={"kwargs": [1]}), [], "model.kwargs must be a mapping"),
    ("seed-float", merged(seed=1.7), [], "seed must be an integer, got 1.7"),
    ("seed-negative", merged(seed=-1), [], "seed must be ≥ 0"),
    ("amp", merged(amp="fp16"), [], "unknown amp mode 'fp16'"),
    ("strategies-list", merged(strategies=["lae"]), [], "`strategies:` in"),
    ("strategies-key", merged(strategies={"finetune": {"optons": {}}}), [], "unknown key 'optons' under strategies.finetune"),
    ("pet-rank", merged(pets={"lora": {"rank": 0}}), ["--pet", "lora"], "pets.lora.rank must be ≥ 1"),
    ("pet-unknown-key", merged(pets={"lora": {"rnk": 3}}), ["--pet", "lora"], "unknown lora setting 'rnk'"),
    ("pet-mode", merged(pets={"adapter": {"mode": "diagonal"}}), ["--pet", "adapter"], "pets.adapter.mode must be one of"),
    ("tta-knn", merged(tta={"lame": {"knn": 0}}), ["--tta", "lame"], "tta.lame.knn must be ≥ 1"),
    ("loggers-text", merged(loggers="csv"), [], "`loggers:` must be a list"),
    ("imports-text", merged(imports="plugin.py"), [], "`imports:` in"),
    ("imports-missing", merged(imports=["missing_plugin.py"]), [], "plugin file"),
    ("lae-warmup-takes-all", merged(strategies={"lae": {"pet": "adapter"}}), ["--strategy", "lae"],
     "never trains the PET after experience 0"),
    ("zero-epochs", merged(train={"epochs": 0}), [], "train.epochs is 0, so nothing would train"),
    # round two, item 4/7: a 10 × 1 stream runs where a later experience learns experience 0's class; refused
    # where a class could never be learned, and the advice names every setting that has to change
    ("single-class-first-session", merged(stream={"n_experiences": 10}), ["--strategy", "aper", "--pet", "adapter"],
     "set stream.first_experience_classes: 2 with stream.n_experiences: 9"),
    ("single-class-current", merged(stream={"n_experiences": 10}, train={"epochs": 2}),
     ["--strategy", "lae", "--pet", "adapter"], "set stream.n_experiences: 5 (2 classes each)"),
    ("supsup-weights", merged(strategies={"supsup": {"options": {"weight_epochs": 2}}}),
     ["--strategy", "supsup", "--pet", "supermask"], "supsup trains masks only"),
    ("lae-loss-scope", merged(train={"loss_scope": "seen", "epochs": 2}), ["--strategy", "lae", "--pet", "lora"],
     "lae always trains with loss_scope=current"),
]

CLI_CASES = [
    ("strategy-unknown", ["--strategy", "nope"], "unknown strategy 'nope'"),
    ("pet-unknown", ["--pet", "ia3"], "unknown PET module 'ia3'"),
    ("pet-refused", ["--strategy", "linear_probe", "--pet", "lora"], "does not train a PET module; drop --pet"),
    ("device-unknown", ["--device", "tpu"], "unknown device 'tpu'"),
    ("tta-unknown", ["--tta", "tent"], "unknown test-time adaptation 'tent'"),
    ("option-text", ["--strategy", "lae", "--pet", "adapter", "--epochs", "2", "--option", "ema_decay=abc"],
     "options.ema_decay must be a number, got 'abc'"),
    ("option-int", ["--strategy", "jare", "--pet", "lora", "--option", "slots=abc"], "options.slots must be an integer"),
    ("option-range", ["--strategy", "lae", "--pet", "adapter", "--epochs", "2", "--option", "ema_decay=1.5"],
     "options.ema_decay must be < 1"),
    ("option-no-value", ["--option", "nokey"], "--option needs KEY=VALUE"),
    ("option-unknown", ["--option", "alpha=1"], "strategy finetune has no option 'alpha'"),
    ("set-text", ["--set", "train.lr=abc"], "train.lr must be a number, got 'abc'"),
    ("set-section", ["--set", "optim.lr=1"], "must start with one of train"),
    ("set-plain-key", ["--set", "lr=1"], "--set lr: use a dotted key"),
    ("set-no-value", ["--set", "train.lr"], "--set needs KEY=VALUE"),
    ("set-pet-without-pet", ["--set", "pet.rank=4"], "the run has no PET module"),
    ("checkpoint-missing", ["--checkpoint", "__missing__.pth"], "does not exist; check the path"),
    # round two, item 6: settings that were accepted without a word
    ("dualprompt-no-e-blocks", ["--strategy", "dualprompt", "--option", "e_blocks=[]"], "at least one block with E-prompts"),
    ("slca-milestone-negative", ["--strategy", "slca", "--option", "milestones=[-1]"],
     "options.milestones of slca must be increasing epoch numbers ≥ 1, got [-1]"),
    ("wa-milestones-unsorted", ["--strategy", "wa", "--option", "milestones=[10, 5]"],
     "options.milestones of wa must be increasing epoch numbers"),
    ("prompt-pool-on-a-cnn", ["--strategy", "coda_prompt"], "use a ViT backbone, e.g. --backbone vit_tiny_fmnist"),
    ("l2p-init-range", ["--strategy", "l2p", "--option", "init_low=1", "--option", "init_high=0"],
     "l2p's prompts and keys are drawn from U(init_low, init_high): options.init_high must be > options.init_low"),
    ("lame-rbf-one-neighbour", ["--tta", "lame", "--set", "tta.affinity=rbf"],
     "tta.lame.knn must be ≥ 2 with the rbf affinity"),
]


def write_scenario(tmp_path, scenario):
    path = tmp_path / "scenario.yaml"
    path.write_text(scenario if isinstance(scenario, str) else yaml.safe_dump(scenario))
    return path


def assert_one_line_error(capsys, code, fragment, out_dir=None):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("clpeft: error: "), lines
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    if out_dir is not None:  # nothing that looks like a result, and no directory made for nothing
        assert not out_dir.exists() or not any(out_dir.glob("**/results.json"))


@pytest.mark.parametrize("case,scenario,extra,fragment", SCENARIO_CASES, ids=[c[0] for c in SCENARIO_CASES])
def test_bad_scenario_values_fail_before_anything_is_built(tmp_path, capsys, case, scenario, extra, fragment):
    if case == "imports-missing":
        scenario["imports"] = [str(tmp_path / "missing_plugin.py")]
    path = write_scenario(tmp_path, scenario)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), "--quiet", *extra])
    assert_one_line_error(capsys, code, fragment, out)
    assert not out.exists(), "a refused run must not create its directory"


@pytest.mark.parametrize("case,extra,fragment", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line_values_fail_with_one_line(tmp_path, capsys, case, extra, fragment):
    path = write_scenario(tmp_path, merged(strategies={"jare": {"pet_settings": {"targets": ["blocks.*.attn.proj"]}}}))
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), "--quiet", *extra])
    assert_one_line_error(capsys, code, fragment, out)
    assert not out.exists()


def test_asking_for_cuda_without_a_gpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present, so asking for cuda is not an error here")
    code = main(["run", str(write_scenario(tmp_path, BASE)), "--device", "cuda", "--out", str(tmp_path / "o"), "--quiet"])
    assert_one_line_error(capsys, code, "use --device cpu", tmp_path / "o")


def test_a_plugin_that_raises_on_import(tmp_path, capsys):
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('no such thing')\n")
    code = main(["run", str(write_scenario(tmp_path, BASE)), "--import", str(plugin), "--quiet", "--out", str(tmp_path / "o")])
    assert_one_line_error(capsys, code, "failed to import (RuntimeError: no such thing); fix the file", tmp_path / "o")


@pytest.mark.parametrize("body,expected", [
    ("import sys\nsys.exit(0)\n", "called sys.exit(0) while being imported"),
    ("import sys\nsys.exit(3)\n", "called sys.exit(3) while being imported"),
    ("raise KeyboardInterrupt\n", "failed to import (KeyboardInterrupt: ); fix the file"),
    ("import no_such_package_here\n", "failed to import (ModuleNotFoundError: No module named 'no_such_package_here')"),
])
def test_a_plugin_cannot_end_a_run_silently(tmp_path, capsys, body, expected):
    """Round two, item 2: sys.exit(0) in a plugin made `clpeft run` exit 0 with no output and no run."""
    plugin = tmp_path / "exits.py"
    plugin.write_text(body)
    code = main(["run", str(write_scenario(tmp_path, BASE)), "--import", str(plugin), "--quiet", "--out", str(tmp_path / "o")])
    assert code == 2
    assert_one_line_error(capsys, code, expected, tmp_path / "o")


def test_a_scenario_that_is_a_directory_or_missing(tmp_path, capsys):
    assert_one_line_error(capsys, main(["run", str(tmp_path), "--quiet"]), "is a directory; give a YAML file")
    assert_one_line_error(capsys, main(["run", "no_such_scenario", "--quiet"]), "scenario 'no_such_scenario' not found")


def test_a_scenario_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xff\xfe\x00stream")
    assert_one_line_error(capsys, main(["run", str(path), "--quiet"]), "is not a UTF-8 text file")


# ------------------------------------------------------------------------------ output directory faults
def test_out_is_an_existing_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    code = main(["run", str(write_scenario(tmp_path, BASE)), "--out", str(target), "--quiet"])
    assert_one_line_error(capsys, code, "is an existing file; choose a directory")
    assert target.read_text() == "not a directory"


def test_out_on_a_read_only_file_system(tmp_path, capsys):
    target = "/proc/clpeft-cannot-write-here"  # read-only for everyone, root included
    code = main(["run", str(write_scenario(tmp_path, BASE)), "--out", target, "--quiet"])
    assert_one_line_error(capsys, code, "choose a writable --out")


def test_out_on_a_full_disk(tmp_path, capsys, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=2**20))
    out = tmp_path / "out"
    code = main(["run", str(write_scenario(tmp_path, BASE)), "--out", str(out), "--quiet"])
    assert_one_line_error(capsys, code, "only 1 MiB free", out)
    assert not out.exists()


def test_a_second_run_into_a_directory_in_use_fails_at_once(tmp_path, capsys):
    from clpeft import rundir

    out = tmp_path / "out"
    out.mkdir()
    with rundir.claimed(out):  # as a run in another process holds it
        code = main(["run", str(write_scenario(tmp_path, BASE)), "--out", str(out), "--quiet"])
    assert_one_line_error(capsys, code, "is in use by another clpeft run right now", out)


def test_cifar_scenario_with_a_wrong_data_root_creates_nothing(tmp_path, capsys):
    root = tmp_path / "no" / "data"
    code = main(["run", "cifar100_b0_inc10", "--data-root", str(root), "--out", str(tmp_path / "o"), "--quiet",
                 "--strategy", "linear_probe", "--amp", "off"])
    assert_one_line_error(capsys, code, "--data-root DIR where DIR/cifar-100-python/", tmp_path / "o")
    assert not root.exists() and not (tmp_path / "no").exists() and not (tmp_path / "o").exists()


def test_fashion_mnist_without_its_files(tmp_path, capsys):
    scenario = merged(stream={"dataset": "fashion_mnist", "root": str(tmp_path / "none")})
    code = main(["run", str(write_scenario(tmp_path, scenario)), "--out", str(tmp_path / "o"), "--quiet"])
    assert_one_line_error(capsys, code, "dataset-fashion-mnist", tmp_path / "o")


# ------------------------------------------------------------------------------------ resume and checkpoints
def finished_run(tmp_path, scenario=BASE, *args):
    path = write_scenario(tmp_path, scenario)
    out = tmp_path / "done"
    assert main(["run", str(path), "--out", str(out), "--quiet", *args]) == 0
    return path, out


def test_resume_into_a_directory_holding_another_configurations_results(tmp_path, capsys):
    path, out = finished_run(tmp_path)
    before = (out / "results.json").read_bytes()
    code = main(["run", str(path), "--out", str(out), "--quiet", "--resume", "--set", "train.lr=0.01"])
    assert_one_line_error(capsys, code, "holds the results of another run")
    assert (out / "results.json").read_bytes() == before
    assert main(["run", str(path), "--out", str(out), "--quiet", "--resume"]) == 0  # its own results: complete
    assert "already complete" in capsys.readouterr().out


def test_a_checkpoint_with_the_right_run_id_but_damaged_contents(tmp_path, capsys):
    from clpeft.checkpoint import CHECKPOINT, save_checkpoint
    from clpeft.config import load_scenario

    path = write_scenario(tmp_path, BASE)
    config = resolve(load_scenario(str(path)))
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out, {"run_id": config.run_id, "experience": 0})  # keys missing
    code = main(["run", str(path), "--out", str(out), "--quiet", "--resume"])
    assert_one_line_error(capsys, code, "is damaged (no 'model'); delete it to start over")
    model = {"backbone.fc1.weight": torch.zeros(3, 3)}
    save_checkpoint(out, {"run_id": config.run_id, "experience": 0, "model": model, "rng": {}, "history": {},
                          "strategy": {"head_chunks": [5], "pet_instances": [], "pet_active": None, "clock": {}}})
    code = main(["run", str(path), "--out", str(out), "--quiet", "--resume"])
    assert_one_line_error(capsys, code, "does not fit this run")
    (out / CHECKPOINT).write_bytes(b"garbage")
    code = main(["run", str(path), "--out", str(out), "--quiet", "--resume"])
    assert_one_line_error(capsys, code, "cannot be read (")
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("content,fragment", [
    (b"not safetensors at all", "as safetensors"),
    (b"", "as safetensors"),
])
def test_a_garbage_safetensors_backbone_checkpoint(tmp_path, capsys, content, fragment):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(content)
    code = main(["run", str(write_scenario(tmp_path, BASE)), "--checkpoint", str(bad), "--quiet", "--out", str(tmp_path / "o")])
    assert_one_line_error(capsys, code, fragment, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_malicious_pickle_is_refused(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    code = main(["run", str(write_scenario(tmp_path, BASE)), "--checkpoint", str(evil), "--quiet", "--out", str(tmp_path / "o")])
    assert_one_line_error(capsys, code, "weights_only=True", tmp_path / "o")


# ----------------------------------------------------------------------------------------------- sweeps
SWEEP_CASES = [
    ("unknown-key", {"grid": {"seed": [0]}, "typo": 1}, "unknown key 'typo'"),
    ("plain-grid-key", {"grid": {"lr": [0.1]}}, "unknown key 'lr'"),
    ("bad-section", {"grid": {"optimizer.lr": [0.1]}}, "must start with one of train"),
    ("empty-list", {"grid": {"seed": []}}, "empty list"),
    ("no-runs", {}, "defines no runs"),
    ("unknown-strategy", {"grid": {"strategy": ["nope"]}}, "unknown strategy 'nope'"),
    ("grid-value-type", {"grid": {"train.lr": ["abc"]}}, "train.lr must be a number, got 'abc'"),
    ("grid-seed-float", {"grid": {"seed": [0.5]}}, "seed must be an integer, got 0.5"),
    ("resources", {"grid": {"seed": [0]}, "resources": {"cpus": -1}}, "resources.cpus must be a number ≥ 0"),
    ("fixed-list", {"grid": {"seed": [0]}, "fixed": [1]}, "`fixed:` in"),
    ("include-not-list", {"include": {"seed": 0}}, "`include:` must be a list of mappings"),
    ("imports-missing", {"grid": {"seed": [0]}, "imports": ["nowhere.py"]}, "does not exist"),
]


@pytest.mark.parametrize("case,spec,fragment", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_bad_sweep_files_fail_with_one_line(tmp_path, capsys, case, spec, fragment):
    scenario = write_scenario(tmp_path, BASE)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"scenario": str(scenario), "out": str(tmp_path / "sweep"), **spec}))
    code = main(["sweep", str(path), "--engine", "local"])
    assert_one_line_error(capsys, code, fragment, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_sweep_files_missing_or_with_a_forbidden_tag(tmp_path, capsys):
    assert_one_line_error(capsys, main(["sweep", str(tmp_path / "none.yaml")]), "does not exist")
    path = tmp_path / "sweep.yaml"
    path.write_text("grid: !!python/name:os.system\n")
    assert_one_line_error(capsys, main(["sweep", str(path)]), "YAML tag that is not allowed")
    path.write_text(yaml.safe_dump({"scenario": str(write_scenario(tmp_path, BASE)), "grid": {"seed": [0]}}))
    assert_one_line_error(capsys, main(["sweep", str(path), "--set", "seed=1"]), "use a dotted key")


def test_a_second_sweep_into_a_directory_in_use(tmp_path, capsys):
    from clpeft import rundir

    path = tmp_path / "sweep.yaml"
    out = tmp_path / "sweep"
    path.write_text(yaml.safe_dump({"scenario": str(write_scenario(tmp_path, BASE)), "grid": {"seed": [0]}, "out": str(out)}))
    out.mkdir()
    with rundir.claimed(out):
        code = main(["sweep", str(path), "--engine", "local"])
    assert_one_line_error(capsys, code, "is in use by another clpeft run right now", out)


# ---------------------------------------------------------------------------------------------- reports
def test_report_inputs_that_hold_nothing_readable(tmp_path, capsys):
    assert_one_line_error(capsys, main(["report", str(tmp_path / "none"), "-o", str(tmp_path / "r")]), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(capsys, main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r")]), "no results.json")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{ not json")
    assert_one_line_error(capsys, main(["report", str(tmp_path / "bad"), "-o", str(tmp_path / "r")]), "no readable results")
    (tmp_path / "bad" / "results.json").write_text("[1, 2]")
    assert_one_line_error(capsys, main(["report", str(tmp_path / "bad"), "-o", str(tmp_path / "r")]), "no readable results")


# --------------------------------------------------------------------------------------------------- API
def test_python_api_errors_are_clpeft_errors():
    from clpeft.pet import LoRAConfig, inject_pet
    from clpeft.run import run
    from clpeft.strategies import TrainSettings
    from clpeft.streams import StreamConfig

    with pytest.raises(ClpeftError, match="stream.n_experiences must be an integer"):
        resolve(merged(stream={"n_experiences": "five"}))
    with pytest.raises(ClpeftError, match="resuming needs the run's output directory"):
        run(resolve(BASE), resume=True)
    with pytest.raises(ClpeftError, match="pets.lora.rank must be ≥ 1"):
        LoRAConfig(rank=0)
    with pytest.raises(ClpeftError, match="train.lr must be a number"):
        TrainSettings(lr="fast")
    with pytest.raises(ClpeftError, match="stream.eval_order must be one of"):
        StreamConfig(eval_order="sorted")
    with pytest.raises(ClpeftError, match="needs a clpeft PET config"):
        inject_pet(torch.nn.Linear(2, 2), {"rank": 4})
    with pytest.raises(ClpeftError, match="override section 'optim'"):
        resolve(BASE, overrides={"optim": {"lr": 1}})


def test_values_yaml_reads_as_strings_are_taken_when_unambiguous():
    """PyYAML reads ``lr: 1e-3`` (no dot) as a string; it means a number, and is taken as one."""
    config = resolve(yaml.safe_load("name: x\nstream: {dataset: digits, n_experiences: 2}\ntrain: {lr: 1e-3}\n"))
    assert config.train.lr == 0.001 and isinstance(config.train.lr, float)
    assert resolve(merged(train={"lr": 1})).train.lr == 1.0



@pytest.mark.parametrize("damage,expected", [
    (lambda r: r.update(accuracy_matrix=[[0.5, 0.1], [0.4]]), "damaged accuracy_matrix"),
    (lambda r: r["metrics"].update(final_accuracy="high"), "damaged metric 'final_accuracy'"),
    (lambda r: r.update(schema_version=99), "has schema_version 99; this clpeft reads"),
])
def test_report_on_a_hand_damaged_results_file_lists_it(tmp_path, capsys, damage, expected):
    """Round two, items 5-6: a ragged matrix (IndexError), a string metric (ValueError) and an unknown schema version
    (read as if current) are named in the report's unreadable list; the good run still reports."""
    scenario = write_scenario(tmp_path, BASE)
    for name in ("good", "bad"):
        assert main(["run", str(scenario), "--quiet", "--out", str(tmp_path / "runs" / name)]) == 0
    path = tmp_path / "runs" / "bad" / "results.json"
    results = json.loads(path.read_text())
    damage(results)
    path.write_text(json.dumps(results))
    assert main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "index.md").read_text()
    assert "Unreadable results (1" in text and expected in text
    capsys.readouterr()
    assert main(["report", str(path), "-o", str(tmp_path / "report2")]) == 2  # alone: one clear line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_a_stale_temporary_file_is_removed_on_the_next_start(tmp_path):
    """Round two, item 6: a kill during a checkpoint write left .checkpoint.pt.*.tmp behind for good."""
    out = tmp_path / "o"
    out.mkdir()
    stale = out / ".checkpoint.pt.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(["run", str(write_scenario(tmp_path, BASE)), "--quiet", "--out", str(out)]) == 0
    assert not stale.exists() and (out / "results.json").exists()



def test_resume_from_a_checkpoint_without_the_head_layout(tmp_path, capsys):
    """Round two, item 5: a checkpoint of the same run id that lacks the head's chunks gave a KeyError traceback."""
    from clpeft.checkpoint import CHECKPOINT

    scenario = write_scenario(tmp_path, BASE)
    out = tmp_path / "o"
    config_args = ["run", str(scenario), "--quiet", "--out", str(out)]

    def crash(i, strategy, stream):
        if i == 1:
            raise KeyboardInterrupt

    from clpeft.config import load_scenario, resolve as resolve_config
    from clpeft.run import Interrupted, run
    config = resolve_config(load_scenario(str(scenario)))
    with pytest.raises(Interrupted):
        run(config, out_dir=out, after_experience=crash)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    del state["strategy"]["head_chunks"]
    torch.save(state, out / CHECKPOINT)
    assert_one_line_error(capsys, main([*config_args, "--resume"]), "the checkpoint's strategy state has no 'head_chunks'")


# round two, item 4: every refusal that advises a fix is followed, and the run it names is then accepted
ADVICE_CASES = [
    ("single-class-first-session", merged(stream={"n_experiences": 10}), ["--strategy", "aper", "--pet", "adapter"]),
    ("single-class-current", merged(stream={"n_experiences": 10}, train={"epochs": 2}),
     ["--strategy", "lae", "--pet", "adapter"]),
    ("single-class-current-b2", merged(stream={"n_experiences": 9, "first_experience_classes": 2}, train={"epochs": 2}),
     ["--strategy", "lae", "--pet", "adapter"]),
    ("jare-groups", BASE, ["--strategy", "jare", "--pet", "lora"]),
    ("prompt-pool-on-a-cnn", BASE, ["--strategy", "l2p"]),
    ("l2p-init-range", BASE, ["--strategy", "l2p", "--backbone", "vit_tiny_fmnist", "--option", "init_low=1",
                              "--option", "init_high=0"]),
    ("zero-epochs", merged(train={"epochs": 0}), []),
    ("n-exp-divide", merged(stream={"n_experiences": 3}), []),
    ("lae-warmup-takes-all", merged(train={"epochs": 1}), ["--strategy", "lae", "--pet", "adapter"]),
    ("coda-pool-multiple", BASE, ["--strategy", "coda_prompt", "--backbone", "vit_tiny_fmnist_scratch",
                                  "--option", "pool_size=7", "--option", "length=2"]),
    ("dualprompt-pool-short", BASE, ["--strategy", "dualprompt", "--backbone", "vit_tiny_fmnist_scratch",
                                     "--option", "pool_size=1"]),
    ("l2p-top-k", BASE, ["--strategy", "l2p", "--backbone", "vit_tiny_fmnist_scratch", "--option", "top_k=40"]),
]


def advice(line: str) -> tuple[dict, list[str]]:
    """The settings a refusal names: ``stream.KEY: N`` and ``drop stream.KEY`` edits, and ``--flag value`` pairs."""
    import re

    edits = {k: int(v) for k, v in re.findall(r"stream\.(\w+): (\d+)", line)}
    edits.update({k: None for k in re.findall(r"drop stream\.(\w+)", line)})
    flags = [t for pair in re.findall(r"(--(?:option|backbone|set|epochs) [^ ;,()]+)", line) for t in pair.split(" ")]
    if "train.epochs ≥ 1" in line:
        flags += ["--epochs", "1"]
    return edits, flags


@pytest.mark.parametrize("case,scenario,extra", ADVICE_CASES, ids=[c[0] for c in ADVICE_CASES])
def test_a_refusals_advice_when_followed_is_accepted(tmp_path, capsys, case, scenario, extra):
    scenario = json.loads(json.dumps(scenario))
    scenario["pets"] = {"adapter": {"targets": ["fc2"]}, "lora": {"targets": ["fc2"]}}  # LeNet's modules by name
    path = write_scenario(tmp_path, scenario)
    assert main(["run", str(path), "--out", str(tmp_path / "refused"), "--quiet", *extra]) == 2
    line = capsys.readouterr().err.strip()
    edits, flags = advice(line)
    assert edits or flags, f"the refusal names no setting to change: {line}"
    for key, value in edits.items():
        if value is None:
            scenario["stream"].pop(key, None)
        else:
            scenario["stream"][key] = value
    path = write_scenario(tmp_path, scenario)
    code = main(["run", str(path), "--out", str(tmp_path / "followed"), "--quiet", *extra, *flags])  # later flags win
    err = capsys.readouterr().err
    assert code == 0 and "clpeft: error" not in err, f"followed {line!r}: {err}"


def test_a_run_that_learned_nothing_says_so_on_the_terminal(tmp_path, capsys):
    """Round two, item 1: `--set train.lr=1.0e-6` kept every loss at ln(seen classes), yet A_T was above chance and the
    run was recorded ok; now the terminal, results.json and the health verdict say it did not learn."""
    path = write_scenario(tmp_path, merged(stream={"n_experiences": 5}))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--set", "train.lr=1.0e-6"]) == 0
    err = capsys.readouterr().err
    assert "this run is marked NOT LEARNED in results.json: right after it was learned, experience" in err
    assert json.loads((out / "results.json").read_text())["health"]["status"] == "not_learned"
