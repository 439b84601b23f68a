"""The shared digits parity stream as the official-code shims feed it: scikit-learn digits, stratified 80/20 split
(random_state 0), 8×8 → 32×32 bilinear, normalised to [-1, 1]; experiences of 2 classes in the order 0..9."""
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def _tensors(d, idx):
    x = torch.tensor(d.images[idx], dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5, torch.tensor(d.target[idx], dtype=torch.long)


def digits32():
    """(x_train, y_train, x_test, y_test), each split in the sorted order of the original indices."""
    d = load_digits()
    idx_tr, idx_te = train_test_split(np.arange(len(d.target)), test_size=0.2, stratify=d.target, random_state=0)
    idx_tr.sort()
    idx_te.sort()
    return (*_tensors(d, idx_tr), *_tensors(d, idx_te))


def split_qkv_state(path: str = "/tmp/parity_coda/vit32.safetensors") -> dict:
    """The shared backbone's weights as the official adapter ViTs (RevisitingCIL, RanPAC, EASE) load timm's: qkv split
    into q_proj/k_proj/v_proj, ``mlp.fc*`` renamed ``fc*``, the classifier dropped."""
    from safetensors.torch import load_file

    state = load_file(path)
    for key in list(state):
        if "qkv." in key:
            for name, t in zip(("q_proj", "k_proj", "v_proj"), state.pop(key).chunk(3)):
                state[key.replace("qkv", name)] = t
    for key in list(state):
        if "mlp.fc" in key:
            state[key.replace("mlp.", "")] = state.pop(key)
    return {k: v for k, v in state.items() if not k.startswith("head")}


def keep_cuda_on_cpu() -> None:
    """The official code's `.cuda()` and `.to("cuda")` leave tensors and modules on the CPU (this machine has no GPU)."""
    import torch.nn as nn

    to = torch.Tensor.to

    def to_cpu(self, *a, **k):
        def cpu(v):
            is_cuda = (isinstance(v, str) and v.startswith("cuda")) or (isinstance(v, torch.device) and v.type == "cuda")
            return torch.device("cpu") if is_cuda else v
        return to(self, *[cpu(v) for v in a], **{key: cpu(v) for key, v in k.items()})

    torch.Tensor.to = to_cpu
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self


def pilot_compat():
    """What the PILOT-lineage official codes (EASE, MOS) import that this environment lacks or moved: ``easydict``
    (a dict with attribute access) and ``timm.models.layers`` (now ``timm.layers``). Returns the easydict module."""
    import sys
    import types

    easydict = types.ModuleType("easydict")
    easydict.EasyDict = type("EasyDict", (dict,), {"__getattr__": dict.__getitem__})
    sys.modules["easydict"] = easydict
    import timm.layers

    sys.modules.setdefault("timm.models.layers", timm.layers)
    return easydict
