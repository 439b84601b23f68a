"""Run SD-LoRA's own learner (WuYichen-97/SD-Lora-CL: models/sdlora.py, backbone/lora.py, utils/inc_net.py,
unmodified) on the shared digits stream, on CPU, with the shared 32-px backbone.

Shims only: `.cuda()` is a CPU no-op; `timm.create_model` (called for ViT-B/16 when the learner builds and rebuilds
its network) returns the shared tiny ViT (32 px, patch 4, 1 channel, width 96, depth 6, 3 heads; features checked
equal to clpeft's), and the feature width it hard-codes as 768 is set to 96 after each build; its LoRA files go to
a fresh temporary folder per run (stale files from another run are never read) and are read back with
`weights_only=False` (they pickle modules; today's torch refuses that by default); the data come as its data
manager gives them ((index, image, label)); the task loop is its trainer's (incremental_train → after_task), and the
accuracy matrix comes from its own network's logits over the seen classes. Its CIFAR settings (SGD momentum 0.9,
no weight decay, constant rate, rank 10, magnitudes 0.8) except those given here (epochs, batch, rate).

    python reports/parity/official/make_weights.py          # the shared backbone, once
    OMP_NUM_THREADS=1 python reports/parity/official/sd_lora_official.py --seed 0 --epochs 10 --lr 0.008 \
        --out /tmp/parity_sd_lora/official_s0.json
"""
import os
import sys
import tempfile

import torch
from torch import nn

SDLORA = os.environ.get("SDLORA", "/tmp/sdlora")
WEIGHTS = os.environ.get("SHARED_WEIGHTS", "/tmp/parity_coda/vit32.safetensors")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pycil_style import DigitsManager, arguments, run_tasks  # noqa: E402

WIDTH = 96


def main():
    args = arguments(__doc__.splitlines()[0], lr=0.008)

    import timm
    from safetensors.torch import load_file

    from clpeft.models.backbones import create_backbone

    ours, _ = create_backbone("vit_tiny_fmnist_32", pretrained=True)
    weights = load_file(WEIGHTS)

    def tiny_vit(name, pretrained=False, num_classes=0, **kwargs):
        net = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=4, in_chans=1, num_classes=0,
                                                                embed_dim=WIDTH, depth=6, num_heads=3)
        missing, unexpected = net.load_state_dict(weights, strict=False)
        assert not unexpected and not missing, (missing, unexpected)
        return net

    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    timm.create_model = tiny_vit
    load = torch.load
    torch.load = lambda *a, **k: load(*a, **{**k, "weights_only": False})  # its own LoRA files, written by this run
    sys.path.insert(0, SDLORA)
    import utils.inc_net as inc_net
    from models.sdlora import Learner

    get_backbone = inc_net.get_backbone

    def backbone_at_width(*a, **k):
        net = get_backbone(*a, **k)
        net.out_dim = WIDTH
        return net

    inc_net.get_backbone = backbone_at_width
    update_network = Learner.update_network

    def network_at_width(self, index=True):
        net = update_network(self, index)
        net.out_dim = WIDTH
        return net

    Learner.update_network = network_at_width

    folder = tempfile.mkdtemp(prefix="sdlora_") + "/"
    config = {"memory_size": 0, "memory_per_class": 0, "fixed_memory": False, "device": [torch.device("cpu")],
              "backbone_type": "vit_base_patch16_224", "model_name": "sdlora", "init_cls": 2, "increment": 2,
              "filepath": folder, "init_epoch": args.epochs, "epochs": args.epochs, "init_lr": args.lr,
              "lrate": args.lr, "init_milestones": [60, 120, 170], "milestones": [40, 70], "init_lr_decay": 0.1,
              "lrate_decay": 0, "batch_size": args.batch, "weight_decay": 2e-4, "init_weight_decay": 0.0005,
              "scheduler": "cosine", "min_lr": 5e-3, "tuned_epoch": args.epochs, "optimizer": "sgd"}
    learner = Learner(config)
    manager = DigitsManager()
    probe = manager.xte[:64]
    with torch.no_grad():
        theirs_f = learner._network.backbone(probe)
        ours_f = ours.eval()(probe)
    feature_gap = float((theirs_f - ours_f).abs().max())
    print(f"max |feature difference| official vs clpeft backbone: {feature_gap:.2e}", flush=True)

    run_tasks(learner, manager, lambda lrn, x: lrn._network(x)["logits"][:, : lrn._total_classes], args, feature_gap)

if __name__ == "__main__":
    main()
