"""ExSSNeT end to end with the official code (prateeky2806/exessnet: main_vision.main with its LeNet of
MultitaskMaskConv layers, signed-constant init, mask and weight phases, exclusive weight masks and its task loop) on
the shared digits stream at LeNet's 28×28, on CPU. The official vision code evaluates task-incrementally (adaptor
"gt": each task's test set under its own mask, labels 0..1 within the task); class-IL is not in it.

Shims only: `data.aval_datasets.AvalancheToPytorchDataset` (Avalanche's SplitMNIST download) is replaced by the shared
digits at 28×28 served the same way (per-task loaders, labels from 0 within each task, validation loaders = test
loaders as the official code has them with val_size 0); torchtext (imported by the text models only) is stubbed;
`set_gpu` takes its CPU branch, and the official best-checkpoint reload reads its own
file onto the CPU. Settings are the official vision.yaml's, with the command-line values below."""
import argparse
import json
import sys
import tempfile
import types

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=20)
p.add_argument("--weight-epochs", type=int, default=20)
p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--train-weight-lr", type=float, default=0.001)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--out")
p.add_argument("--check-inputs", action="store_true", help="only compare these 28×28 inputs with clpeft's lenet inputs")
opts = p.parse_args()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

torch.set_num_threads(opts.threads)


def digits28():
    """The shared split (stratified 80/20, random_state 0), 8×8 → 28×28 bilinear, normalised to [-1, 1]."""
    d = load_digits()
    idx_tr, idx_te = train_test_split(np.arange(len(d.target)), test_size=0.2, stratify=d.target, random_state=0)
    out = []
    for idx in (np.sort(idx_tr), np.sort(idx_te)):
        x = F.interpolate(torch.tensor(d.images[idx], dtype=torch.float32).unsqueeze(1) / 16.0, size=(28, 28),
                          mode="bilinear", align_corners=False)
        out += [(x - 0.5) / 0.5, torch.tensor(d.target[idx], dtype=torch.long)]
    return out


xtr, ytr, xte, yte = digits28()
if opts.check_inputs:
    from clpeft.config import load_scenario, resolve
    from clpeft.run import build
    from clpeft.streams.stream import materialize
    b = build(resolve(load_scenario("digits_b0_inc2"), strategy="exssnet", overrides={"model": {"backbone": "lenet", "pretrained": False}, "stream": {"class_order_seed": None}}))
    raw, labels = map(torch.cat, zip(*[materialize(e.dataset) for e in b.stream.test_stream]))
    order = yte.sort(stable=True).indices
    print(json.dumps({"same_labels": bool(torch.equal(labels, yte[order])),
                      "max_abs_input_difference": float((b.model.adapter(raw) - xte[order]).abs().max())}))
    sys.exit(0)

workdir = tempfile.mkdtemp(prefix="exssnet_official_")
sys.argv = [sys.argv[0], "--config=/tmp/exessnet/configs/transfer/config/vision.yaml", f"--server-home={workdir}",
            "--dataname=smnist", "--num-tasks=5", f"--log-dir={workdir}/runs", "--name=parity",
            f"--epochs={opts.epochs}", f"--weight-epochs={opts.weight_epochs}", "--weight-mask-type=exclusive",
            f"--lr={opts.lr}", f"--train-weight-lr={opts.train_weight_lr}", f"--batch-size={opts.batch}",
            f"--test-batch-size={opts.batch}", f"--seed={opts.seed}", "--workers=0"]
sys.path.insert(0, "/tmp/exessnet")
vocab = types.ModuleType("torchtext.vocab")
vocab.GloVe = vocab.FastText = None
sys.modules.update({"torchtext": types.ModuleType("torchtext"), "torchtext.vocab": vocab})

from args import args  # noqa: E402 - parses sys.argv and the YAML as the official entry point does

_load = torch.load
torch.load = lambda f, map_location=None, **k: _load(f, map_location="cpu", weights_only=False)  # its own file


class SharedDigits:
    """The official loader's interface over the shared digits: 5 tasks of 2 classes, labels 0..1 within a task."""

    def __init__(self, dataset=None, **_):
        self.task_classes, self.total_classes, self.max_classes = [2] * 5, 10, 2

        def loaders(x, y, shuffle):
            return [torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[y // 2 == t], y[y // 2 == t] - 2 * t),
                                                batch_size=args.batch_size, shuffle=shuffle) for t in range(5)]
        self.train_loaders, self.test_loaders = loaders(xtr, ytr, True), loaders(xte, yte, False)
        self.val_loaders = self.test_loaders

    def update_task(self, i):
        args.num_classes = self.task_classes[i]
        self.train_loader, self.val_loader, self.test_loader = (
            self.train_loaders[i], self.val_loaders[i], self.test_loaders[i])


aval = types.ModuleType("data.aval_datasets")
aval.AvalancheToPytorchDataset = SharedDigits
sys.modules["data.aval_datasets"] = aval
from utils import utils as official_utils  # noqa: E402


def cpu(model):
    """set_gpu's branch for multigpu None (the YAML's [0] stays set: the checkpoint reload formats it)."""
    args.device = torch.device("cpu")
    return model


official_utils.set_gpu = cpu
import main_vision  # noqa: E402

R = main_vision.main().tolist()  # row t: task-IL accuracy of tasks 0..t after learning task t
n = [int(((yte // 2) == k).sum()) for k in range(5)]
result = {"method": "exssnet", "evaluation": "task-IL (official adaptor gt)", "seed": opts.seed,
          "accuracy_matrix_task_il": R, "final_accuracy_task_il": float(np.dot(R[-1], n) / sum(n)),
          "test_samples": n, "settings": vars(opts), "threads": torch.get_num_threads()}
sys.stdout = sys.__stdout__
print(json.dumps({k: result[k] for k in ("seed", "final_accuracy_task_il")}))
if opts.out:
    json.dump(result, open(opts.out, "w"), indent=1)
