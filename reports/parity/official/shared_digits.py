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
