"""Feature-level parity of clpeft's closed-form heads with the official code, on the shared digits stream.

The same frozen features (clpeft's vit_tiny_fmnist_32 on digits32_b0_inc2, test-time transforms) feed:
- RanPAC: the official Learner.replace_fc / optimise_ridge_parameter (RanPAC/RanPAC) vs clpeft's
  ClassStatistics + choose_ridge_lambda + ridge_solve, with the same W_rand and the same shuffled order;
- APER / SimpleCIL prototypes: the official replace_fc (zhoudw-zdw/RevisitingCIL models/aper_adapter.py) vs
  clpeft's PrototypeHead over ClassStatistics means;
- SLCA classifier alignment: the official _stage2_compact_classifier (GengDavid/SLCA) vs clpeft's SLCA.align, from
  the same statistics and the same initial (linearly probed) head; sampling RNGs differ, so 3 seeds each.
Prints a JSON summary."""
import json
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)
_to = torch.Tensor.to
torch.Tensor.cuda = lambda self, *a, **k: self


def to_cpu(self, *args, **kwargs):  # the official code moves tensors to 'cuda'; this machine has none
    def cpu(a):
        is_cuda = (isinstance(a, str) and a.startswith("cuda")) or (isinstance(a, torch.device) and a.type == "cuda")
        return torch.device("cpu") if is_cuda else a

    kwargs = {k: cpu(v) for k, v in kwargs.items()}
    return _to(self, *[cpu(a) for a in args], **kwargs)


torch.Tensor.to = to_cpu

from clpeft.config import load_scenario, resolve  # noqa: E402
from clpeft.models.class_stats import ClassStatistics, choose_ridge_lambda, ridge_solve  # noqa: E402
from clpeft.run import build  # noqa: E402
from clpeft.streams.stream import materialize  # noqa: E402

# ---------------------------------------------------------------------------------------- shared features
stream, model, _, strategy, _ = build(resolve(load_scenario("digits32_b0_inc2"), strategy="prototype"))
model.eval()
with torch.no_grad():
    train = [materialize(exp.dataset) for exp in stream.train_stream]
    train = [(model.features(x).float(), y) for x, y in train]
    xt, yt = materialize(torch.utils.data.ConcatDataset([exp.dataset for exp in stream.test_stream]))
    test = (model.features(xt).float(), yt)
C, D = 10, train[0][0].shape[1]
ranges = stream.class_ranges


def official_path(path):
    """Put one official repository first on the path, forgetting the same-named packages of the previous one."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("models", "utils", "convs", "backbone")]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.startswith("/tmp/") or "parity" in p]
    sys.path.insert(0, path)


def accuracy_rows(logit_fn, upto):
    f, y = test
    logits = logit_fn(f)[:, :upto]
    hits = (logits.argmax(1) == y).float()
    return [float(hits[(y >= a) & (y < b)].mean()) for a, b in ranges]


out = {"features": {"dim": D, "train": [len(y) for _, y in train], "test": len(yt)}}

# ---------------------------------------------------------------------------------------------- RanPAC
official_path("/tmp/RanPAC+RanPAC")
import RanPAC as official_ranpac  # noqa: E402

M = 2000
W_rand = torch.randn(D, M, generator=torch.Generator().manual_seed(0))
stub = types.SimpleNamespace(args={"use_RP": True, "M": M}, total_classnum=C, W_rand=W_rand, Q=torch.zeros(M, C),
                             G=torch.zeros(M, M), is_dil=False)
stub._network = nn.Module()
stub._network.fc = nn.Module()
stub._network.fc.weight = nn.Parameter(torch.zeros(C, M))
stub._network.eval = lambda: stub._network
stub.optimise_ridge_parameter = lambda F_, Y: official_ranpac.Learner.optimise_ridge_parameter(stub, F_, Y)
ours = ClassStatistics(M, C, gram=True)
R_off, R_ours, lam_off, lam_ours, rel = [], [], [], [], []
for t, (f, y) in enumerate(train):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(100 + t))
    fs, ys = f[order], y[order]
    lookup = {i: fs[i] for i in range(len(ys))}
    stub._network.convnet = lambda data: data  # the loader already holds the features
    loader = [(None, fs[i:i + 64], ys[i:i + 64]) for i in range(0, len(ys), 64)]
    stub._network.fc.weight = nn.Parameter(torch.zeros(ranges[t][1], M))
    captured = {}
    original = official_ranpac.Learner.optimise_ridge_parameter

    def spy(self_, F_, Y):
        captured["lam"] = original(self_, F_, Y)
        return captured["lam"]

    stub.optimise_ridge_parameter = lambda F_, Y: spy(stub, F_, Y)
    official_ranpac.Learner.replace_fc(stub, loader)
    W_off = stub._network.fc.weight.detach().double()               # [seen, M]
    lam_off.append(float(captured["lam"]))
    H = torch.relu(fs @ W_rand)
    ours.add(H, ys)
    lam, _ = choose_ridge_lambda(H, ys, ranges[t][1])
    lam_ours.append(lam)
    W_ours = ridge_solve(ours.gram, ours.sums[:ranges[t][1]].T, lam).T  # [seen, M]
    seen = ranges[t][1]
    R_off.append(accuracy_rows(lambda F_: torch.relu(F_ @ W_rand) @ W_off.float().T, seen))
    R_ours.append(accuracy_rows(lambda F_: torch.relu(F_ @ W_rand) @ W_ours.float().T, seen))
    rel.append(float((W_off - W_ours).abs().max() / W_ours.abs().max()) if lam == captured["lam"] else None)
out["ranpac"] = {"M": M, "lambda_official": lam_off, "lambda_clpeft": lam_ours,
                 "max_relative_weight_difference": rel, "R_official": R_off, "R_clpeft": R_ours}

# ------------------------------------------------------------------------------------ APER / SimpleCIL
official_path("/tmp/zhoudw-zdw+RevisitingCIL")
from models import aper_adapter as official_aper  # noqa: E402

from clpeft.models.heads import PrototypeHead  # noqa: E402

proto_off = torch.zeros(C, D)
head = PrototypeHead(D, C)
stats = ClassStatistics(D, C)
R_off, R_ours = [], []
for t, (f, y) in enumerate(train):
    stub = types.SimpleNamespace(train_dataset=types.SimpleNamespace(labels=y.numpy()))
    stub._network = types.SimpleNamespace(fc=types.SimpleNamespace(weight=types.SimpleNamespace(data=proto_off)))
    net = types.SimpleNamespace(eval=lambda: (lambda data: {"features": data}))
    official_aper.Learner.replace_fc(stub, [(None, f[i:i + 64], y[i:i + 64]) for i in range(0, len(y), 64)], net, {})
    stats.add(f, y)
    new = torch.arange(*ranges[t])
    head.set(new, stats.means()[new].float())
    seen = ranges[t][1]
    R_off.append(accuracy_rows(lambda F_: F.linear(F.normalize(F_, dim=1), F.normalize(proto_off, dim=1)), seen))
    R_ours.append(accuracy_rows(head, seen))
out["aper_prototypes"] = {"max_prototype_difference": float((proto_off - head.prototypes).abs().max()),
                          "R_official": R_off, "R_clpeft": R_ours}

# ------------------------------------------------------------------------- SLCA classifier alignment
official_path("/tmp/slca")
import timm.layers.weight_init  # noqa: E402 - SLCA imports it from its pre-0.9 home
sys.modules["timm.models.layers.weight_init"] = timm.layers.weight_init
import models.slca as official_slca  # noqa: E402
from convs.linears import SimpleContinualLinear  # noqa: E402

from clpeft.models.heads import IncrementalHead  # noqa: E402
from clpeft.strategies.slca import SLCA  # noqa: E402

# the shared starting point: per-experience heads fitted on the features (CE over the experience's classes)
torch.manual_seed(0)
init = SimpleContinualLinear(D, 2)
for t in range(1, len(train)):
    init.update(2)
for t, (f, y) in enumerate(train):
    h = init.heads[t]
    for p in h.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(h.parameters(), lr=0.1, momentum=0.9)
    for _ in range(50):
        loss = F.cross_entropy(h(f), y - ranges[t][0])
        opt.zero_grad(); loss.backward(); opt.step()
start = {k: v.clone() for k, v in init.state_dict().items()}
stats = ClassStatistics(D, C, class_second_moments=True)
for f, y in train:
    stats.add(f, y)
T = len(train) - 1
results = {"official": [], "clpeft": [], "before": None}
before = init.state_dict()
results["before"] = accuracy_rows(lambda F_: init(F_)["logits"], C)
for seed in range(3):
    # official
    torch.manual_seed(seed)
    fc = SimpleContinualLinear(D, 2)
    for t in range(1, len(train)):
        fc.update(2)
    fc.load_state_dict(start)
    net = nn.Module()
    net.fc = fc
    net.forward = lambda x, bcb_no_grad=True, fc_only=True: fc(x)
    means = np.stack([train[c // 2][0][train[c // 2][1] == c].double().mean(0).numpy() for c in range(C)])
    covs = torch.stack([torch.cov(train[c // 2][0][train[c // 2][1] == c].double().T) + torch.eye(D) * 1e-4
                        for c in range(C)]).float()
    stub = types.SimpleNamespace(_network=net, _total_classes=C, _class_means=means, _class_covs=covs,
                                 _device="cpu", _multiple_gpus=[], _cur_task=T, task_sizes=[2] * 5, logit_norm=0.1,
                                 test_loader=None, _compute_accuracy=lambda *a: 0.0)
    official_slca.SLCA._stage2_compact_classifier(stub, 2)
    results["official"].append(accuracy_rows(lambda F_: fc(F_)["logits"], C))
    # clpeft: its align() on an IncrementalHead holding the same starting weights
    incremental = IncrementalHead(D, C)
    for t in range(len(train)):
        chunk = incremental.grow(2)
        chunk.weight.data.copy_(start[f"heads.{t}.0.weight"])
        chunk.bias.data.copy_(start[f"heads.{t}.0.bias"])
    s = SLCA.__new__(SLCA)
    s.options = SLCA.parse_options({})
    s.model = types.SimpleNamespace(head=incremental, training=False, eval=lambda: None, train=lambda mode=True: None)
    s.stats, s.seed, s.experience_index, s.device = stats, seed, T, torch.device("cpu")
    s.class_experience = {c: c // 2 for c in range(C)}
    SLCA.align(s)
    results["clpeft"].append(accuracy_rows(incremental, C))
out["slca_alignment"] = results
print(json.dumps(out))
