"""PyCIL's Weight Aligning (G-U-N/PyCIL, unmodified `models/wa.py` + `models/base.py`) on the shared digits stream.

The official learner runs as `trainer.py` drives it (incremental_train → eval → after_task) with these changes only:
a data manager over the shared digits stream (the images as clpeft's resnet32 sees them: [0, 1], 32×32 bilinear,
3 channels, CIFAR-100 mean/std; no augmentation on either side), data loaders in-process, top-1 only (PyCIL's top-5
needs 5 classes), the CPU as device, `torch.manual_seed(seed)` instead of PyCIL's fixed seed 1, and the schedule
constants scaled by `--scale` (1.0 = PyCIL's 200/170 epochs and milestones). Writes the accuracy matrix as JSON.

    python reports/parity/official/wa_pycil.py --seed 0 --scale 0.1 --out official_wa_s0.json   # PyCIL under /tmp/pycil
"""
import argparse
import functools
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shared_digits import digits32  # noqa: E402

PYCIL = os.environ.get("PYCIL", "/tmp/pycil")
CIFAR_MEAN, CIFAR_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


class Indexed(torch.utils.data.Dataset):
    """PyCIL's DummyDataset contract: (index, image, label); the images are already tensors."""

    def __init__(self, data, targets):
        self.data, self.targets = data, targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return i, torch.from_numpy(self.data[i]), int(self.targets[i])


class DigitsManager:
    """The part of PyCIL's DataManager that WA calls, over the shared digits stream (5 tasks of 2, order 0..9)."""

    def __init__(self):
        x_tr, y_tr, x_te, y_te = digits32()
        mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
        prep = lambda x: ((x * 0.5 + 0.5).expand(-1, 3, -1, -1) - mean) / std  # noqa: E731 - back to [0, 1], then as clpeft
        self.train = (prep(x_tr).numpy().astype(np.float32), y_tr.numpy())
        self.test = (prep(x_te).numpy().astype(np.float32), y_te.numpy())
        self.nb_tasks = 5

    def get_task_size(self, task):
        return 2

    def get_total_classnum(self):
        return 10

    def get_dataset(self, indices, source, mode, appendent=None, ret_data=False, m_rate=None):
        x, y = self.train if source == "train" else self.test
        keep = np.isin(y, np.asarray(indices, dtype=np.int64))
        data, targets = [x[keep]], [y[keep]]
        if appendent is not None and len(appendent) != 0 and len(appendent[0]) != 0:
            data.append(appendent[0])
            targets.append(appendent[1])
        data, targets = np.concatenate(data), np.concatenate(targets)
        dataset = Indexed(data, targets)
        return (data, targets, dataset) if ret_data else dataset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of PyCIL's epochs and milestones")
    ap.add_argument("--memory", type=int, default=200)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sys.path.insert(0, PYCIL)
    import models.base as base
    import models.wa as wa
    import utils.inc_net as inc_net

    gammas = []
    official_align = inc_net.IncrementalNet.weight_align

    def recording_align(net, increment):  # the official step, with its γ recorded (its second call per task: γ = 1)
        w = net.fc.weight.data
        gammas.append(float(w[:-increment].norm(dim=1).mean() / w[-increment:].norm(dim=1).mean()))
        official_align(net, increment)

    inc_net.IncrementalNet.weight_align = recording_align

    in_process = functools.partial(torch.utils.data.DataLoader, num_workers=0)
    for module in (base, wa):
        module.DataLoader = lambda *args, **kw: in_process(*args, **{k: v for k, v in kw.items() if k != "num_workers"})
    s = a.scale
    wa.init_epoch, wa.epochs = max(1, round(200 * s)), max(1, round(170 * s))
    wa.init_milestones = [max(1, round(m * s)) for m in (60, 120, 170)]
    wa.milestones = [max(1, round(m * s)) for m in (60, 100, 140)]
    wa.num_workers = 0
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    args = {"convnet_type": "resnet32", "memory_size": a.memory, "fixed_memory": False, "device": [torch.device("cpu")],
            "dataset": "digits32", "model_name": "wa", "pretrained": False}
    learner = wa.WA(args)
    learner.topk = 1
    dm = DigitsManager()
    x_te, y_te = dm.test
    rows = []
    t0 = time.time()
    for task in range(dm.nb_tasks):
        learner.incremental_train(dm)
        pred, true = learner._eval_cnn(torch.utils.data.DataLoader(Indexed(x_te, y_te), batch_size=256))
        pred = pred[:, 0]
        rows.append([float((pred[true // 2 == e] == true[true // 2 == e]).mean()) for e in range(dm.nb_tasks)])
        learner.after_task()
        print(f"task {task}: " + " ".join(f"{v:.3f}" for v in rows[-1][:task + 1]), flush=True)
    counts = [int((y_te // 2 == e).sum()) for e in range(dm.nb_tasks)]
    a_t = float(np.average(rows[-1], weights=counts))
    mean_inc = float(np.mean([np.average(r[:t + 1], weights=counts[:t + 1]) for t, r in enumerate(rows)]))
    out = {"side": "official", "repo": "G-U-N/PyCIL", "commit": "87cc4110d607", "method": "wa", "seed": a.seed,
           "scale": a.scale, "epochs": [wa.init_epoch, wa.epochs], "milestones": [wa.init_milestones, wa.milestones],
           "memory_size": a.memory, "accuracy_matrix": rows, "test_samples": counts, "final_accuracy": a_t,
           "average_incremental_accuracy": mean_inc, "threads": torch.get_num_threads(), "seconds": round(time.time() - t0, 1),
           "exemplars": int(learner.exemplar_size),
           "gammas": gammas[0::2]}  # the aligning step of each task (the second, in after_task, is the no-op)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("seed", "final_accuracy", "average_incremental_accuracy")}))


if __name__ == "__main__":
    main()
