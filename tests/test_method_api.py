"""The method API: strategy files use clpeft's public hooks only, options are declared with types, and a
method of one's own is one file loaded with --import (CLI, sweep) — the same rules as the built-in ones."""
import inspect
import json
import re
from pathlib import Path

import pytest
import yaml
from avalanche.training.templates import SupervisedTemplate

from clpeft import catalog
from clpeft.cli import main
from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.strategies import STRATEGIES, CLStrategy
from clpeft.sweep import load_sweep, run_sweep
from clpeft.utils.typed import describe_fields

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "plugins" / "l2_anchor.py"
#: Avalanche minibatch and loop internals a strategy file must not read
AVALANCHE_INTERNALS = re.compile(r"\bself\.(mb_\w+|mbatch|clock|adapted_dataset|dataloader|train_epochs|experience\b|"
                                 r"optimized_param_id|_stop_training)")


def strategy_classes():
    return sorted(STRATEGIES.items())


@pytest.mark.parametrize("name,cls", strategy_classes(), ids=[n for n, _ in strategy_classes()])
def test_strategy_overrides_no_avalanche_template_method_and_reads_no_internals(name, cls):
    for klass in cls.__mro__:
        if klass is CLStrategy or not issubclass(klass, CLStrategy):
            break
        for attr, value in vars(klass).items():
            method = callable(value) or isinstance(value, (property, staticmethod, classmethod))
            assert not (method and hasattr(SupervisedTemplate, attr)) or attr.startswith("__"), \
                f"{klass.__name__}.{attr} overrides Avalanche's template; use clpeft's hooks"
        source = inspect.getsource(klass)
        found = AVALANCHE_INTERNALS.findall(source)
        assert not found, f"{klass.__name__} reads Avalanche internals {set(found)}; use clpeft's public state"


@pytest.mark.parametrize("name,cls", strategy_classes(), ids=[n for n, _ in strategy_classes()])
def test_every_strategy_declares_typed_options_that_parse_with_defaults(name, cls):
    options = cls.parse_options({})
    for field_name, type_name, default, doc in describe_fields(cls.Options):
        assert doc, f"{name}.{field_name} has no one-line doc"
        assert hasattr(options, field_name)


def test_catalog_lists_exactly_the_registered_built_ins():
    """`clpeft list` reads the catalog without importing torch; it must agree with the registries."""
    from clpeft.models.backbones import BUILTIN_BACKBONES
    from clpeft.models.text import TEXT_BACKBONES
    from clpeft.pet import PET_KINDS
    from clpeft.streams.datasets import DATASETS

    builtin = {n for n, c in STRATEGIES.items() if c.__module__.startswith("clpeft.")}
    assert builtin == set(catalog.builtin_strategies())
    assert {n for n, s in DATASETS.items() if s.loader.__module__.startswith("clpeft.")} == set(catalog.DATASETS)
    assert {n: s.num_classes for n, s in DATASETS.items() if n in catalog.DATASETS} == \
        {n: c for n, (_, c, _) in catalog.DATASETS.items()}
    assert set(PET_KINDS) == set(catalog.PET_KINDS)
    assert set(BUILTIN_BACKBONES) | set(TEXT_BACKBONES) == set(catalog.BACKBONES)
    # one source for the descriptions: the registries carry the catalog's text, not copies of their own
    from clpeft.evaluation.tta import get_tta
    from clpeft.models.backbones import BACKBONES

    assert {n: DATASETS[n].description for n in catalog.DATASETS} == {n: d for n, (_, _, d) in catalog.DATASETS.items()}
    assert {n: k.description for n, k in PET_KINDS.items()} == catalog.PET_KINDS
    assert {n: BACKBONES[n].description for n in BUILTIN_BACKBONES} == {n: catalog.BACKBONES[n] for n in BUILTIN_BACKBONES}
    assert {n: get_tta(n).description for n in catalog.TTA} == catalog.TTA


def test_a_built_in_method_is_one_file_that_the_package_and_the_catalog_find(tmp_path, monkeypatch):
    """No list to edit when a method lands: the package imports every module in it, and `clpeft list` reads the
    ``@register`` lines of the files without importing them."""
    import pkgutil
    import sys

    import clpeft.strategies as package

    modules = [m.name for m in pkgutil.iter_modules(package.__path__)]
    assert "l2p" in modules and all(f"clpeft.strategies.{m}" in sys.modules for m in modules)
    (tmp_path / "mine.py").write_text('from clpeft.strategies import CLStrategy, register\n\n\n'
                                      '@register("my_method")\nclass Mine(CLStrategy):\n    pass\n')
    monkeypatch.setattr(catalog, "STRATEGIES_DIR", tmp_path)
    assert catalog.builtin_strategies() == ["my_method"]


def test_list_options_prints_types_defaults_and_docs(capsys):
    assert main(["list", "--options", "lae"]) == 0
    out = capsys.readouterr().out
    assert "ema_decay=…  (number, default 0.9999)" in out and "pet_warmup_epochs" in out
    assert "PET modules: adapter | lora | prefix | prompt (required); loss scope: current" in out
    assert main(["list", "--options", "nope"]) == 2


def test_a_strategy_from_a_file_runs_from_the_cli_and_resumes_identically(tmp_path, fast_scenario, capsys):
    fast_scenario["model"] = {"backbone": "lenet", "pretrained": False}
    fast_scenario["train"]["epochs"] = 2
    scenario = tmp_path / "fast.yaml"
    scenario.write_text(yaml.safe_dump(fast_scenario))
    base = ["run", str(scenario), "--import", str(PLUGIN), "--strategy", "l2_anchor", "--option", "lam=0.5", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["config"]["options"] == {"lam": 0.5} and results["config"]["imports"] == [str(PLUGIN)]
    assert results["strategy_summary"]["anchored_tensors"] > 0
    assert results["health"]["status"] == "ok"
    assert main(["list", "--import", str(PLUGIN), "--options", "l2_anchor"]) == 0
    assert "lam=…  (number, default 0.01)" in capsys.readouterr().out
    code = main([*base[:-3], "--option", "lam=strong", "--quiet", "--out", str(tmp_path / "b")])
    assert code == 2 and "options.lam must be a number, got 'strong'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_strategy_from_a_file_runs_in_a_sweep_and_is_refused_without_its_import(tmp_path, fast_scenario, monkeypatch):
    fast_scenario["model"] = {"backbone": "lenet", "pretrained": False}
    scenario = tmp_path / "fast.yaml"
    scenario.write_text(yaml.safe_dump(fast_scenario))
    spec = {"scenario": str(scenario), "imports": [str(PLUGIN)], "out": str(tmp_path / "sweep"),
            "grid": {"strategy": ["l2_anchor"], "options.lam": [0.0, 1.0]}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    sweep = load_sweep(path)
    assert [c.options for c in sweep.configs] == [{"lam": 0.0}, {"lam": 1.0}]
    summary = run_sweep(sweep, engine="local", log=lambda line: None)
    assert summary["done"] + summary["diverged"] == 2 and summary["failed"] == 0
    report = (sweep.report / "index.md").read_text()
    assert "l2_anchor [lam=0.0]" in report and "l2_anchor [lam=1.0]" in report
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if k != "imports"}))
    monkeypatch.delitem(STRATEGIES, "l2_anchor")  # as in a fresh process that never imported the plugin
    with pytest.raises(ClpeftError, match="unknown strategy 'l2_anchor'.*--import"):
        load_sweep(path)


def test_a_data_set_and_a_backbone_from_a_plugin(tmp_path, capsys, toy_plugin):
    from conftest import TOY_SCENARIO

    scenario = toy_plugin.parent / "toy.yaml"
    scenario.write_text(yaml.safe_dump({**TOY_SCENARIO, "imports": ["toy.py"]}))  # relative to the scenario file
    assert main(["run", str(scenario), "--strategy", "finetune", "--pet", "adapter", "--quiet",
                 "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["stream"]["num_classes"] == 4 and results["config"]["imports"] == [str(toy_plugin)]
    assert results["health"]["status"] == "ok"
    assert main(["list", "--import", str(toy_plugin)]) == 0
    out = capsys.readouterr().out
    assert "toy_blobs (offline)" in out and "toy_vit" in out


def test_a_custom_timm_architecture_and_checkpoint_in_yaml_take_their_input_size_from_the_built_model(tmp_path):
    import timm
    from safetensors.torch import save_file

    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2}
    net = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **kwargs)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    scenario = {"stream": {"dataset": "digits", "n_experiences": 2},
                "model": {"backbone": "vit_small_patch16_224", "pretrained": False, "kwargs": kwargs,
                          "checkpoint": str(tmp_path / "w.safetensors")},
                "train": {"epochs": 1, "batch_size": 64}, "name": "custom"}
    from clpeft.run import build

    stream, model, _, _, _ = build(resolve(scenario, strategy="linear_probe"))
    assert model.spec.input_size == 32 and model.spec.in_chans == 3  # not timm's pretrained 224
    x = next(stream.eval_batches(4, 0))[0]
    assert model(x).shape == (4, 10)
    scenario["model"]["kwargs"] = {**kwargs, "img_sise": 32}
    with pytest.raises(ClpeftError, match="timm cannot build vit_small_patch16_224 with model.kwargs"):
        build(resolve(scenario, strategy="linear_probe"))


def test_explicit_class_order_is_used_and_checked(fast_scenario):
    from clpeft.run import build

    fast_scenario["stream"].update(class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0], class_order_seed=None)
    stream = build(resolve(fast_scenario, strategy="prototype")).stream
    assert stream.original_class_order == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    for bad in ([0, 1, 2], [0] * 10, list(range(1, 11))):
        fast_scenario["stream"]["class_order"] = bad
        with pytest.raises(ClpeftError, match="must list each of the 10 classes 0..9 exactly once"):
            resolve(fast_scenario, strategy="prototype")


def test_an_avalanche_benchmark_from_python_is_checked_and_runs(fast_scenario):
    from avalanche.benchmarks import nc_benchmark

    from clpeft.run import run
    from clpeft.streams import InputSpec, stream_from_benchmark
    from clpeft.streams.datasets import load_digits

    train, test, spec = load_digits()
    good = nc_benchmark(train, test, n_experiences=2, task_labels=False, shuffle=False,
                        fixed_class_order=list(range(10)), class_ids_from_zero_from_first_exp=True)
    stream = stream_from_benchmark(good, "digits_from_python", spec)
    result = run(resolve(fast_scenario, strategy="prototype"), stream=stream)
    assert len(result["accuracy_matrix"]) == 2 and result["stream"]["name"] == "digits_from_python"
    bad = nc_benchmark(train, test, n_experiences=2, task_labels=False, shuffle=False,
                       fixed_class_order=[5, 6, 7, 8, 9, 0, 1, 2, 3, 4])  # ids kept: experience 0 holds 5..9
    with pytest.raises(ClpeftError, match="class_ids_from_zero_from_first_exp=True"):
        stream_from_benchmark(bad, "bad", InputSpec(1, 8))


def test_resolving_settings_needs_no_torch():
    """TrainSettings and StreamConfig live in clpeft.config, which imports without torch or Avalanche."""
    import subprocess
    import sys

    code = ("import sys, clpeft.config as c; c.TrainSettings(); c.StreamConfig(); "
            "assert not {'torch', 'avalanche'} & set(sys.modules), sorted(m for m in sys.modules if m in ('torch', 'avalanche'))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
