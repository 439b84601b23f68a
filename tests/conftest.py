import warnings

import pytest

warnings.filterwarnings("ignore", module="avalanche")

# A fast scenario: digits, random-init tiny ViT (weights are tested separately), 1 epoch.
FAST_SCENARIO = {
    "name": "fast",
    "stream": {"dataset": "digits", "n_experiences": 3, "first_experience_classes": 4},
    "model": {"backbone": "vit_tiny_fmnist_scratch", "pretrained": False},
    "train": {"epochs": 1, "lr": 0.001, "batch_size": 64, "eval_batch_size": 256},
}


@pytest.fixture
def fast_scenario():
    import copy

    return copy.deepcopy(FAST_SCENARIO)
