"""SLCA end to end with the official code (GengDavid/SLCA: models/slca.SLCA, utils/inc_net.FinetuneIncrementalNet,
convs/linears.SimpleContinualLinear, convs/vits.VisionTransformer) on the shared digits stream, on CPU, with the
shared 32-px backbone: the slow learner (full fine-tuning at lr × bcb_lrscale), the class statistics and the
classifier alignment all run as the official learner runs them.

Shims only: .cuda() is a no-op; get_convnet builds the official VisionTransformer at the tiny size and loads the
shared weights (its keys are timm's; the official IN21k builder's fresh final LayerNorm is not reproduced, so both
sides start from the same features); save_checkpoint writes nothing; a data manager serves the shared stream as
(index, image, label) with no augmentation; the task loop is trainer.py's (incremental_train, eval, after_task),
evaluated per experience."""
import argparse
import json
import random
import sys

import numpy as np
import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=20)
p.add_argument("--milestone", type=int, default=18)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--out", default="/tmp/parity_slca/official.json")
p.add_argument("--check-features", action="store_true", help="only compare the official ViT's features with clpeft's")
args = p.parse_args()
torch.set_num_threads(args.threads)

torch.Tensor.cuda = lambda self, *a, **k: self
nn.Module.cuda = lambda self, *a, **k: self

import timm.layers  # noqa: E402
import timm.layers.weight_init  # noqa: E402 - SLCA imports both from their pre-0.9 home
sys.modules.setdefault("timm.models.layers", timm.layers)
sys.modules["timm.models.layers.weight_init"] = timm.layers.weight_init
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, "/tmp/slca")
from convs import vits  # noqa: E402
import models.base as official_base  # noqa: E402
import models.slca as official  # noqa: E402
from utils import inc_net  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from pycil_style import DigitsManager, run_tasks  # noqa: E402
from shared_digits import digits32  # noqa: E402

official.num_workers = 0
WIDTH = 96


def tiny_vit(_cfg, pretrained=False):
    model = vits.VisionTransformer(img_size=32, patch_size=4, in_chans=1, num_classes=0, embed_dim=WIDTH, depth=6,
                                   num_heads=3)
    state = {k: v for k, v in load_file("/tmp/parity_coda/vit32.safetensors").items() if not k.startswith("head")}
    model.load_state_dict(state)
    return model


inc_net.get_convnet = tiny_vit
official_base.BaseLearner.save_checkpoint = lambda self, *a, **k: None

xtr, ytr, xte, yte = digits32()

if args.check_features:
    from clpeft.config import load_scenario, resolve
    from clpeft.run import build
    from clpeft.streams.stream import materialize
    model = build(resolve(load_scenario("digits32_b0_inc2"), strategy="prototype")).model.eval()
    batches = [materialize(e.dataset) for e in build(resolve(load_scenario("digits32_b0_inc2"), strategy="prototype")).stream.test_stream]
    with torch.no_grad():
        raw = torch.cat([x for x, _ in batches])
        labels = torch.cat([y for _, y in batches])
        x = model.adapter(raw)  # clpeft's 8x8 digits at 32 px, normalised as the shared stream
        ours, theirs = model.features(raw), tiny_vit(None).eval()(x)["features"]
    same_images = torch.equal(labels, yte.sort(stable=True).values) and \
        float((x - xte[yte.sort(stable=True).indices]).abs().max()) < 1e-6  # clpeft's test split, grouped by class
    print(json.dumps({"same_images": same_images, "max_abs_feature_difference": float((ours - theirs).abs().max()),
                      "scale": float(ours.abs().max())}))
    sys.exit(0)


class DataManager(DigitsManager):
    """pycil_style's data manager, with what SLCA's learner also asks of it."""

    dataset_name = "digits32"

    def get_dataset(self, classes, source, mode, appendent=None, with_raw=False, ret_data=False):
        split = super().get_dataset(classes, source, mode)
        return (split.x.numpy(), split.y.numpy(), split) if ret_data else split


torch.manual_seed(args.seed); np.random.seed(args.seed); random.seed(args.seed)
config = {"device": [torch.device("cpu")], "memory_size": 0, "memory_per_class": 0, "fixed_memory": False,
          "model_name": "slca_digits", "model_postfix": f"{args.epochs}e", "prefix": "parity", "run_id": 0,
          "seed": args.seed, "convnet_type": "vit-b-p16", "epochs": args.epochs, "milestones": [args.milestone],
          "ca_epochs": 5, "ca_with_logit_norm": 0.1}
learner = official.SLCA(config)
run_tasks(learner, DataManager(), lambda lrn, x: lrn._network(x)["logits"], args, settings=vars(args))
