"""One seed of every built-in strategy on a small digits stream (3 experiences, 2 epochs; a random tiny ViT where the
method needs one, LeNet otherwise; the settings of tests/test_resume_every_strategy.py): results.json per run, for
comparing two code versions byte for byte with compare.py.

    PYTHONPATH=<tree> python reports/refactor/api_runs.py OUT_DIR [NAME ...]   # once per tree, 1 thread

Names after OUT_DIR restrict the runs to those strategies (default: every built-in one).
"""
import copy
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
import torch  # noqa: E402

from clpeft.config import resolve  # noqa: E402
from clpeft.run import run  # noqa: E402
from clpeft.strategies import STRATEGIES  # noqa: E402

SCENARIO = {"name": "fast", "stream": {"dataset": "digits", "n_experiences": 3, "first_experience_classes": 4},
            "model": {"backbone": "vit_tiny_fmnist_scratch", "pretrained": False},
            "train": {"epochs": 2, "lr": 0.001, "batch_size": 64, "eval_batch_size": 256}}
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_resume_every_strategy import EXTRA, LENET, NEEDS_VIT, PET  # noqa: E402 - the test's settings, one source

out = Path(sys.argv[1])
torch.set_num_threads(1)
for name in sys.argv[2:] or sorted(STRATEGIES):
    target = out / name
    if (target / "results.json").exists():
        continue
    overrides = {**({} if name in NEEDS_VIT else LENET), **EXTRA.get(name, {})}
    config = resolve(copy.deepcopy(SCENARIO), strategy=name, pet=PET.get(name), overrides=overrides, seed=0)
    result = run(config, out_dir=target)
    print(name, result["metrics"]["final_accuracy"], flush=True)
