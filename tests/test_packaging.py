"""A non-editable install works: the wheel carries the bundled weights, the scenarios and py.typed, and a
digits scenario runs from it in a directory with no source tree around."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_runs_a_scenario_away_from_the_source_tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # as a checkout holds them: the YAML in the top-level scenarios/, clpeft/scenarios a link to it
    assert (ROOT / "clpeft" / "scenarios").is_symlink() and (ROOT / "scenarios" / "digits_b0_inc2.yaml").is_file()
    shutil.copytree(ROOT / "scenarios", src / "scenarios")
    shutil.copytree(ROOT / "clpeft", src / "clpeft", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("clpeft-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"clpeft/py.typed", "clpeft/weights/vit_tiny_fmnist.safetensors", "clpeft/scenarios/digits_b0_inc2.yaml"} <= names
    shipped = {n.split("/")[-1] for n in names if n.startswith("clpeft/scenarios/")}
    assert shipped == {p.name for p in (ROOT / "scenarios").glob("*.yaml")}  # every scenario, under its name
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import clpeft; print(clpeft.__file__)"], env=env, cwd=work,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), where  # the installed copy, not the checkout
    run = subprocess.run([sys.executable, "-m", "clpeft", "run", "digits_b0_inc2", "--strategy", "prototype", "--quiet",
                          "--out", "out"], env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((work / "out" / "results.json").read_text())
    assert results["config"]["model"]["backbone"] == "vit_tiny_fmnist" and results["metrics"]["final_accuracy"] > 0.4
