"""Every registered strategy (and the guide's plugins) survives "crash after experience 1, then --resume" with a
byte-identical results file, or refuses to resume with one clear line. A method that adds state and forgets to
declare it in ``keeps`` fails here."""
from pathlib import Path

import pytest

from clpeft.checkpoint import load_checkpoint
from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.run import run
from clpeft.strategies import STRATEGIES
from test_resume import Crash, crash_after

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = {"l2_anchor": ROOT / "examples" / "plugins" / "l2_anchor.py",
           "head_freeze": ROOT / "examples" / "plugins" / "head_freeze.py"}
LENET = {"model": {"backbone": "lenet", "pretrained": False}}
# the PET each method needs; methods that need no ViT run on LeNet (an MLP: seconds), with small settings
PET = {"lae": "adapter", "jare": "lora", "exssnet": "supermask", "ssnet": "supermask", "supsup": "supermask",
       "aper": "adapter", "ranpac": "adapter", "inflora": "lora", "sd_lora": "lora", "ease": "adapter",
       "mos": "adapter"}
NEEDS_VIT = {"lae", "jare", "aper", "ranpac", "l2p", "dualprompt", "coda_prompt", "inflora", "sd_lora", "ease",
             "mos", "hide_prompt"}
EXTRA = {"exssnet": {"options": {"kkt": "always"}}, "wa": {"options": {"memory_size": 20}},
         "ranpac": {"options": {"projection": 64}}, "coda_prompt": {"options": {"pool_size": 12, "length": 2}},
         "l2p": {"options": {"pool_size": 6}}, "dualprompt": {"options": {"pool_size": 3}},
         "slca": {"options": {"ca_epochs": 1, "ca_samples": 16}},
         "inflora": {"pet": {"blocks": None, "parts": "kv", "rank": 2, "alpha": 2.0}},
         "sd_lora": {"pet": {"blocks": None, "parts": "qv", "rank": 2, "alpha": 2.0}},
         "ease": {"pet": {"blocks": None, "position": "mlp_residual", "bottleneck": 4}},
         "hide_prompt": {"options": {"centroids": 2, "ca_epochs": 1, "router_epochs": 1, "length": 2}},
         "mos": {"pet": {"blocks": None, "position": "mlp_residual", "bottleneck": 4}, "options": {"ca_epochs": 2}}}


@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - set(PLUGINS)) + sorted(PLUGINS))
def test_every_strategy_resumes_exactly_or_refuses(tmp_path, fast_scenario, name):
    fast_scenario["train"]["epochs"] = 2  # LAE's and head_freeze's warm-ups take one
    imports = [str(PLUGINS[name])] if name in PLUGINS else None
    overrides = {**({} if name in NEEDS_VIT else LENET), **EXTRA.get(name, {})}
    config = resolve(fast_scenario, strategy=name, pet=PET.get(name), overrides=overrides, imports=imports)
    with pytest.raises(Crash):
        run(config, out_dir=tmp_path / "a", after_experience=crash_after(1))
    assert load_checkpoint(tmp_path / "a", config.run_id)["experience"] == 0
    if not STRATEGIES[name].resumable:
        with pytest.raises(ClpeftError, match="cannot resume"):
            run(config, out_dir=tmp_path / "a", resume=True)
        return
    run(config, out_dir=tmp_path / "a", resume=True)
    run(config, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()


def test_forgetting_to_declare_state_breaks_the_resume(tmp_path, fast_scenario, monkeypatch):
    """The guard works: the guide's plugin with its ``keeps`` removed resumes with an empty anchor and differs."""
    fast_scenario["train"]["epochs"] = 1
    config = resolve(fast_scenario, strategy="l2_anchor", imports=[str(PLUGINS["l2_anchor"])],
                     overrides={**LENET, "options": {"lam": 100.0}})
    monkeypatch.setattr(STRATEGIES["l2_anchor"], "keeps", ())
    with pytest.raises(Crash):
        run(config, out_dir=tmp_path / "a", after_experience=crash_after(1))
    run(config, out_dir=tmp_path / "a", resume=True)
    run(config, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() != (tmp_path / "b" / "results.json").read_bytes()


def test_a_kept_value_a_checkpoint_cannot_hold_is_refused_by_name(fast_scenario, monkeypatch):
    from clpeft.run import build

    _, _, _, strategy, _ = build(resolve(fast_scenario, strategy="finetune"))
    monkeypatch.setattr(type(strategy), "keeps", ("odd",))
    strategy.odd = {1, 2}
    with pytest.raises(ClpeftError, match="kept attribute 'odd' is a set"):
        strategy.resume_state()


@pytest.mark.parametrize("name", ["inflora", "sd_lora"])
def test_a_budgeted_bank_resumes_exactly_from_a_checkpoint_holding_folded_weights(tmp_path, fast_scenario, name):
    overrides = {**EXTRA[name], "train": {"bank_budget": 1}}
    config = resolve(fast_scenario, strategy=name, pet=PET[name], overrides=overrides)
    with pytest.raises(Crash):
        run(config, out_dir=tmp_path / "a", after_experience=crash_after(2))
    saved = load_checkpoint(tmp_path / "a", config.run_id)
    assert saved["experience"] == 1 and saved["strategy"]["pet_instances"] == ["e1"]  # e0 folded into the weights
    run(config, out_dir=tmp_path / "a", resume=True)
    run(config, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()
