"""`clpeft tune`: the tune file's checks, the held-out tuning split, provenance in results and reports, and a whole
search on Ray Tune with its report."""
import json

import pytest
import yaml

from clpeft.cli import main
from clpeft.config import LATER_DEFAULTS, load_scenario, resolve
from clpeft.errors import ClpeftError
from clpeft.streams.stream import identity_of_config, identity_of_results, make_stream, materialize
from clpeft.tune import corners, load_tune


@pytest.fixture
def scenario_path(tmp_path, fast_scenario):
    fast_scenario["model"] = {"backbone": "lenet", "pretrained": False}
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(fast_scenario))
    return path


def write_tune(tmp_path, scenario_path, **spec):
    base = {"strategy": "finetune", "tune_on": {"scenario": str(scenario_path), "set": {"stream.class_order_seed": 101}},
            "report_on": [{"scenario": str(scenario_path), "set": {"stream.class_order_seed": 7}}],
            "space": {"train.lr": {"loguniform": [1.0e-3, 1.0e-2]}}, "trials": 2, "seeds": [0],
            "out": str(tmp_path / "tune")}
    base.update(spec)
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


BAD = [
    ({"space": {}}, "space is empty"),
    ({"space": {"train.no_such_setting": {"choice": [1, 2]}}}, "no_such_setting"),
    ({"space": {"lr": {"choice": [1, 2]}}}, "dotted"),
    ({"space": {"train.lr": {"normal": [0, 1]}}}, "loguniform"),
    ({"space": {"train.lr": {"loguniform": [0.0, 0.1]}}}, "low > 0"),
    ({"space": {"train.lr": {"uniform": [0.1, 0.01]}}}, "low < high"),
    ({"space": {"train.epochs": {"choice": [1, -1]}}}, "epochs"),
    ({"metric": "accuracy"}, "cannot be tuned"),
    ({"scheduler": "hyperband"}, "scheduler"),
    ({"trails": 3}, "unknown key 'trails'"),
    ({"report_on": []}, "report_on is empty"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
def test_bad_tune_files_fail_with_one_line_before_anything_runs(tmp_path, scenario_path, capsys, change, message):
    path = write_tune(tmp_path, scenario_path, **change)
    with pytest.raises(ClpeftError, match=message):
        load_tune(path)
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clpeft: error:") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "tune").exists()  # refused before any trial


def test_a_report_stream_equal_to_the_tuning_stream_is_refused_unless_asked_for_by_name(tmp_path, scenario_path):
    same = {"scenario": str(scenario_path), "set": {"stream.class_order_seed": 101}}
    path = write_tune(tmp_path, scenario_path, report_on=[same])
    with pytest.raises(ClpeftError, match="is the tuning stream.*allow_tuning_on_report_stream"):
        load_tune(path)
    # the seed-drawn class order of report seed 3 equals a tuning stream whose class order comes from seed 3
    path = write_tune(tmp_path, scenario_path, tune_on={"scenario": str(scenario_path), "set": {"stream.class_order_seed": 3}},
                      report_on=[str(scenario_path)], seeds=[0, 3])
    with pytest.raises(ClpeftError, match="seed 3 is the tuning stream"):
        load_tune(path)
    path = write_tune(tmp_path, scenario_path, report_on=[same], allow_tuning_on_report_stream=True)
    assert load_tune(path).report_on[0].label.endswith("stream.class_order_seed=101")
    # a held-out split of the same stream's training data is another stream
    held = {"scenario": str(scenario_path), "set": {"stream.class_order_seed": 101, "stream.validation_fraction": 0.2}}
    assert load_tune(write_tune(tmp_path, scenario_path, tune_on=held, report_on=[same])).tune_on.overrides


def test_the_space_edges_are_checked_as_the_search_can_draw_them():
    space = {"train.lr": ("loguniform", [1e-4, 1e-2]), "pet.rank": ("randint", [2, 9]),
             "options.x": ("choice", ["a", "b", "c"])}
    points = corners(space)
    assert points[0] == {"train.lr": 1e-4, "pet.rank": 2, "options.x": "a"}
    assert points[1] == {"train.lr": 1e-2, "pet.rank": 8, "options.x": "c"}  # randint's high end is excluded
    assert {"train.lr": 1e-4, "pet.rank": 2, "options.x": "b"} in points


def test_a_held_out_split_evaluates_on_training_data_never_on_the_test_set(fast_scenario):
    base = resolve(fast_scenario).stream
    held = resolve(fast_scenario, overrides={"stream": {"validation_fraction": 0.25}}).stream
    full, split = make_stream(base, seed=0), make_stream(held, seed=0)
    train_full = sum(len(e.dataset) for e in full.train_stream)
    train_part = sum(len(e.dataset) for e in split.train_stream)
    validation = sum(len(e.dataset) for e in split.test_stream)
    assert train_part + validation == train_full and abs(validation - 0.25 * train_full) <= 10
    x_val = torch_cat([materialize(e.dataset)[0] for e in split.test_stream])
    x_train = torch_cat([materialize(e.dataset)[0] for e in split.train_stream])
    x_test = torch_cat([materialize(e.dataset)[0] for e in full.test_stream])
    rows = lambda x: {tuple(v.flatten().tolist()) for v in x}  # noqa: E731
    assert rows(x_val) <= rows(torch_cat([materialize(e.dataset)[0] for e in full.train_stream]))
    assert not rows(x_val) & rows(x_train) and not rows(x_val) & rows(x_test)
    again = make_stream(held, seed=5)  # the split does not follow the run seed: one split for the whole protocol
    assert rows(torch_cat([materialize(e.dataset)[0] for e in again.test_stream])) == rows(x_val)
    assert identity_of_config(held, 0)["evaluated_on"] != identity_of_config(base, 0)["evaluated_on"]
    with pytest.raises(ClpeftError, match="validation_fraction"):
        make_stream(resolve(fast_scenario, overrides={"stream": {"validation_fraction": 0.001}}).stream, seed=0)


def torch_cat(xs):
    import torch

    return torch.cat(xs)


def test_new_settings_leave_earlier_run_ids_alone(fast_scenario):
    import hashlib

    config = resolve(fast_scenario)
    data = config.as_dict()
    data.pop("loggers")
    data.pop("provenance")
    data["stream"].pop("validation_fraction")
    data["stream"].pop("eval_unseen")
    data["train"].pop("bank_budget")
    before = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert config.config_hash() == before  # what the hash was before the later settings existed
    assert set(LATER_DEFAULTS) == {("stream", "validation_fraction"), ("provenance",), ("train", "bank_budget"),
                                   ("stream", "eval_unseen"), ("pet_settings", "keep_scores")}
    for section, values in (("stream", {"validation_fraction": 0.2}), ("stream", {"eval_unseen": False})):
        assert resolve(fast_scenario, overrides={section: values}).config_hash() != before
    lora = resolve(fast_scenario, strategy="inflora", pet="lora")
    assert resolve(fast_scenario, strategy="inflora", pet="lora",
                   overrides={"train": {"bank_budget": 3}}).config_hash() != lora.config_hash()
    masks = resolve(fast_scenario, strategy="supsup", pet="supermask")
    data = masks.as_dict()
    data.pop("loggers"), data.pop("provenance"), data["stream"].pop("validation_fraction")
    data["stream"].pop("eval_unseen"), data["train"].pop("bank_budget"), data["pet_settings"].pop("keep_scores")
    assert masks.config_hash() == hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert resolve(fast_scenario, strategy="supsup", pet="supermask",
                   overrides={"pet": {"keep_scores": False}}).config_hash() != masks.config_hash()


def test_reports_say_where_settings_came_from_and_flag_tuning_on_the_reported_stream(tmp_path, fast_scenario):
    from clpeft.reports.report import build_report
    from clpeft.run import run

    fast_scenario["model"] = {"backbone": "lenet", "pretrained": False}
    config = resolve(fast_scenario, strategy="finetune", seed=0)
    results = run(config, out_dir=tmp_path / "defaults")
    here = identity_of_results(results)
    other = {**here, "class_order": list(reversed(here["class_order"]))}
    for name, stream in (("elsewhere", other), ("here", here)):
        scenario = dict(fast_scenario)
        scenario["strategies"] = {"finetune": {"train": {"lr": 0.002}, "provenance": {
            "tuned_on": f"tuning stream {name}", "tuning_stream": stream, "trials": 4, "metric": "final_accuracy"}}}
        tuned = resolve(scenario, strategy="finetune", seed=0)
        assert tuned.provenance["tuned_on"] == f"tuning stream {name}" and tuned.run_id != config.run_id
        run(tuned, out_dir=tmp_path / name)
        assert json.loads((tmp_path / name / "results.json").read_text())["config"]["provenance"]["trials"] == 4
    index = build_report([tmp_path], tmp_path / "report").read_text()
    assert "settings from" in index
    assert "| defaults |" in index and "| tuned on tuning stream elsewhere |" in index
    assert "⚠ tuned on this stream" in index and "Rows whose settings were tuned on the stream they report (1" in index
    with pytest.raises(ClpeftError, match="provenance must be a mapping with `tuned_on:`"):
        resolve({**fast_scenario, "strategies": {"finetune": {"provenance": {"trials": 3}}}}, strategy="finetune")


def test_tune_searches_on_ray_tune_writes_a_tuned_scenario_and_reports_next_to_the_defaults(tmp_path, scenario_path):
    pytest.importorskip("ray.tune", reason="the tune command needs Ray Tune: pip install 'clpeft[ray]'")
    path = write_tune(tmp_path, scenario_path, trials=2, fixed={"train": {"epochs": 1}}, scheduler="asha")
    assert main(["tune", str(path), "--workers", "2"]) == 0
    out = tmp_path / "tune"
    record = json.loads((out / "tune.json").read_text())
    assert len(record["trials"]) == 2 and record["best"]["point"]["train.lr"] > 0
    for trial in record["trials"]:  # a clpeft run each: finished, or stopped by ASHA after a checkpoint it resumes from
        run_dir = out / "trials" / trial["run_id"]
        assert (run_dir / ("checkpoint.pt" if trial["stopped_early"] else "results.json")).is_file(), trial
    prov = record["provenance"]
    assert prov["trials"] == 2 and prov["metric"] == "final_accuracy" and prov["space"]["train.lr"]["loguniform"]
    assert prov["tuning_stream"]["class_order"] != identity_of_config(
        resolve(load_scenario(str(scenario_path)), overrides={"stream": {"class_order_seed": 7}}).stream, 0)["class_order"]
    (tuned_file,) = record["tuned_scenarios"]
    tuned = resolve(load_scenario(tuned_file), strategy="finetune", seed=0)
    assert tuned.train.lr == record["best"]["point"]["train.lr"] and tuned.provenance == prov
    assert tuned.stream.class_order_seed == 7 and tuned.train.epochs == 1
    runs = [json.loads(p.read_text()) for p in (out / "report_runs").glob("*/results.json")]
    assert sorted(bool(r["config"].get("provenance")) for r in runs) == [False, True]
    index = (out / "report" / "index.md").read_text()
    assert "| defaults |" in index and "tuned on fast stream.class_order_seed=101" in index
    # again: the finished search is restored from its Ray Tune state, nothing runs twice
    assert main(["tune", str(path), "--workers", "2"]) == 0
    assert json.loads((out / "tune.json").read_text())["best"] == record["best"]


def test_the_worked_example_files_are_valid_and_report_where_no_search_looked():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parent.parent / "examples" / "tune").glob("*.yaml"))
    assert [f.stem for f in files] == ["ewc", "lae", "lwf"]
    for path in files:
        spec = load_tune(path)  # every check, the space's edges resolved on both streams
        assert spec.tune_on.scenario["name"] == "digits_b0_inc2" and spec.report_on[0].scenario["name"] == "mnist5k_b0_inc2"
        assert spec.seeds == [0, 1, 2] and spec.trials == 8


def test_a_held_out_split_reads_its_images_with_the_test_transform_and_leaves_training_alone():
    from clpeft.streams.stream import held_out

    class Images:
        def __init__(self, n, transform):
            self.targets, self.transform = [i % 2 for i in range(n)], transform

        def __getitem__(self, i):
            return self.transform(i), self.targets[i]

    train, test = Images(20, lambda i: ("augmented", i)), Images(4, lambda i: ("plain", i))
    part, validation = held_out(train, test, 0.2)
    assert len(part) == 16 and len(validation) == 4 and sorted(validation.targets) == [0, 0, 1, 1]
    assert all(validation[k][0][0] == "plain" for k in range(4)) and all(part[k][0][0] == "augmented" for k in range(16))
    assert train.transform(0) == ("augmented", 0)
