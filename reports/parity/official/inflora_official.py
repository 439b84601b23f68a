"""Run InfLoRA's own learner (liangyanshuo/InfLoRA: methods/inflora.py, models/sinet_inflora.py, models/vit_inflora.py,
unmodified) on the shared digits stream, on CPU, with the shared 32-px backbone.

Shims only: `ipdb` (imported, unused) is stubbed; `update_DualGPM` receives its matrices as ndarrays (what
`np.linalg.svd` of a tensor gave under its torch 1.10 pin); SiNet's backbone factory builds their `ViT_lora_co` at the tiny
size (32 px, patch 4, 1 channel, width 96, depth 6, 3 heads) and loads the shared weights (the features are checked
equal to clpeft's backbone before anything trains); the data come as its data manager would give them
(`get_task_size`, `get_dataset` → (index, image, label)), and the task loop is its trainer's
(incremental_train → after_task), with the accuracy matrix computed from its own `interface` (the concatenated
per-task heads, argmax over the seen classes, as its `_eval_cnn`). Its settings are its CIFAR config except those
given here (epochs, batch size, learning rate scaled to digits as clpeft's side is).

    python reports/parity/official/make_weights.py          # the shared backbone, once
    OMP_NUM_THREADS=2 python reports/parity/official/inflora_official.py --seed 0 --epochs 20 --lr 0.002 \
        --out /tmp/parity_inflora/official_s0.json
"""
import os
import sys
import types

import torch

INFLORA = os.environ.get("INFLORA", "/tmp/inflora")
WEIGHTS = os.environ.get("SHARED_WEIGHTS", "/tmp/parity_coda/vit32.safetensors")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, INFLORA)
sys.modules.setdefault("ipdb", types.ModuleType("ipdb"))  # imported at the top of methods/inflora.py, never called

from pycil_style import DigitsManager, arguments, run_tasks  # noqa: E402

WIDTH, DEPTH, HEADS, RANK = 96, 6, 3, 10


def main():
    args = arguments(__doc__.splitlines()[0], lr=0.002)

    from safetensors.torch import load_file

    from clpeft.models.backbones import create_backbone

    ours, _ = create_backbone("vit_tiny_fmnist_32", pretrained=True)  # before their file re-registers timm's ViT names
    import models.sinet_inflora as sinet
    from methods.inflora import InfLoRA

    def tiny_vit(variant, pretrained=False, **kwargs):
        net = sinet.ViT_lora_co(img_size=32, patch_size=4, in_chans=1, num_classes=0, embed_dim=WIDTH, depth=DEPTH,
                                num_heads=HEADS, n_tasks=kwargs["n_tasks"], rank=kwargs["rank"])
        missing, unexpected = net.load_state_dict(load_file(WEIGHTS), strict=False)
        assert not unexpected and all("lora" in k or k.startswith("head") or k.endswith("_grow") for k in missing), (
            missing, unexpected)  # LoRA slots, the head and two unused "_grow" tokens are theirs alone
        net.out_dim = WIDTH
        return net

    sinet._create_vision_transformer = tiny_vit
    # under torch 1.10 (its pin) np.linalg.svd of a CPU tensor returned ndarrays; today's torch wraps them back into
    # tensors, which its numpy code then fails on: hand it the ndarrays it was written for
    update = InfLoRA.update_DualGPM
    InfLoRA.update_DualGPM = lambda self, mats: update(self, [m.numpy() for m in mats])
    config = {"memory_size": 0, "memory_per_class": 0, "fixed_memory": True, "device": [torch.device("cpu")],
              "net_type": "sip", "embd_dim": WIDTH, "total_sessions": 5, "init_cls": 2, "increment": 2,
              "rank": RANK, "optim": "adam", "EPSILON": 1e-8, "init_epoch": args.epochs, "init_lr": args.lr,
              "init_lr_decay": 0.1, "init_weight_decay": 0.0, "epochs": args.epochs, "lrate": args.lr,
              "lrate_decay": 0.1, "batch_size": args.batch, "weight_decay": 0.0, "num_workers": 0, "lamb": 0.95,
              "lame": 1.0, "dataset": "digits"}
    learner = InfLoRA(config)
    manager = DigitsManager()

    # the same backbone on both sides: the official ViT without LoRA against clpeft's
    probe = manager.xte[:64]
    with torch.no_grad():
        theirs_f = learner._network.image_encoder(probe, -1)[0][:, 0]
        ours_f = ours.eval()(probe)
    feature_gap = float((theirs_f - ours_f).abs().max())
    print(f"max |feature difference| official vs clpeft backbone: {feature_gap:.2e}", flush=True)

    run_tasks(learner, manager, lambda lrn, x: lrn._network.interface(x), args, feature_gap, RANK)

if __name__ == "__main__":
    main()
