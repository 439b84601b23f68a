"""EASE end to end with the official code (sun-hailong/CVPR24-Ease: models/ease.Learner, utils/inc_net.EaseNet,
backbone/vit_ease's adapter ViT and backbone/linears.CosineLinear) on the shared digits stream, on CPU, with the
shared 32-px backbone.

Shims only: `.cuda()`/`.to("cuda")` stay on the CPU; `easydict` (the adapter ViT's config type) is a dict with
attribute access; get_backbone builds the official adapter ViT at the tiny size and loads the shared weights the
way its timm loader does (qkv split, `mlp.fc*` renamed, every loaded weight frozen); `forward_reweight`'s width,
which the official code hard-codes as 768, is 96; the data manager serves the shared stream (pycil_style's, with
the `labels` the learner reads); the task loop is pycil_style's (incremental_train, evaluate with `test=True`,
after_task). Settings: the official `exps/ease_cifar.json` (SGD, cosine to 0, α 0.1, recompute the completion every
task, no PTM branch) with the epochs, learning rate, batch and bottleneck given below."""
import argparse
import random
import sys
from functools import partial

import numpy as np
import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--bottleneck", type=int, default=16)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--out", default="/tmp/parity_ease/official.json")
args = p.parse_args()
torch.set_num_threads(args.threads)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from shared_digits import keep_cuda_on_cpu, pilot_compat  # noqa: E402

keep_cuda_on_cpu()
easydict = pilot_compat()

sys.path.insert(0, "/tmp/ease")
from backbone import linears, vit_ease  # noqa: E402
from models import ease as official  # noqa: E402
from utils import inc_net  # noqa: E402

from pycil_style import DigitsManager, run_tasks  # noqa: E402
from shared_digits import split_qkv_state  # noqa: E402

official.num_workers = 0
WIDTH = 96
defaults = list(linears.CosineLinear.forward_reweight.__defaults__)
defaults[-2] = WIDTH  # out_dim (… init_cls, inc, out_dim, use_init_ptm)
linears.CosineLinear.forward_reweight.__defaults__ = tuple(defaults)


def tiny_ease_vit(cfg, pretrained=False):
    config = easydict.EasyDict(ffn_adapt=True, ffn_option="parallel", ffn_adapter_layernorm_option="none",
                               ffn_adapter_init_option="lora", ffn_adapter_scalar="0.1", ffn_num=args.bottleneck,
                               d_model=WIDTH, vpt_on=False, vpt_num=0, _device=torch.device("cpu"))
    model = vit_ease.VisionTransformer(img_size=32, patch_size=4, in_chans=1, embed_dim=WIDTH, depth=6, num_heads=3,
                                       mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                       num_classes=0, global_pool=False, drop_path_rate=0.0, tuning_config=config)
    msg = model.load_state_dict(split_qkv_state(), strict=False)
    assert not msg.unexpected_keys, msg.unexpected_keys
    for name, param in model.named_parameters():
        param.requires_grad = name in msg.missing_keys
    model.out_dim = WIDTH
    return model.eval()


inc_net.get_backbone = tiny_ease_vit


class Manager(DigitsManager):
    def get_dataset(self, indices, source, mode):
        split = super().get_dataset(indices, source, mode)
        split.labels = split.y.numpy()
        return split


config = {"device": [torch.device("cpu")], "memory_size": 0, "memory_per_class": 0, "fixed_memory": False,
          "model_name": "ease", "backbone_type": "vit_base_patch16_224_ease", "init_cls": 2, "increment": 2,
          "init_epochs": args.epochs, "later_epochs": args.epochs, "init_lr": args.lr, "later_lr": args.lr,
          "batch_size": args.batch, "weight_decay": 0.0005, "min_lr": 0, "optimizer": "sgd", "scheduler": "cosine",
          "ffn_num": args.bottleneck, "use_diagonal": False, "recalc_sim": True, "alpha": 0.1, "use_init_ptm": False,
          "beta": 0, "use_old_data": False, "use_reweight": True, "moni_adam": False, "adapter_num": -1,
          "seed": args.seed}
torch.manual_seed(args.seed); np.random.seed(args.seed); random.seed(args.seed)
learner = official.Learner(config)
run_tasks(learner, Manager(), lambda lrn, x: lrn._network(x, test=True)["logits"], args, settings=vars(args))
