"""Datasets: every dataset is loaded once into uint8 tensors (N, C, H, W) on the CPU (`load_splits`),
with a seeded, stratified validation split; `tfkd_search.batches.Batches` then moves a split to the
training device in one piece and augments it there.

Datasets:

* ``cifar10`` / ``cifar100`` -- torchvision's pickled python version (``cifar-10-batches-py/``,
  ``cifar-100-python/`` under ``--data-dir``); ``--download`` fetches it.
* ``tiny-imagenet`` -- the CS231n ``tiny-imagenet-200/`` folder (no download; see `load_splits`). The
  official ``val/`` split is our *test* split; validation is carved from ``train/``. Decoded JPEGs are
  cached as ``.npz`` files inside the dataset folder.
* ``digits`` -- scikit-learn's bundled 8x8 digits (no download, no ``--data-dir``).
* ``synthetic`` -- a small deterministic, learnable, generated dataset for tests and smoke runs.
* ``imagefolder`` / ``npz`` -- your own images (`tfkd_search.userdata`, docs/datasets.md): decoded once
  per machine into a memory-mapped cache; class count, image size and normalisation come from the data.

`describe_dataset` gives the facts of any of them (classes, channels, size, split sizes, digest,
resident bytes) without loading it: what the plan, the config checks and the model check use.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import userdata
from .errors import ConfigError, DataError
from .registry import did_you_mean
from .userdata import USER_DATASETS, DatasetFacts

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetFacts",
    "DatasetInfo",
    "dataset_info",
    "describe_dataset",
    "load_splits",
    "visible_gpu",
]


# --------------------------------------------------------------------------------------------------
# Static dataset descriptions (no I/O)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """What the models and the batch pipeline need to know about a dataset, without loading it."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int  # the side of the square built-ins; the height for imagefolder/npz
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # default random-crop zero padding for training batches
    flip: bool  # default random horizontal flip for training batches


# The official Tf-KD code normalises CIFAR-10 with the CIFAR-100 statistics; we do the same so that
# numbers are comparable with the paper's recipe.
_CIFAR100_MEAN = (0.50708, 0.48655, 0.44092)
_CIFAR100_STD = (0.26733, 0.25644, 0.27615)

DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, _CIFAR100_MEAN, _CIFAR100_STD, 4, True),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, _CIFAR100_MEAN, _CIFAR100_STD, 4, True),
    "tiny-imagenet": DatasetInfo(
        "tiny-imagenet", 200, 3, 64, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), 8, True
    ),
    # Measured on all 1797 images after the 0..16 -> 0..255 uint8 conversion done in `_load_digits`.
    # No flip: mirrored digits are different symbols (or none).
    "digits": DatasetInfo("digits", 10, 1, 8, (0.3053,), (0.3759,), 1, False),
    # Measured on the default 1024 training images of `_make_synthetic`.
    "synthetic": DatasetInfo(
        "synthetic", 10, 3, 16, (0.4966, 0.5068, 0.5050), (0.2337, 0.2382, 0.2368), 2, True
    ),
}


# Official split sizes (train, test) of the built-in datasets, for plans made without loading them.
_NOMINAL_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
                  "tiny-imagenet": (100_000, 10_000), "digits": (1_438, 359)}


def describe_dataset(data_cfg: Any, *, with_test: bool = False) -> DatasetFacts:
    """The facts of the dataset a `DataConfig` names, without decoding it.

    imagefolder/npz: read from the file listing, the image headers and the labels (remembered per
    listing digest in the cache folder), with every check of docs/datasets.md (DataError naming the
    folder, file or key). Built-in datasets: their static description and official sizes.
    """
    d = data_cfg
    if d.dataset in USER_DATASETS:
        return userdata.describe(d.dataset, d.data_dir, val_fraction=d.val_fraction,
                                 with_test=with_test, image_size=d.image_size,
                                 num_classes=d.num_classes, cache_dir=d.cache_dir)
    info = dataset_info(d.dataset)
    n, n_test = _NOMINAL_SIZES.get(d.dataset, (d.synthetic_size, max(1, d.synthetic_size // 4)))
    n_val = userdata.carved(n, d.val_fraction)
    return DatasetFacts(info.name, None, info.num_classes, info.in_channels, info.image_size,
                        info.image_size, n - n_val, n_val, n_test if with_test else 0, (), None,
                        "carved" if n_val else "none", nominal=d.dataset != "synthetic")


def visible_gpu(*, here: bool = False) -> tuple[str, int] | None:
    """(name, free bytes) of the first visible CUDA device, else None (what the plan compares the
    resident dataset with). Asking CUDA for free memory makes a CUDA context, about half a GB of the card
    held for the life of the process: fine for `train`, which trains here (`here=True`), not for the
    search's driver, whose trials run in other processes. So by default nvidia-smi is asked, or, where it
    is missing, a short-lived Python process whose context ends with it."""
    if not torch.cuda.is_available():
        return None
    if here:
        free, _ = torch.cuda.mem_get_info()
        return torch.cuda.get_device_name(), int(free)
    device = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip() or "0"
    try:
        got = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.free", "--format=csv,noheader,nounits",
                              "-i", device], capture_output=True, text=True, timeout=30)
        parsed = parse_nvidia_smi(got.stdout) if got.returncode == 0 else None
        if parsed is not None:
            return parsed
    except (OSError, subprocess.TimeoutExpired):
        pass
    ask = ("import torch; free, _ = torch.cuda.mem_get_info(); "
           "print(torch.cuda.get_device_name(), free, sep='\\n')")
    try:
        got = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, timeout=120)
        name, free = got.stdout.strip().rsplit("\n", 1)
        return name, int(free)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def parse_nvidia_smi(text: str) -> tuple[str, int] | None:
    """(name, free bytes) from `nvidia-smi --query-gpu=name,memory.free --format=csv,noheader,nounits`
    (free memory in MiB), or None where the text is not that."""
    lines = text.strip().splitlines()
    name, _, free = lines[0].rpartition(",") if lines else ("", "", "")
    try:
        mib = float(free)
    except ValueError:  # "[N/A]", an error text
        return None
    return (name.strip(), int(mib * 2 ** 20)) if name.strip() and mib >= 0 else None


def dataset_info(name: str) -> DatasetInfo:
    """Static info of a dataset; ConfigError (with the closest name) for unknown names."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown dataset {name!r}.{did_you_mean(str(name), DATASETS)} "
            f"Available: {', '.join(sorted(DATASETS))}"
        ) from None


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


@dataclass
class DataSplits:
    """uint8 (N, C, H, W) images and int64 (N,) labels on the CPU; val/test are None when not made."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None


def load_splits(
    name: str,
    data_dir: str | os.PathLike | None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    with_test: bool = False,
    download: bool = False,
    synthetic_size: int = 1024,
    image_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> DataSplits:
    """Load dataset `name` and carve a validation split off its training set.

    The validation split is stratified by class (each class gives up the same fraction, rounded so the
    total is ``round(val_fraction * N)``) and drawn with a ``torch.Generator`` seeded by `split_seed`, so
    the same seed always gives the same split. ``val_fraction=0`` gives ``val_x = val_y = None``. The
    test split is loaded only with ``with_test=True``.

    `data_dir` is the folder that holds ``cifar-10-batches-py/``, ``cifar-100-python/`` or
    ``tiny-imagenet-200/`` (pointing at one of those folders itself works too); it is ignored for
    ``digits`` and ``synthetic``. ``download=True`` fetches CIFAR when missing; Tiny-ImageNet has no
    download (DataError explains where to get it when it is missing).

    ``imagefolder`` / ``npz``: `data_dir` is the folder / the .npz file; `image_size`, `num_classes`
    and `cache_dir` are the `data.*` keys of the same names (see `tfkd_search.userdata`). A given val
    split is used as it is (`val_fraction` carves one only when there is none).
    """
    if name in USER_DATASETS:
        return _load_user(name, data_dir, val_fraction=val_fraction, split_seed=split_seed,
                          with_test=with_test, image_size=image_size, num_classes=num_classes,
                          cache_dir=cache_dir)
    info = dataset_info(name)  # the values themselves were validated once, by the run config

    test_x = test_y = None
    if name in ("cifar10", "cifar100"):
        train_x, train_y, test = _load_cifar(info, data_dir, with_test=with_test, download=download)
    elif name == "tiny-imagenet":
        train_x, train_y, test = _load_tiny_imagenet(data_dir, with_test=with_test, download=download)
    elif name == "digits":
        train_x, train_y, test = _load_digits()
    elif name == "synthetic":
        train_x, train_y, test = _make_synthetic(synthetic_size)
    else:  # pragma: no cover - DATASETS and this dispatch are kept in step
        raise ConfigError(f"dataset {name!r} has no loader")
    if with_test and test is not None:
        test_x, test_y = test

    val_x = val_y = None
    if val_fraction > 0:
        train_x, train_y, val_x, val_y = _carve(train_x, train_y, val_fraction, split_seed)

    return DataSplits(info, train_x, train_y, val_x, val_y, test_x, test_y)


def _carve(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int):
    """(train_x, train_y, val_x, val_y): the seeded, stratified validation split carved from x, y."""
    train_idx, val_idx = _stratified_split(y, float(fraction), seed)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def _load_user(name: str, data_dir, *, val_fraction: float, split_seed: int, with_test: bool,
               image_size, num_classes: int | None, cache_dir) -> DataSplits:
    """imagefolder/npz splits as tensors over the memory-mapped cache (a carved validation split is
    cached too: no split is copied into a trial's RAM)."""
    def carve(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep, held = _stratified_split(torch.from_numpy(y), float(val_fraction), split_seed)
        return keep.numpy(), held.numpy()

    loaded = userdata.load(name, data_dir, with_test=with_test, image_size=image_size,
                           num_classes=num_classes, cache_dir=cache_dir,
                           carve=(f"{val_fraction!r}/{split_seed}", carve) if val_fraction > 0 else None)
    t = {k: (torch.from_numpy(x), torch.from_numpy(y)) for k, (x, y) in loaded.splits.items()}
    train_x, train_y = t["train"]
    _, c, h, w = train_x.shape
    info = DatasetInfo(name, len(loaded.class_names), int(c), int(h), loaded.mean, loaded.std,
                       user_crop_padding(int(h), int(w)), True)
    val_x, val_y = t.get("val", (None, None))
    test_x, test_y = t.get("test", (None, None)) if with_test else (None, None)
    return DataSplits(info, train_x, train_y, val_x, val_y, test_x, test_y)


def user_crop_padding(height: int, width: int) -> int:
    """Default random-crop padding of imagefolder/npz images: 1/8 of the shorter side (CIFAR's 4 at
    32 px, Tiny-ImageNet's 8 at 64 px), at least 1."""
    return max(1, round(min(height, width) / 8))


def _stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, held_out) sorted index tensors; held_out has round(fraction * N) samples (at least 1),
    spread over the classes in proportion to their sizes, chosen at random with `seed`."""
    n = int(y.numel())
    n_out = max(1, int(round(fraction * n)))
    if n_out >= n:
        raise ConfigError(f"val_fraction {fraction} leaves no training samples out of {n}")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    # Group the random permutation by class (stable sort keeps the random order inside each class).
    grouped = perm[torch.sort(y[perm], stable=True).indices]
    _, counts = torch.unique(y, sorted=True, return_counts=True)
    # Largest-remainder apportionment of n_out over the classes.
    quota = counts.double() * (n_out / n)
    take = quota.floor().long()
    short = n_out - int(take.sum())
    if short > 0:
        order = torch.sort(quota - take.double(), descending=True, stable=True).indices
        take[order[:short]] += 1
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(n) - torch.repeat_interleave(starts, counts)  # rank inside its class
    held = position < torch.repeat_interleave(take, counts)
    held_out = torch.sort(grouped[held]).values
    keep = torch.sort(grouped[~held]).values
    return keep, held_out


# ---- CIFAR ---------------------------------------------------------------------------------------

_CIFAR_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def _cifar_class(name: str) -> type:
    """torchvision's CIFAR class with an existence-only integrity check.

    torchvision checks the md5 of every extracted file before loading, which would reject the small
    fake datasets the tests write in the real on-disk format (and costs a full read of the files on
    every load). The override only checks that every expected file exists. Downloads stay verified:
    ``download_and_extract_archive`` still checks the md5 of the downloaded archive.
    """
    from torchvision import datasets

    base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100

    class _ExistenceChecked(base):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, f)) for f in _cifar_files(type(self)))

        def _load_meta(self) -> None:  # same as torchvision's, minus the md5 check
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            with open(path, "rb") as infile:
                self.classes = pickle.load(infile, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    _ExistenceChecked.__name__ = base.__name__
    return _ExistenceChecked


def _cifar_files(cls: type) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _cifar_folder(info: DatasetInfo, data_dir,
                  download: bool) -> tuple[type, Path, Path, list[str], list[str]]:
    """(torchvision class, root, its folder, the files expected there, those missing); DataError when
    there is no --data-dir, or files are missing and may not be downloaded."""
    cls = _cifar_class(info.name)
    pretty = _CIFAR_NAMES[info.name]
    if data_dir is None:
        raise DataError(
            f"{pretty} needs --data-dir: the folder that holds {cls.base_folder}/ "
            f"(add --download to fetch it there)"
        )
    root = Path(data_dir).expanduser()
    # Accept --data-dir pointing at cifar-100-python/ itself.
    if root.name == cls.base_folder and not (root / cls.base_folder).is_dir():
        root = root.parent
    folder = root / cls.base_folder
    expected = _cifar_files(cls)
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing and not download:
        what = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise DataError(
            f"{pretty} folder {str(folder)!r} {what}; expected the files "
            f"{', '.join(cls.base_folder + '/' + f for f in expected)}. Pass --download to fetch it, "
            f"or point --data-dir at the folder that holds {cls.base_folder}/."
        )
    return cls, root, folder, expected, missing


def _load_cifar(info: DatasetInfo, data_dir, *, with_test: bool, download: bool):
    cls, root, folder, expected, missing = _cifar_folder(info, data_dir, download)
    pretty = _CIFAR_NAMES[info.name]
    if missing:
        from filelock import FileLock

        try:
            root.mkdir(parents=True, exist_ok=True)
            # Trials on one node (or every node, on shared storage) start together: one downloads,
            # the others wait for the lock and then find the files.
            with FileLock(str(root / ".tfkd-download.lock")):
                if any(not (folder / f).is_file() for f in expected):
                    cls(root=str(root), train=True, download=True)
        except Exception as exc:  # network, disk, bad archive: all the user's to fix
            raise DataError(
                f"downloading {pretty} into {str(root)!r} failed: {exc}. Check the network, or fetch "
                f"{cls.url} yourself and unpack it there (it holds {cls.base_folder}/), then rerun "
                f"without --download."
            ) from exc

    def read(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            ds = cls(root=str(root), train=train, download=False)
            x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            y = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
        except Exception as exc:
            raise DataError(
                f"could not read {pretty} from {str(folder)!r}: {exc!r}. The files may be truncated or "
                f"corrupt; delete the folder and pass --download to fetch it again."
            ) from exc
        _check_labels(y, info, str(folder))
        return x, y

    train_x, train_y = read(True)
    test = read(False) if with_test else None
    return train_x, train_y, test


def _check_labels(y: torch.Tensor, info: DatasetInfo, where: str) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        raise DataError(
            f"labels in {where!r} range over [{int(y.min())}, {int(y.max())}], "
            f"but {info.name} has {info.num_classes} classes"
        )


# ---- Tiny-ImageNet -------------------------------------------------------------------------------

_TINY_FOLDER = "tiny-imagenet-200"
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_CACHE_VERSION = 1
_TINY_LAYOUT = (
    "wnids.txt, train/<wnid>/images/*.JPEG and val/images/*.JPEG with val/val_annotations.txt"
)


def _tiny_root(data_dir) -> Path:
    if data_dir is None:
        raise DataError(
            f"tiny-imagenet needs --data-dir: the folder that holds {_TINY_FOLDER}/ "
            f"(download {_TINY_URL} and unzip it there)"
        )
    base = Path(data_dir).expanduser()
    if (base / _TINY_FOLDER).is_dir():
        return base / _TINY_FOLDER
    if (base / "wnids.txt").is_file() or base.name == _TINY_FOLDER:
        return base
    return base / _TINY_FOLDER


def _tiny_missing(root: Path, msg: str, download: bool) -> DataError:
    how = (
        "--download cannot fetch Tiny-ImageNet (there is no official mirror to verify against)"
        if download
        else "--download does not support Tiny-ImageNet"
    )
    return DataError(
        f"Tiny-ImageNet folder {str(root)!r}: {msg}. Expected {_TINY_LAYOUT}. {how}: fetch "
        f"tiny-imagenet-200.zip from the CS231n site ({_TINY_URL}) and unzip it into --data-dir."
    )


def _load_tiny_imagenet(data_dir, *, with_test: bool, download: bool):
    """Classes are the wnids of ``wnids.txt`` in *sorted* order (the order torchvision's ImageFolder
    would give ``train/``), so label i is ``sorted(wnids)[i]``."""
    root = _tiny_root(data_dir)
    wnids, train_files, train_labels = _tiny_train_listing(root, download)
    train_x, train_y = _tiny_split(root, "train", wnids, train_files, train_labels)

    test = None
    if with_test:
        test_files, test_labels = _tiny_val_listing(root, {w: i for i, w in enumerate(wnids)}, download)
        test = _tiny_split(root, "val", wnids, test_files, test_labels)
    return train_x, train_y, test


def _tiny_train_listing(root: Path, download: bool) -> tuple[list[str], list[str], list[int]]:
    """(sorted wnids, training image paths below `root`, their labels), from the listing alone."""
    info = DATASETS["tiny-imagenet"]
    if not root.is_dir():
        raise _tiny_missing(root, "does not exist", download)
    if not (root / "wnids.txt").is_file():
        raise _tiny_missing(root, "wnids.txt is missing", download)
    wnids = sorted({w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()})
    if not 1 <= len(wnids) <= info.num_classes:
        raise _tiny_missing(root, f"wnids.txt lists {len(wnids)} classes", download)
    index = {w: i for i, w in enumerate(wnids)}

    # Training images: train/<wnid>/images/*.JPEG
    train_files: list[str] = []
    train_labels: list[int] = []
    for w in wnids:
        d = root / "train" / w / "images"
        if not d.is_dir():
            raise _tiny_missing(root, f"train/{w}/images/ is missing", download)
        names = sorted(n for n in os.listdir(d) if n.lower().endswith((".jpeg", ".jpg", ".png")))
        if not names:
            raise _tiny_missing(root, f"train/{w}/images/ holds no images", download)
        train_files += [f"train/{w}/images/{n}" for n in names]
        train_labels += [index[w]] * len(names)
    return wnids, train_files, train_labels


def check_files(data_cfg: Any, *, with_test: bool = False) -> None:
    """The loader's own checks that a built-in dataset's files are where `data_cfg` says, from the
    listing alone (nothing read or decoded): DataError as loading would raise it. What a node runs
    before a cluster search (imagefolder/npz: `describe_dataset` checks those; digits and synthetic
    need no files; files --download may still fetch pass)."""
    d = data_cfg
    if d.dataset in ("cifar10", "cifar100"):
        _cifar_folder(DATASETS[d.dataset], d.data_dir, d.download)
    elif d.dataset == "tiny-imagenet":
        root = _tiny_root(d.data_dir)
        wnids, _, _ = _tiny_train_listing(root, d.download)
        if with_test:
            _tiny_val_listing(root, {w: i for i, w in enumerate(wnids)}, d.download)


def _tiny_val_listing(root: Path, index: dict[str, int], download: bool) -> tuple[list[str], list[int]]:
    """The official val split: flat val/images/ with val/val_annotations.txt (filename, wnid, bbox...);
    the common re-sorted layout val/<wnid>/images/ is accepted too."""
    ann = root / "val" / "val_annotations.txt"
    files: list[str] = []
    labels: list[int] = []
    if ann.is_file():
        rows = []
        for lineno, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                parts = line.split()
            if len(parts) < 2 or parts[1] not in index:
                msg = f"val/val_annotations.txt line {lineno} ({line.strip()!r}) has no known wnid"
                raise _tiny_missing(root, msg, download)
            rows.append((parts[0], index[parts[1]]))
        rows.sort()
        for fname, label in rows:
            if not (root / "val" / "images" / fname).is_file():
                msg = f"val/images/{fname} (listed in val_annotations.txt) is missing"
                raise _tiny_missing(root, msg, download)
            files.append(f"val/images/{fname}")
            labels.append(label)
    else:
        for w, i in index.items():
            d = root / "val" / w / "images"
            if d.is_dir():
                names = sorted(n for n in os.listdir(d) if n.lower().endswith((".jpeg", ".jpg", ".png")))
                files += [f"val/{w}/images/{n}" for n in names]
                labels += [i] * len(names)
    if not files:
        raise _tiny_missing(root, "val/val_annotations.txt is missing (or lists no images)", download)
    return files, labels


def _decode_image(path: str, size: int) -> np.ndarray:
    """One image file -> (3, size, size) uint8 (RGB; resized only if it is not size x size)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _tiny_split(root: Path, split: str, wnids: list[str], files: list[str], labels: list[int]):
    """Decode a Tiny-ImageNet split, going through the `.npz` cache in the dataset folder.

    The cache is keyed by a fingerprint of the class list and the relative file names, so adding,
    removing or relabelling images rebuilds it. It is written atomically (temporary file, then
    ``os.replace``); when the folder is not writable the cache is skipped."""
    size = DATASETS["tiny-imagenet"].image_size
    h = hashlib.sha1()
    h.update(f"v{_TINY_CACHE_VERSION}\n{size}\n".encode())
    h.update("\n".join(wnids).encode())
    for f, lab in zip(files, labels):
        h.update(f"\n{f}\t{lab}".encode())
    fingerprint = h.hexdigest()
    cache = root / f"tfkd-cache-{split}-v{_TINY_CACHE_VERSION}.npz"

    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    x, y = z["x"], z["y"]
                    if x.shape == (len(files), 3, size, size) and x.dtype == np.uint8:
                        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        except Exception as exc:  # corrupt or foreign file: rebuild it
            log.warning("ignoring unreadable cache %s (%s)", cache, exc)

    x = np.empty((len(files), 3, size, size), dtype=np.uint8)
    paths = [str(root / f) for f in files]

    def decode(i: int) -> None:
        try:
            x[i] = _decode_image(paths[i], size)
        except Exception as exc:
            raise DataError(f"could not decode Tiny-ImageNet image {paths[i]!r}: {exc}") from exc

    workers = max(1, min(8, os.cpu_count() or 1))
    if workers == 1 or len(files) < 64:
        for i in range(len(files)):
            decode(i)
    else:  # PIL releases the GIL while decoding JPEGs
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(decode, range(len(files)), chunksize=256))
    y = np.asarray(labels, dtype=np.int64)

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=cache.name + ".", suffix=".tmp", dir=root)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, x=x, y=y, fingerprint=np.array(fingerprint))
        os.replace(tmp, cache)
        tmp = None
    except OSError as exc:
        log.info("not caching decoded Tiny-ImageNet %s split in %s (%s)", split, root, exc)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return torch.from_numpy(x), torch.from_numpy(y)


# ---- digits and synthetic ------------------------------------------------------------------------

_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 20_170_101  # fixed: the test split never depends on split_seed


def _load_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1).contiguous()
    y = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = _stratified_split(y, _DIGITS_TEST_FRACTION, _DIGITS_TEST_SEED)
    return x[train_idx], y[train_idx], (x[test_idx], y[test_idx])


def _make_synthetic(n_train: int):
    """10 classes of 3x16x16 images: a class colour (10 hues on a circle) plus a smooth class pattern
    plus per-pixel noise. Robust to small shifts and flips, so a small CNN learns it in an epoch."""
    info = DATASETS["synthetic"]
    k, c, s = info.num_classes, info.in_channels, info.image_size
    gen = torch.Generator().manual_seed(1234)
    angle = torch.arange(k, dtype=torch.float64)[:, None] * (2 * math.pi / k)
    phase = torch.arange(c, dtype=torch.float64)[None, :] * (2 * math.pi / c)
    colour = 128.0 + 70.0 * torch.cos(angle + phase)  # (k, c)
    low = torch.rand(k, c, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    pattern = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False) * 35.0
    protos = colour[:, :, None, None] + pattern  # (k, c, s, s)

    def sample(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randperm(n, generator=g) % k
        noise = torch.randn(n, c, s, s, generator=g, dtype=torch.float64) * 30.0
        x = (protos[y] + noise).round().clamp(0, 255).to(torch.uint8)
        return x, y.long()

    train_x, train_y = sample(n_train, 1)
    return train_x, train_y, sample(max(1, n_train // 4), 2)
