"""docs/write_a_method.md cannot rot: every import it shows works, and both worked examples run as the page says."""
import re
from pathlib import Path

import pytest
import yaml

from clpeft.cli import main

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "write_a_method.md").read_text()


def test_every_import_in_the_guide_works():
    imports = re.findall(r"^from (clpeft[\w.]*) import ([\w, ]+)$", GUIDE, re.M)
    assert len(imports) >= 2
    for module, names in imports:
        mod = __import__(module, fromlist=["_"])
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"{module} has no {name}"


def test_every_helper_and_hook_the_guide_names_exists():
    from clpeft.strategies import CLStrategy

    names = set(re.findall(r"^\| `(\w+)\(", GUIDE, re.M))
    assert {"setup", "phases", "after_resume", "freeze", "eval_mode", "body_parameters", "generator"} <= names
    for name in names:
        assert callable(getattr(CLStrategy, name, None)), f"CLStrategy has no {name}()"


@pytest.mark.parametrize("plugin,strategy,pet", [("l2_anchor.py", "l2_anchor", "lora"),
                                                 ("head_freeze.py", "head_freeze", "adapter")])
def test_the_worked_examples_run_from_the_command_line(tmp_path, fast_scenario, plugin, strategy, pet):
    fast_scenario["train"]["epochs"] = 2
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(fast_scenario))
    out = tmp_path / "run"
    assert main(["run", str(path), "--import", str(ROOT / "examples" / "plugins" / plugin), "--strategy", strategy,
                 "--pet", pet, "--quiet", "--out", str(out)]) == 0
    assert (out / "results.json").exists()


def test_head_freeze_leaves_earlier_rows_as_they_were(fast_scenario):
    import torch

    from clpeft.config import resolve
    from clpeft.run import build

    fast_scenario["train"]["epochs"] = 2
    config = resolve(fast_scenario, strategy="head_freeze", pet="adapter",
                     imports=[str(ROOT / "examples" / "plugins" / "head_freeze.py")])
    stream, model, _, strategy, _ = build(config)
    strategy.train(stream.train_stream[0])
    first = [p.detach().clone() for p in model.head.chunks[0].parameters()]
    strategy.train(stream.train_stream[1])
    assert all(torch.equal(a, b) for a, b in zip(first, model.head.chunks[0].parameters()))
    assert [e["phase"] for e in strategy.training_log if e["experience"] == 1] == ["head", "train"]
    assert strategy.summary() == {"frozen_rows": model.head.num_seen}


def test_head_freeze_refuses_a_warmup_that_leaves_no_training(fast_scenario):
    from clpeft.config import resolve
    from clpeft.errors import ClpeftError

    with pytest.raises(ClpeftError, match="warmup"):
        resolve(fast_scenario, strategy="head_freeze", pet="adapter", overrides={"options": {"warmup": 1}},
                imports=[str(ROOT / "examples" / "plugins" / "head_freeze.py")])
