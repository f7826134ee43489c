"""Small fake datasets in the real on-disk formats (CIFAR-10/100 pickles, Tiny ImageNet folders), shared
by the tests (a helper module, not a test module)."""

from __future__ import annotations

import pickle

import numpy as np


def _pickle(path, obj) -> None:
    # The real files are Python 2 pickles; torchvision reads them with encoding="latin1", which turns
    # their (Python 2 str) keys into str. Python 3 str keys load the same way.
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _cifar_rows(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 rows, channel-major like the real files; pixel (R, 0, 0) holds the sample id and
    pixel (G, 0, 1) holds 7 so that the layout (CHW) can be checked."""
    rows = rng.integers(0, 256, size=(len(ids), 3072), dtype=np.uint8)
    rows[:, 0] = ids
    rows[:, 1024 + 1] = 7
    return rows


def make_fake_cifar10(root, per_batch: int = 20, n_test: int = 30) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in range(5):
        ids = np.arange(b * per_batch, (b + 1) * per_batch)
        _pickle(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": [int(i % 10) for i in ids],
                "data": _cifar_rows(ids, rng),
                "filenames": [f"img_{i}.png" for i in ids],
            },
        )
    ids = np.arange(n_test)
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [int((i * 3) % 10) for i in ids],
            "data": _cifar_rows(ids, rng),
            "filenames": [f"test_{i}.png" for i in ids],
        },
    )
    _pickle(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": [f"c{i}" for i in range(10)], "num_vis": 3072},
    )


def make_fake_cifar100(root, n_train: int = 200, n_test: int = 50) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        ids = np.arange(n)
        _pickle(
            folder / name,
            {
                "filenames": [f"{name}_{i}.png" for i in ids],
                "batch_label": f"{name} batch",
                "fine_labels": [int(i % 100) for i in ids],
                "coarse_labels": [int(i % 20) for i in ids],
                "data": _cifar_rows(ids, rng),
            },
        )
    _pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )


TINY_WNIDS = ["n03000000", "n01000000", "n02000000"]  # wnids.txt order; classes are the sorted wnids
TINY_COLOURS = {"n01000000": (200, 30, 30), "n02000000": (30, 200, 30), "n03000000": (30, 30, 200)}
TINY_VAL = [  # (file, wnid)
    ("val_0.JPEG", "n02000000"),
    ("val_1.JPEG", "n03000000"),
    ("val_2.JPEG", "n01000000"),
    ("val_3.JPEG", "n01000000"),
    ("val_4.JPEG", "n03000000"),
    ("val_5.JPEG", "n02000000"),
]


def make_fake_tiny(root):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    for w in TINY_WNIDS:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(4):
            Image.new("RGB", (64, 64), TINY_COLOURS[w]).save(d / f"{w}_{i}.JPEG", quality=95)
    # One grayscale validation image, as in the real data: must come out as 3-channel RGB.
    lines = []
    for i, (fname, w) in enumerate(TINY_VAL):
        if i == 0:
            Image.new("L", (64, 64), 128).save(base / "val" / "images" / fname, quality=95)
        else:
            Image.new("RGB", (64, 64), TINY_COLOURS[w]).save(base / "val" / "images" / fname, quality=95)
        lines.append(f"{fname}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base

