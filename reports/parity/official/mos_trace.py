"""MOS's adapter averaging as the official code runs it, traced over two tasks against clpeft's ``ema_mode:
per_block_forward``, on the same weights and the same inputs.

Both sides start from the same state: the shared 32-px backbone (features checked equal with the adapters at 0),
the same head, the adapter as task 0 left it (θ0, drawn from a seed; stored as snapshot 0 and as the first prefix
sum) and the current adapter θ1 (another draw). Then, on the same batches of the shared digits stream:

1. task 1 training: ``steps`` steps of forward (official ``forward(x, adapter_id=1, train=True)`` / clpeft
   ``training_logits``), cross-entropy, backward, plain SGD on the adapter, then the after-step pull (official
   ``adapter_merge`` / clpeft ``after_step``);
2. snapshot 1 (official ``adapter_update`` / clpeft ``after_experience``'s copy and prefix sum);
3. evaluation forwards with snapshot 1 (official ``backbone(x, adapter_id=1, train=False)`` / clpeft's multi-pass
   features with the as-run context), each moving snapshot 1 toward μ_1 = θ0.

Recorded per event on both sides: the largest difference of the adapters' weights and of the features, and the
distance of the adapter from μ_1. Run: ``python reports/parity/official/mos_trace.py --out FILE`` (official code
under /tmp/mos or $MOS_OFFICIAL; the backbone from make_weights.py)."""
import argparse
import json
import os
import sys
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=3)
p.add_argument("--evals", type=int, default=4)
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--out", default="reports/parity/mos_trace.json")
args = p.parse_args()
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from shared_digits import keep_cuda_on_cpu, pilot_compat, split_qkv_state  # noqa: E402

keep_cuda_on_cpu()
easydict = pilot_compat()
sys.path.insert(0, os.environ.get("MOS_OFFICIAL", "/tmp/mos"))
from backbone import vit_mos  # noqa: E402

from clpeft.config import load_scenario, resolve  # noqa: E402
from clpeft.run import build  # noqa: E402
from clpeft.streams.stream import materialize  # noqa: E402

WIDTH, BOTTLENECK, MOMENTUM = 96, 16, 0.1

# ------------------------------------------------------------------ the official side
config = easydict.EasyDict(ffn_adapt=True, ffn_option="parallel", ffn_adapter_layernorm_option="none",
                           ffn_adapter_init_option="lora", ffn_adapter_scalar="0.1", ffn_num=BOTTLENECK,
                           d_model=WIDTH, _device=torch.device("cpu"), adapter_momentum=MOMENTUM, vpt_on=False,
                           vpt_num=0)
official = vit_mos.VisionTransformer(img_size=32, patch_size=4, in_chans=1, embed_dim=WIDTH, depth=6, num_heads=3,
                                     mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                     num_classes=10, global_pool=False, drop_path_rate=0.0, tuning_config=config)
official.load_state_dict(split_qkv_state(), strict=False)
official.eval()  # dropout off on both sides: the trace compares arithmetic, not random masks

# ------------------------------------------------------------------ clpeft's side
scenario = load_scenario("digits32_b0_inc2")
cfg = resolve(scenario, strategy="mos", pet="adapter", seed=0, overrides={
    "pet": {"blocks": None, "position": "mlp_residual", "bottleneck": BOTTLENECK, "activation": "relu",
            "dropout": 0.1, "scale": 0.1}})
built = build(cfg)
model, pet, mos = built.model, built.pet, built.strategy
model.eval()
model.head.grow(10)

xtr, ytr = materialize(built.stream.train_stream[1].dataset)   # the stream's inputs; the official side gets them
xte, _ = materialize(built.stream.test_stream[1].dataset)      # through clpeft's input adapter, as the shims feed it
with torch.no_grad():
    gap = float((official(model.adapter(xte))["features"] - model.features(xte)).abs().max())

# ------------------------------------------------------------------ the same starting state
g = torch.Generator().manual_seed(2025)
depth = len(official.blocks)
theta = [[(torch.randn(BOTTLENECK, WIDTH, generator=g) * 0.05, torch.randn(BOTTLENECK, generator=g) * 0.05,
           torch.randn(WIDTH, BOTTLENECK, generator=g) * 0.05, torch.randn(WIDTH, generator=g) * 0.05)
          for _ in range(depth)] for _ in range(2)]  # θ0, θ1: per layer (down W, down b, up W, up b)
head_w, head_b = torch.randn(10, WIDTH, generator=g) * 0.02, torch.zeros(10)


def set_official(adapters, values):
    """New storage, as the official code's own writes (``.data = …``): its first prefix sum is the adapter's ``.data``
    itself, so an in-place copy would change it too."""
    for a, (dw, db, uw, ub) in zip(adapters, values):
        a.down_proj.weight.data, a.down_proj.bias.data = dw.clone(), db.clone()
        a.up_proj.weight.data, a.up_proj.bias.data = uw.clone(), ub.clone()


def clpeft_state(values):
    state = {}
    for (target, _), (dw, db, uw, ub) in zip(pet.layers.items(), values):
        state.update({f"{target}.down.weight": dw, f"{target}.down.bias": db, f"{target}.up.weight": uw,
                      f"{target}.up.bias": ub})
    return state


def official_state(adapters):
    return [(a.down_proj.weight.detach().clone(), a.down_proj.bias.detach().clone(), a.up_proj.weight.detach().clone(),
             a.up_proj.bias.detach().clone()) for a in adapters]


set_official(official.cur_adapter, theta[0])
official.adapter_update()                          # snapshot 0 and the first prefix sum, as task 0 ends
set_official(official.cur_adapter, theta[1])
with torch.no_grad():
    official.head.weight.copy_(head_w); official.head.bias.copy_(head_b)

mos.pet.add("current"); mos.pet.add("e0")
mos.pet.remove("default")
mos.pet.load_state_dict(clpeft_state(theta[0]), "e0")
mos.pet.load_state_dict(clpeft_state(theta[1]), "current")
mos.names, mos.prefix_sums = ["e0"], [mos.pet.state_dict("e0")]
model.eval()  # the new instances too (dropout off, as on the official side)
mos.experience_index = 1
with torch.no_grad():
    model.head.chunks[0].weight.copy_(head_w); model.head.chunks[0].bias.copy_(head_b)
mu1 = clpeft_state(theta[0])


def weight_gap(official_adapters, name):
    ours = mos.pet.state_dict(name)
    return max(float((ours[k] - v).abs().max()) for k, v in clpeft_state(official_state(official_adapters)).items())


def distance_to_mu(name):
    ours = mos.pet.state_dict(name)
    return float(torch.sqrt(sum(((ours[k] - mu1[k]) ** 2).sum() for k in ours)))


events = []
opt_official = torch.optim.SGD(official.cur_adapter.parameters(), lr=args.lr)
opt_clpeft = torch.optim.SGD(mos.pet.parameters("current"), lr=args.lr)
for step in range(args.steps):
    x, y = xtr[32 * step:32 * (step + 1)], ytr[32 * step:32 * (step + 1)]
    logits = official(model.adapter(x), adapter_id=1, train=True)["logits"]
    loss = F.cross_entropy(logits, y)
    opt_official.zero_grad(); loss.backward(); opt_official.step()
    official.adapter_merge()
    mos.pet.activate("current")
    ours = mos.training_logits(x)
    loss_ours = F.cross_entropy(ours, y)
    opt_clpeft.zero_grad(); loss_ours.backward(); opt_clpeft.step()
    mos.after_step()
    events.append({"event": f"train step {step + 1}", "loss_gap": abs(float(loss.detach()) - float(loss_ours.detach())),
                   "logit_gap": float((logits - ours).abs().max()),
                   "adapter_gap": weight_gap(official.cur_adapter, "current"),
                   "distance_to_mu1": distance_to_mu("current")})

official.adapter_update()                          # snapshot 1, as task 1 ends
mos.pet.add("e1", copy_from="current")
mos.names.append("e1")
model.eval()
state = mos.pet.state_dict("current")
mos.prefix_sums.append({k: v + mos.prefix_sums[-1][k] for k, v in state.items()})
for i in range(args.evals):
    x = xte[16 * i:16 * (i + 1)]
    with torch.no_grad():
        f_official = official(model.adapter(x), adapter_id=1, train=False)["features"]
        f_ours = mos.passes(model.adapter(x), mos.names, around=mos._around)[:, 1]
    events.append({"event": f"evaluation forward {i + 1} with snapshot 1",
                   "feature_gap": float((f_official - f_ours).abs().max()),
                   "adapter_gap": weight_gap(official.adapter_list[1], "e1"),
                   "distance_to_mu1": distance_to_mu("e1")})

result = {"official": "sun-hailong/AAAI25-MOS@8d5e07c (backbone/vit_mos.py: forward_features, reweight_adapter, adapter_merge)",
          "frozen_feature_gap": gap, "steps": args.steps, "evaluations": args.evals, "lr": args.lr,
          "adapter_momentum": MOMENTUM, "depth": depth, "threads": torch.get_num_threads(), "events": events}
print(json.dumps(result, indent=1))
with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
