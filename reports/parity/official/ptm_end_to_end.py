"""RanPAC or APER end to end with the official code (RanPAC/RanPAC: RanPAC.Learner, inc_net, petl's adapter ViT;
zhoudw-zdw/RevisitingCIL: models/aper_adapter.Learner, utils/inc_net, convs' adapter ViT) on the shared digits
stream, on CPU, with the shared 32-px backbone. Shims only: .cuda() is a no-op and cuda tensors stay on the CPU; get_convnet builds the official
adapter ViT at the tiny size and loads the shared weights the way vit_base_patch16_224_adapter loads timm's
(qkv split into q/k/v, mlp.fc* renamed, every loaded weight frozen, the adapters trainable); a data manager
serves the shared stream as (index, image, label); the task loop is trainer.py's (incremental_train, eval,
after_task), evaluated per experience."""
import argparse
import json
import random
import sys
import types
from functools import partial

import numpy as np
import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--method", choices=["ranpac", "aper"], default="ranpac")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--M", type=int, default=2000)
p.add_argument("--bottleneck", type=int, default=64)
p.add_argument("--out")
args = p.parse_args()
torch.set_num_threads(2)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from shared_digits import keep_cuda_on_cpu  # noqa: E402

keep_cuda_on_cpu()

import timm  # noqa: E402
import timm.layers  # noqa: E402
sys.modules.setdefault("timm.models.layers", timm.layers)
from safetensors.torch import load_file  # noqa: E402
from shared_digits import split_qkv_state  # noqa: E402

if args.method == "ranpac":
    sys.path.insert(0, "/tmp/RanPAC+RanPAC")
    import inc_net  # noqa: E402
    import RanPAC as official  # noqa: E402
    from petl import vision_transformer_adapter as vta  # noqa: E402
else:
    sys.path.insert(0, "/tmp/zhoudw-zdw+RevisitingCIL")
    from utils import inc_net  # noqa: E402
    from models import aper_adapter as official  # noqa: E402
    from convs import vision_transformer_adapter as vta  # noqa: E402
official.num_workers = 0
WIDTH = 96


def tiny_vit(_args, pretrained=False):
    """APER's second branch: the pretrained ViT without adapters (the official code's timm.create_model)."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=4,
                              in_chans=1, embed_dim=WIDTH, depth=6, num_heads=3)
    state = {k: v for k, v in load_file("/tmp/parity_coda/vit32.safetensors").items() if not k.startswith("head")}
    model.load_state_dict(state)
    model.out_dim = WIDTH
    return model.eval()


def tiny_adapter_vit(_args, pretrained=False):
    config = types.SimpleNamespace(ffn_adapt=True, ffn_option="parallel", ffn_adapter_layernorm_option="none",
                                   ffn_adapter_init_option="lora", ffn_adapter_scalar="0.1", ffn_num=args.bottleneck,
                                   d_model=WIDTH, vpt_on=False, vpt_num=0)
    model = vta.VisionTransformer(img_size=32, patch_size=4, in_chans=1, embed_dim=WIDTH, depth=6, num_heads=3,
                                  mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                  num_classes=0, global_pool=False, drop_path_rate=0.0, tuning_config=config)
    state = split_qkv_state()
    msg = model.load_state_dict(state, strict=False)
    assert not msg.unexpected_keys, msg.unexpected_keys
    for name, param in model.named_parameters():
        param.requires_grad = name in msg.missing_keys
    model.out_dim = WIDTH
    return model.eval()


inc_net.get_convnet = lambda a, pretrained=False: (tiny_adapter_vit(a) if "_adapter" in a["convnet_type"]
                                                   else tiny_vit(a))

# the shared digits stream
from shared_digits import digits32  # noqa: E402

xtr, ytr, xte, yte = digits32()


class Split(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y, self.labels = x, y, y.numpy()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return i, self.x[i], self.y[i]


class DataManager:
    def get_total_classnum(self):
        return 10

    def get_task_size(self, task):
        return 2

    def get_dataset(self, classes, source, mode):
        x, y = (xtr, ytr) if source == "train" else (xte, yte)
        keep = torch.isin(y, torch.as_tensor(classes))
        return Split(x[keep], y[keep])


torch.manual_seed(args.seed); np.random.seed(args.seed); random.seed(args.seed)
config = {"device": [torch.device("cpu")], "model_name": "adapter" if args.method == "ranpac" else "aper_adapter",
          "convnet_type": "pretrained_vit_b16_224_adapter", "batch_size": args.batch, "weight_decay": 0.0005,
          "min_lr": 1e-8, "use_RP": True, "M": args.M, "body_lr": 0.01, "head_lr": 0.01, "tuned_epoch": args.epochs,
          "init_lr": 0.01, "optimizer": "sgd", "ffn_num": args.bottleneck, "init_cls": 2, "memory_size": 0}
learner = official.Learner(config)
learner.is_dil, learner.dil_init = False, False
dm = DataManager()
R, lambdas = [], []
for t in range(5):
    original = getattr(official.Learner, "optimise_ridge_parameter", None)
    if original is not None:
        def spy(self_, F_, Y):
            lam = original(self_, F_, Y)
            lambdas.append(float(lam))
            return lam

        official.Learner.optimise_ridge_parameter = spy
    learner.incremental_train(dm)
    if original is not None:
        official.Learner.optimise_ridge_parameter = original
    learner._network.eval()
    with torch.no_grad():
        logits = learner._network(xte)["logits"]
    row = [float((logits[(yte // 2) == k].argmax(1) == yte[(yte // 2) == k]).float().mean()) for k in range(5)]
    R.append([v if k <= t else 0.0 for k, v in enumerate(row)])
    learner.after_task()
    print(f"after task {t}: " + " ".join(f"{v:.3f}" for v in R[-1][:t + 1]), flush=True)
n = [int(((yte // 2) == k).sum()) for k in range(5)]
result = {"method": args.method, "seed": args.seed, "accuracy_matrix": R, "final_accuracy": float(np.dot(R[-1], n) / sum(n)),
          "lambdas": lambdas, "test_samples": n, "settings": vars(args)}
print(json.dumps({k: result[k] for k in ("seed", "final_accuracy", "lambdas")}))
if args.out:
    json.dump(result, open(args.out, "w"), indent=1)
