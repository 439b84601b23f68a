"""What a researcher meets on day one: the loss and its curve, live logs, one line per epoch in logs, figures
fit for a paper (several formats, no overlaps), the same tables in HTML and Markdown, runs.csv."""
import csv
import json
import re

import pytest
import yaml

from clpeft.cli import main


@pytest.fixture
def lenet_file(tmp_path, fast_scenario):
    fast_scenario["model"] = {"backbone": "lenet", "pretrained": False}
    fast_scenario["train"].update(epochs=2, lr=0.01)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(fast_scenario))
    return path


def test_loss_per_epoch_in_results_and_csv_and_one_progress_line_per_epoch_off_a_terminal(tmp_path, lenet_file, capsys):
    out = tmp_path / "run"
    assert main(["run", str(lenet_file), "--out", str(out)]) == 0  # not --quiet; stdout here is not a terminal
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [line for line in lines if re.search(r"epoch \d+/\d+: loss ", line)]
    assert len(epoch_lines) == 3 * 2 and "finetune exp 2 epoch 2/2: loss " in epoch_lines[-1]
    results = json.loads((out / "results.json").read_text())
    assert [(e["experience"], e["epoch"]) for e in results["training"]] == [(i, j) for i in range(3) for j in range(2)]
    assert all(e["loss"] > 0 and 0 <= e["train_accuracy"] <= 1 for e in results["training"])
    rows = list(csv.DictReader((out / "loss.csv").open()))
    assert len(rows) == 6 and float(rows[0]["loss"]) == pytest.approx(results["training"][0]["loss"], rel=1e-5)


def test_live_logging_to_csv_tensorboard_and_wandb(tmp_path, lenet_file, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert main(["run", str(lenet_file), "--out", str(out), "--quiet", "--log", "csv,tensorboard", "--log", "wandb"]) == 0
    epochs = list(csv.DictReader((out / "logs" / "epochs.csv").open()))
    experiences = list(csv.DictReader((out / "logs" / "experiences.csv").open()))
    assert len(epochs) == 6 and len(experiences) == 3
    results = json.loads((out / "results.json").read_text())
    assert float(experiences[-1]["accuracy_seen"]) == pytest.approx(results["metrics"]["final_accuracy"], abs=1e-9)
    assert float(experiences[-1]["average_incremental_accuracy"]) == pytest.approx(
        results["metrics"]["average_incremental_accuracy"], abs=1e-9)
    assert float(experiences[-1]["forgetting_max"]) == pytest.approx(results["metrics"]["forgetting_max"], abs=1e-9)
    assert list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert list((out / "logs" / "wandb").rglob("offline-run-*"))
    assert "loggers" not in json.dumps(results["config_hash"])  # logging never changes a run's identity
    code = main(["run", str(lenet_file), "--out", str(tmp_path / "x"), "--quiet", "--log", "mlflow"])
    assert code == 2


def test_report_figures_are_valid_files_in_three_formats_and_html_has_the_markdown_tables(tmp_path, lenet_file):
    for strategy in ("finetune", "joint"):
        for seed in (0, 1):
            assert main(["run", str(lenet_file), "--strategy", strategy, "--seed", str(seed), "--quiet",
                         "--out", str(tmp_path / "runs" / f"{strategy}{seed}")]) == 0
    report = tmp_path / "report"
    assert main(["report", str(tmp_path / "runs"), "-o", str(report)]) == 0
    stems = ["stream0_accuracy_curve", "stream0_accuracy_matrix", "stream0_forgetting", "stream0_loss"]
    for stem in stems:
        assert (report / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (report / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert b"<svg" in (report / f"{stem}.svg").read_bytes()[:2000]
    md = (report / "index.md").read_text()
    html = (report / "index.html").read_text()
    assert md.count("\n|---") == html.count("<table>") >= 1
    assert sum(line.startswith("| ") for line in md.splitlines()) == html.count("<tr>")
    for cell in ("| finetune | 2 |", "| joint | 2 |"):
        assert cell in md
    assert "<td>finetune</td><td>2</td>" in html and "train s" in html
    rows = list(csv.DictReader((report / "runs.csv").open()))
    assert len(rows) == 4 and {"seed", "final_accuracy", "train.lr", "strategy"} <= set(rows[0])


def test_figures_keep_labels_apart(tmp_path):
    """Panel titles wrap instead of running into their neighbours, and no two of many methods share a style."""
    from clpeft.reports.report import colours

    styles = colours([f"method {i}" for i in range(30)])
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 30


def test_figures_of_a_100_experience_stream_keep_a_few_integer_ticks_and_unmarked_curves(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import numpy as np

    from clpeft.reports.report import Row, colours, plot_section

    T, rng = 100, np.random.default_rng(0)
    R = np.tril(rng.random((T, T)))
    run = {"config": {"seed": 0}, "accuracy_matrix": R.tolist(), "metrics": {"accuracy_after_each": R.mean(1).tolist()},
           "training": [{"experience": i, "loss": 1.0} for i in range(T)]}
    row = Row(section="long", method="m", label="m", runs=[run], settings={})
    axes = []
    monkeypatch.setattr(plt, "close", lambda fig: axes.extend(fig.axes))
    files = plot_section([row], tmp_path, "s", colours(["m"]))
    assert len(files) == 12
    panels = [ax for ax in axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4
    for ax in panels:
        assert len(ax.get_xticks()) <= 12 and all(float(t).is_integer() for t in ax.get_xticks())
        assert all(line.get_marker() in (None, "None", "") for line in ax.get_lines()
                   if not line.get_label().startswith("_"))  # the curves, not error-bar caps
