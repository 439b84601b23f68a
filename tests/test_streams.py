"""Streams: splits, class orders, mixed eval batches, offline sets, and online loaders on real-format files."""
import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from clpeft.errors import ClpeftError
from clpeft.streams import StreamConfig, make_stream
from clpeft.streams.datasets import load_cifar100, load_cub200, load_fashion_mnist, load_image_folder, load_imagenet_r
from clpeft.streams.stream import experience_sizes


def test_b0_and_bk_splits_and_class_order_by_seed():
    s = make_stream(StreamConfig(dataset="digits", n_experiences=5, class_order_seed=3))
    assert s.class_ranges == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert [exp.classes_in_this_experience for exp in s.train_stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    again = make_stream(StreamConfig(dataset="digits", n_experiences=5, class_order_seed=3))
    other = make_stream(StreamConfig(dataset="digits", n_experiences=5, class_order_seed=4))
    assert s.original_class_order == again.original_class_order != other.original_class_order
    bk = make_stream(StreamConfig(dataset="digits", n_experiences=4, first_experience_classes=4))
    assert bk.class_ranges == [(0, 4), (4, 6), (6, 8), (8, 10)]
    ti = make_stream(StreamConfig(dataset="digits", n_experiences=5, task_incremental=True))
    assert [exp.task_label for exp in ti.train_stream] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("n,first,match", [(3, None, r"use one of \[1, 2, 5, 10\]"), (4, 3, "remaining 7"), (0, None, "at least 1")])
def test_splits_that_do_not_divide_name_the_fix(n, first, match):
    with pytest.raises(ClpeftError, match=match):
        experience_sizes(10, n, first)


def test_eval_batches_are_mixed_and_shuffled_and_cover_everything():
    s = make_stream(StreamConfig(dataset="digits", n_experiences=5))
    batches = list(s.eval_batches(64, seed=0))
    ys = torch.cat([b[1] for b in batches])
    assert len(ys) == len(s.test_set()[1])
    assert sorted(ys.tolist()) == sorted(s.test_set()[1].tolist())
    assert all(len(torch.unique(b[1])) >= 5 for b in batches[:-1])  # a class-sorted order would give 1-2
    assert torch.equal(torch.cat([b[1] for b in s.eval_batches(64, seed=0)]), ys)  # fixed by the seed
    grouped = torch.cat([b[1] for b in s.eval_batches(64, seed=0, order="class_grouped")])
    assert int((grouped[1:] != grouped[:-1]).sum()) == 9  # each of the 10 classes in one contiguous run
    x, y, e = batches[0]
    assert torch.equal(e, s.experience_of_label(y))


def test_offline_sets_load():
    for name, n_test, side in [("digits", 360, 8), ("mnist5k", 1000, 28)]:
        s = make_stream(StreamConfig(dataset=name, n_experiences=2))
        x, y, _ = s.test_set()
        assert len(y) == n_test and x.shape[-1] == side and 0.0 <= x.min() and x.max() <= 1.0
        assert np.bincount(y.numpy()).min() > 0


def _write_idx(folder, images, labels, prefix):
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(b"\x00\x00\x08\x03" + b"".join(int(v).to_bytes(4, "big") for v in images.shape) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big") + labels.tobytes())


def test_fashion_mnist_reads_idx_files_and_missing_data_names_the_package(tmp_path):
    with pytest.raises(ClpeftError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path / "nothing")
    rng = np.random.RandomState(0)
    imgs = rng.randint(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    _write_idx(tmp_path, imgs, labels, "train")
    _write_idx(tmp_path, imgs[:10], labels[:10], "t10k")
    train, test, spec = load_fashion_mnist(root=tmp_path)
    assert len(train) == 20 and len(test) == 10 and spec.size == 28
    assert torch.allclose(train.images[3, 0], torch.tensor(imgs[3] / 255.0, dtype=torch.float32))
    assert train.targets == labels.tolist()


def _png(path, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), color).save(path)


def test_image_folder_and_cub_and_imagenet_r_layouts(tmp_path):
    for split in ("train", "test"):
        for c, color in (("cat", "red"), ("dog", "blue")):
            for k in range(2):
                _png(tmp_path / "folder" / split / c / f"{k}.png", color)
    train, test, spec = load_image_folder(tmp_path / "folder", image_size=32)
    x, y = test[3]
    assert x.shape == (3, 32, 32) and y == 1 and train.targets == [0, 0, 1, 1]

    cub = tmp_path / "cub" / "CUB_200_2011"
    rows = [(1, "001.A/a.jpg", 1, 1), (2, "001.A/b.jpg", 1, 0), (3, "002.B/c.jpg", 2, 1), (4, "002.B/d.jpg", 2, 0)]
    for _, rel, _, _ in rows:
        _png(cub / "images" / rel, "green")
    (cub / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, _, _ in rows))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    train, test, _ = load_cub200(tmp_path / "cub", image_size=32)
    assert train.targets == [0, 1] and test.targets == [0, 1] and test[1][0].shape == (3, 32, 32)

    inr = tmp_path / "inr"
    for wnid in ("n01", "n02"):
        for k in range(2):
            _png(inr / "imagenet-r" / wnid / f"{k}.jpg", "white")
    (inr / "train.txt").write_text("n01/0.jpg\nn02/0.jpg\n")
    (inr / "test.txt").write_text("n01/1.jpg 0\nn02/1.jpg 1\n")
    train, test, _ = load_imagenet_r(inr, image_size=32)
    assert train.targets == [0, 1] and test.targets == [0, 1]
    (inr / "test.txt").unlink()
    with pytest.raises(ClpeftError, match="test.txt"):
        load_imagenet_r(inr)


def test_cifar100_pickle_format_and_refuses_foreign_objects(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.random.RandomState(0).randint(0, 256, (6, 3072), dtype=np.uint8)
    for split in ("train", "test"):
        with open(folder / split, "wb") as fh:
            pickle.dump({"data": data, "fine_labels": [0, 1, 2, 0, 1, 2], "coarse_labels": [0] * 6}, fh)
    train, test, spec = load_cifar100(tmp_path, image_size=32)
    x, y = test[4]
    assert x.shape == (3, 32, 32) and y == 1 and spec.channels == 3

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "train", "wb") as fh:
        pickle.dump({"data": Evil()}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar100(tmp_path)


def test_online_sets_without_data_name_the_fix(tmp_path):
    with pytest.raises(ClpeftError, match="download: true"):
        load_cifar100(tmp_path)
    with pytest.raises(ClpeftError, match="data root"):
        make_stream(StreamConfig(dataset="cub200", n_experiences=2))
    with pytest.raises(ClpeftError, match="unknown stream dataset"):
        make_stream(StreamConfig(dataset="imagenet21k"))


@pytest.mark.parametrize("order", ["iid", "class_grouped", "dirichlet"])
def test_every_eval_order_covers_the_test_set_once(order):
    s = make_stream(StreamConfig(dataset="digits", n_experiences=5))
    ys = torch.cat([b[1] for b in s.eval_batches(32, seed=3, order=order)])
    assert sorted(ys.tolist()) == sorted(s.test_set()[1].tolist())


def test_dirichlet_order_sits_between_grouped_and_iid():
    def classes_per_batch(order, alpha=0.1):
        s = make_stream(StreamConfig(dataset="digits", n_experiences=5, dirichlet_alpha=alpha))
        return np.mean([len(torch.unique(b[1])) for b in s.eval_batches(32, seed=0, order=order)][:-1])

    grouped, iid = classes_per_batch("class_grouped"), classes_per_batch("iid")
    assert grouped < classes_per_batch("dirichlet", 0.1) < classes_per_batch("dirichlet", 100.0) <= iid + 0.5
    with pytest.raises(ClpeftError, match="dirichlet_alpha"):
        list(make_stream(StreamConfig(dataset="digits", dirichlet_alpha=0.0)).eval_batches(32, 0, "dirichlet"))


def test_the_synthetic_data_set_is_fixed_content_and_makes_a_100_experience_stream():
    from clpeft.config import load_scenario, resolve
    from clpeft.streams.datasets import load_synthetic
    from clpeft.streams.stream import make_stream

    train, test, spec = load_synthetic()
    again, _, _ = load_synthetic()
    assert torch.equal(train.images, again.images) and train.targets == again.targets  # a data set, not a draw
    assert (len(train), len(test), spec.channels, spec.size) == (4000, 1000, 1, 28)
    assert train.images.min() >= 0 and train.images.max() <= 1
    means = torch.stack([train.images[torch.tensor(train.targets) == c].mean(0) for c in (0, 1)])
    assert (means[0] - means[1]).abs().mean() > 0.1  # classes differ: something to learn
    stream = make_stream(resolve(load_scenario("long_synthetic"), strategy="finetune").stream, seed=0)
    assert stream.n_experiences == 100 and all(b - a == 2 for a, b in stream.class_ranges)


def test_skipping_unseen_test_experiences_leaves_every_row_as_it_was_and_runs_only_the_seen_ones(fast_scenario):
    from clpeft.config import resolve
    from clpeft.evaluation.evaluate import evaluate_stream
    from clpeft.run import build

    fast_scenario["stream"] = {"dataset": "digits", "n_experiences": 5}
    config = resolve(fast_scenario, strategy="finetune")
    stream, model, _, strategy, device = build(config)
    predicted = []

    def predict(x):
        predicted.append(len(x))
        return strategy.predict(x)

    model.eval()
    for num_seen in (0, 2, 5, 10):
        if num_seen > model.head.num_seen:
            model.head.grow(num_seen - model.head.num_seen)
        predicted.clear()
        full = evaluate_stream(predict, stream, num_seen, device, 64, 0)
        n_full = sum(predicted)
        predicted.clear()
        seen_only = evaluate_stream(predict, stream, num_seen, device, 64, 0, unseen=False)
        assert seen_only.accuracy == full.accuracy and seen_only.counts == full.counts
        assert seen_only.accuracy_task_il == pytest.approx(full.accuracy_task_il, nan_ok=True)
        seen_tests = sum(c for c, (start, _) in zip(full.counts, stream.class_ranges) if start < num_seen)
        assert sum(predicted) == (seen_tests if num_seen else 0) and n_full == (sum(full.counts) if num_seen else 0)
    assert config.config_hash() == resolve(dict(fast_scenario, stream={**fast_scenario["stream"], "eval_unseen": True}),
                                           strategy="finetune").config_hash()  # the default leaves run ids as they were


def test_permuted_digits_is_digits_under_fixed_pixel_permutations_one_per_experience():
    from clpeft.config import load_scenario, resolve
    from clpeft.streams.datasets import load_digits, load_permuted_digits

    train, test, spec = load_permuted_digits()
    digits_train, digits_test, _ = load_digits()
    n = len(digits_train)
    assert len(train) == 100 * n and len(test) == 100 * len(digits_test) and spec.size == 8
    assert torch.equal(train.images[:n], digits_train.images) and train.targets[:n] == digits_train.targets
    for p in (1, 57, 99):  # each copy: the same images with their 64 pixels permuted, labels shifted by 10·p
        block = train.images[p * n:(p + 1) * n].reshape(n, -1)
        assert train.targets[p * n:(p + 1) * n] == [10 * p + y for y in digits_train.targets]
        assert not torch.equal(block, digits_train.images.reshape(n, -1))
        assert torch.equal(block.sort(1).values, digits_train.images.reshape(n, -1).sort(1).values)
    again, _, _ = load_permuted_digits()
    assert torch.equal(again.images, train.images)  # fixed content
    stream = make_stream(resolve(load_scenario("permuted_digits"), strategy="finetune").stream, seed=3)
    assert stream.n_experiences == 100 and stream.class_ranges[7] == (70, 80)
    assert sorted(set(stream.test_stream[7].dataset.targets)) == list(range(70, 80))
