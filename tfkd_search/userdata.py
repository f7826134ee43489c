"""Your own images: `data.dataset: imagefolder` (a folder of image files) and `data.dataset: npz` (uint8
arrays in one .npz file), checked cheaply before anything starts (`describe`) and decoded once per
machine into a memory-mappable cache (`load`), from which every trial, packed host and later run reads.

Importing this module costs numpy only (the search plan and config validation use it); Pillow and
torchvision's folder scanning (`make_dataset`, `IMG_EXTENSIONS`) are imported when data is read.

* **imagefolder**: ``data_dir/train/<class>/<image>`` with optional ``val/<class>/...`` and
  ``test/<class>/...``. The classes are the sorted folder names of ``train/`` (one class map for every
  split, so a class missing from val/ cannot shift the labels); hidden folders and files (a leading
  ".") and files that are not images (torchvision's ``IMG_EXTENSIONS``) are skipped.
* **npz**: ``data_dir`` is the .npz file: ``x_train`` uint8 (N, H, W, C) or (N, H, W), ``y_train``
  integers (N,), optional ``x_val``/``y_val`` and ``x_test``/``y_test``, optional ``class_names``.

Without a val split, the validation split is carved from train (`data.val_fraction`, seeded and
stratified, as for the built-in datasets). Normalisation statistics are the mean/std per channel of
the whole training split (before any carving, so every split_seed normalises alike).

The cache (default ``$XDG_CACHE_HOME/tfkd-search`` or ``~/.cache/tfkd-search``, or `data.cache_dir`)
holds one folder per split: ``x.npy`` (uint8 N, C, H, W), ``y.npy`` (int64) and ``meta.json``. Its
name is a hash of the split's file list with sizes and modification times (imagefolder) or of the
file's bytes (npz), of the image size, channels and class map, so any change gives a new entry. An
entry is written into a temporary folder and renamed into place under a file lock: concurrent trials
wait for the one that decodes, and a half-written entry is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

USER_DATASETS = ("imagefolder", "npz")
CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "class_names")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_WORKERS = 8  # at most; Pillow releases the GIL while it reads and decodes


@dataclass(frozen=True)
class DatasetFacts:
    """What a run needs to know about its dataset before loading it (`data.describe_dataset`).

    Counts are those a run holds: `n_train` after carving the validation split, `n_val` the val
    split's size (given or carved), `n_test` 0 when there is no test split or it is not asked for.
    For the built-in datasets the counts are the official sizes (`nominal`), not read from disk, and
    `digest` is None; for imagefolder/npz `digest` identifies the data (file list + sizes + mtimes,
    or the npz bytes' hash). `resident_bytes` is what one trial keeps in memory (uint8 images and
    int64 labels of its splits).
    """

    dataset: str
    source: str | None
    num_classes: int
    channels: int
    height: int
    width: int
    n_train: int
    n_val: int
    n_test: int
    class_names: tuple[str, ...]
    digest: str | None
    val_source: str  # "given" (val/ or x_val), "carved" (val_fraction) or "none"
    nominal: bool = False

    @property
    def resident_bytes(self) -> int:
        n = self.n_train + self.n_val + self.n_test
        return n * (self.channels * self.height * self.width + 8)

    def summary(self) -> str:
        """One line for plans and logs."""
        val = {"given": "val", "carved": "val (carved)", "none": "val"}[self.val_source]
        where = f" {self.source}" if self.source else ""
        counts = (f"{self.n_train:,} train / {self.n_val:,} {val} / {self.n_test:,} test"
                  + (" (official sizes)" if self.nominal else ""))
        digest = f"; digest {self.digest[:12]}" if self.digest else ""
        return (f"{self.dataset}{where}: {self.num_classes} classes, {self.channels}x{self.height}x"
                f"{self.width}, {counts}{digest}")


def memory_plan(resident_bytes: int, copies: int, gpu: tuple[str, int] | None) -> tuple[str, bool]:
    """(a plan line, whether it fits) for `copies` resident copies of a dataset on one GPU, against
    `gpu` = (name, free bytes) when a GPU is visible here; without one the line is an estimate only.
    Only the dataset is counted: the models, their optimizer state and activations need room too."""
    need = resident_bytes * copies
    line = f"{human_bytes(resident_bytes)} per copy x {copies} = {human_bytes(need)} per GPU"
    if gpu is None:
        return f"{line} (an estimate: no GPU visible here to compare it with)", True
    name, free = gpu
    fits = need <= free
    return f"{line}; {'fits' if fits else 'does not fit'} {name} ({human_bytes(free)} free)", fits


def human_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def carved(n: int, fraction: float) -> int:
    """Size of the validation split carved from n training images (as data._stratified_split)."""
    return 0 if fraction <= 0 else max(1, int(round(fraction * n)))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tfkd-search"


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def image_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """`data.image_size` as (height, width): an int is a square side."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


# --------------------------------------------------------------------------------------------------
# What a split is made of: one source description per split, shared by describe and load
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    """One split as found on disk: its images' sources, labels and a digest of what they are."""

    labels: np.ndarray  # int64 (N,)
    digest: str
    files: tuple[str, ...] = ()  # imagefolder: absolute paths
    npz_key: str | None = None  # npz: the images' key


@dataclass(frozen=True)
class _Source:
    """A dataset as found: its class names, splits, image sizes per split and channel count."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, _Split]
    sizes: dict[str, dict[tuple[int, int], tuple[int, str]]]  # split -> (h, w) -> (count, example)
    channels: int

    def size_problem(self) -> str | None:
        seen: dict[tuple[int, int], tuple[int, str]] = {}
        for per_split in self.sizes.values():
            for hw, (count, example) in per_split.items():
                c, e = seen.get(hw, (0, example))
                seen[hw] = (c + count, e)
        if len(seen) <= 1:
            return None
        shown = sorted(seen.items(), key=lambda kv: -kv[1][0])[:4]
        listing = "; ".join(f"{h}x{w} (height x width): {c:,} images, e.g. {e}"
                            for (h, w), (c, e) in shown)
        return (f"{self.root}: the images have {len(seen)} different sizes ({listing}); set "
                f"data.image_size (e.g. {shown[0][0][0]} or [height, width]) to resize them once "
                f"when they are decoded")

    def own_size(self) -> tuple[int, int]:
        (hw,) = {hw for per_split in self.sizes.values() for hw in per_split}
        return hw


def _source(kind: str, path: str | os.PathLike[str] | None, cache_dir: Any,
            splits: Sequence[str]) -> _Source:
    if path is None:
        what = "a folder with train/<class>/ image folders" if kind == "imagefolder" else "an .npz file"
        raise DataError(f"data.dataset {kind} needs data.data_dir (or --data-dir): {what}")
    root = Path(path).expanduser()
    if kind == "imagefolder":
        return _folder_source(root, cache_dir, splits)
    return _npz_source(root, splits)


# ---- imagefolder ---------------------------------------------------------------------------------

_FOLDER_LAYOUT = "train/<class>/<image> (and optionally val/<class>/..., test/<class>/...)"


def _visible_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _folder_source(root: Path, cache_dir: Any, splits: Sequence[str]) -> _Source:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"image folder {str(root)!r} {what}; expected {_FOLDER_LAYOUT}. Point "
                        f"data.data_dir (or --data-dir) at the folder that holds train/")
    if not (root / "train").is_dir():
        raise DataError(f"image folder {str(root)!r} has no train/ folder; expected {_FOLDER_LAYOUT}")
    classes = _visible_dirs(root / "train")
    if len(classes) < 2:
        raise DataError(f"{root / 'train'}: found {len(classes)} class folder(s) "
                        f"({', '.join(classes) or 'none'}); a classifier needs at least 2: put each "
                        f"class's images in train/<class>/")
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, _Split] = {}
    for split in splits:
        folder = root / split
        if split != "train" and not folder.is_dir():
            continue
        foreign = [c for c in _visible_dirs(folder) if c not in index]
        if foreign:
            raise DataError(f"{folder}: class folder(s) {', '.join(foreign)} are not in train/ "
                            f"(train/ has {', '.join(classes)}); every class needs training images: "
                            f"add them to train/ or remove the folder(s) from {split}/")
        prefix = len(str(folder)) + 1

        def visible_image(p: str, prefix: int = prefix) -> bool:
            rel = p[prefix:]
            return (rel.lower().endswith(IMG_EXTENSIONS)
                    and not any(part.startswith(".") for part in rel.split(os.sep)))

        pairs = make_dataset(str(folder), index, is_valid_file=visible_image, allow_empty=True)
        counts = np.bincount([lab for _, lab in pairs], minlength=len(classes))
        if split == "train" and (counts == 0).any():
            empty = [f"train/{classes[i]}/" for i in np.flatnonzero(counts == 0)]
            raise DataError(f"{root}: {', '.join(empty)} holds no images (files ending in "
                            f"{', '.join(IMG_EXTENSIONS)}; hidden files are skipped); add images or "
                            f"remove the folder")
        if not pairs:
            raise DataError(f"{folder}: holds no images; add images to {split}/<class>/ or remove "
                            f"{split}/")
        files = tuple(p for p, _ in pairs)
        labels = np.fromiter((lab for _, lab in pairs), dtype=np.int64, count=len(pairs))
        out[split] = _Split(labels, _listing_digest(files, labels, classes, prefix), files)
    sizes = {s: _header_summary(sp, root, cache_dir) for s, sp in out.items()}
    grey = all(_GREY_MARK in sz for sz in sizes.values())
    return _Source(root, tuple(classes), out,
                   {s: {hw: v for hw, v in sz.items() if hw != _GREY_MARK} for s, sz in sizes.items()},
                   1 if grey else 3)


_GREY_MARK = (-1, -1)  # a key in a header summary: every image of the split is greyscale


def _each(fn: Callable[[int], Any], n: int) -> list[Any]:
    """[fn(0), ..., fn(n-1)] on a few threads, in contiguous chunks (one task per chunk: a future
    per item would cost more than a small image's decoding)."""
    workers = max(1, min(_WORKERS, os.cpu_count() or 1))
    if workers == 1 or n < 64:
        return [fn(i) for i in range(n)]
    step = -(-n // (workers * 4))
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda s: [fn(i) for i in range(s, min(s + step, n))], range(0, n, step))
        return [r for part in parts for r in part]


def _listing_digest(files: Sequence[str], labels: np.ndarray, classes: Sequence[str], prefix: int
                    ) -> str:
    """sha256 of the class map and every file's relative path, label, size and mtime."""
    h = hashlib.sha256(f"v{CACHE_VERSION}\n{chr(0).join(classes)}\n".encode())
    for f, lab in zip(files, labels.tolist()):
        st = os.stat(f)
        h.update(f"{f[prefix:]}\t{lab}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _header_summary(split: _Split, root: Path, cache_dir: Any) -> dict[tuple[int, int], tuple[int, str]]:
    """{(height, width): (count, example file)} of a split's images, from their headers only, plus
    _GREY_MARK when all are greyscale. Remembered on disk by the split's digest (next to the cache)."""
    key = hashlib.sha256(f"{root}\n{split.digest}".encode()).hexdigest()
    memo = cache_root(cache_dir) / f"headers-{key[:32]}.json"
    try:
        rows = json.loads(memo.read_text())
        return {tuple(r[0]): (r[1], r[2]) for r in rows}  # type: ignore[misc]
    except (OSError, ValueError, TypeError, IndexError):
        pass
    from PIL import Image

    def header(path: str) -> tuple[int, int, str] | str:
        try:
            with Image.open(path) as im:
                return im.size[1], im.size[0], im.mode
        except Exception as exc:  # noqa: BLE001 - any reason makes the file unusable
            return f"{path} ({type(exc).__name__}: {str(exc)[:120]})"

    heads = _each(lambda i: header(split.files[i]), len(split.files))
    bad = [h for h in heads if isinstance(h, str)]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(f"{root}: {len(bad)} image(s) cannot be read: {'; '.join(bad[:5])}{more}; "
                        f"replace or remove them")
    out: dict[tuple[int, int], tuple[int, str]] = {}
    grey = True
    for path, (h, w, mode) in zip(split.files, heads):  # type: ignore[misc]
        count, example = out.get((h, w), (0, path))
        out[(h, w)] = (count + 1, example)
        grey = grey and mode in _GREY_MODES
    if grey:
        out[_GREY_MARK] = (0, "")
    _write_atomic(memo, json.dumps([[list(k), c, e] for k, (c, e) in out.items()]).encode())
    return out


# ---- npz -----------------------------------------------------------------------------------------

_NPZ_LAYOUT = ("x_train uint8 (N, H, W, C) or (N, H, W), y_train integers (N,), optionally x_val/y_val, "
               "x_test/y_test and class_names (strings)")


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of the arrays in an .npz, read from their headers (no data loaded)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(fh)
                out[name[:-4]] = (tuple(shape), dtype)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); write it "
                        f"with numpy.savez: {_NPZ_LAYOUT}") from None
    return out


def _file_digest(path: Path) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}\n".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _npz_source(path: Path, splits: Sequence[str]) -> _Source:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"npz file {str(path)!r} {what}; point data.data_dir (or --data-dir) at the "
                        f".npz file ({_NPZ_LAYOUT})")
    heads = _npz_headers(path)
    problems = []
    for key in ("x_train", "y_train"):
        if key not in heads:
            problems.append(f"key {key!r} is missing")
    for split in ("val", "test"):
        x, y = f"x_{split}", f"y_{split}"
        if (x in heads) != (y in heads):
            problems.append(f"{x} and {y} come together, but only {x if x in heads else y} is there")
    for key, (shape, dtype) in heads.items():
        if key.startswith("x_") and key in NPZ_KEYS:
            if dtype != np.uint8:
                problems.append(f"{key} is {dtype}; images must be uint8 (0..255): convert with "
                                f"(x * 255).round().astype(np.uint8) for floats in [0, 1]")
            elif len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
                problems.append(f"{key} has shape {shape}; expected (N, H, W, C) with C 1 or 3, or "
                                f"(N, H, W)")
        elif key.startswith("y_") and key in NPZ_KEYS:
            if not np.issubdtype(dtype, np.integer):
                problems.append(f"{key} is {dtype}; labels must be integers 0..C-1")
            elif len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
                problems.append(f"{key} has shape {shape}; expected (N,)")
        elif key == "class_names" and dtype.kind not in "US":
            problems.append(f"class_names is {dtype}; it must be an array of strings "
                            f"(np.array(['cat', 'dog']))")
    for split in SPLITS:
        x, y = heads.get(f"x_{split}"), heads.get(f"y_{split}")
        if x and y and x[0][:1] != y[0][:1]:
            problems.append(f"x_{split} holds {x[0][0]} images but y_{split} {y[0][0]} labels")
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems) + f". Expected {_NPZ_LAYOUT}; it holds "
                        f"{', '.join(f'{k} {d} {s}' for k, (s, d) in heads.items()) or 'no arrays'}")
    with np.load(path, allow_pickle=False) as z:
        names = tuple(str(n) for n in z["class_names"]) if "class_names" in heads else None
        labels = {s: np.asarray(z[f"y_{s}"]).reshape(-1).astype(np.int64)
                  for s in splits if f"y_{s}" in heads}
    ytr = labels["train"]
    if len(ytr) == 0:
        raise DataError(f"{path}: x_train holds no images")
    if ytr.min() < 0 or (names is not None and ytr.max() >= len(names)):
        bound = f"[0, {len(names)}) (class_names has {len(names)})" if names is not None else ">= 0"
        raise DataError(f"{path}: y_train labels range over [{ytr.min()}, {ytr.max()}] but must "
                        f"be in {bound}; fix the labels or class_names")
    n_classes = len(names) if names is not None else int(ytr.max()) + 1
    if n_classes < 2:
        raise DataError(f"{path}: y_train has {n_classes} class; a classifier needs at least 2")
    counts = np.bincount(ytr, minlength=n_classes)
    if (counts == 0).any():
        missing = ", ".join(str(i) for i in np.flatnonzero(counts == 0)[:10])
        raise DataError(f"{path}: class(es) {missing} have no training images (labels 0..{n_classes - 1} "
                        f"are classes); relabel to 0..C-1 without gaps, or add training images")
    for split, y in labels.items():
        if split != "train" and len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise DataError(f"{path}: y_{split} labels range over [{y.min()}, {y.max()}] but "
                            f"training has classes 0..{n_classes - 1}; every class needs training "
                            f"images")
    digest = _file_digest(path)
    out = {s: _Split(y, hashlib.sha256(f"{digest}\n{s}".encode()).hexdigest(), npz_key=f"x_{s}")
           for s, y in labels.items()}
    sizes = {s: {(heads[f"x_{s}"][0][1], heads[f"x_{s}"][0][2]): (len(y), f"{path}:x_{s}")}
             for s, y in labels.items()}
    grey = all(len(heads[f"x_{s}"][0]) == 3 or heads[f"x_{s}"][0][3] == 1 for s in labels)
    classes = names if names is not None else tuple(str(i) for i in range(n_classes))
    return _Source(path, classes, out, sizes, 1 if grey else 3)


# --------------------------------------------------------------------------------------------------
# describe and load
# --------------------------------------------------------------------------------------------------


def _check(src: _Source, image_size: Any, num_classes: int | None) -> tuple[int, int]:
    hw = image_hw(image_size)
    if hw is None:
        problem = src.size_problem()
        if problem:
            raise DataError(problem)
        hw = src.own_size()
    if num_classes is not None and num_classes != len(src.classes):
        raise DataError(f"data.num_classes is {num_classes} but {src.root} holds {len(src.classes)} "
                        f"classes ({', '.join(src.classes[:10])}{', ...' if len(src.classes) > 10 else ''}); "
                        f"fix the data or remove data.num_classes")
    return hw


def describe(kind: str, path: Any, *, val_fraction: float, with_test: bool,
             image_size: Any = None, num_classes: int | None = None, cache_dir: Any = None
             ) -> DatasetFacts:
    """The facts of an imagefolder/npz dataset: file listing, image headers and labels, no decoding.

    Raises DataError naming the folder, file or key for every way the data can be unusable."""
    src = _source(kind, path, cache_dir, SPLITS if with_test else ("train", "val"))
    h, w = _check(src, image_size, num_classes)
    n_train = len(src.splits["train"].labels)
    if "val" in src.splits:
        n_val, how = len(src.splits["val"].labels), "given"
    else:
        n_val = carved(n_train, val_fraction)
        how = "carved" if n_val else "none"
        n_train -= n_val
    n_test = len(src.splits["test"].labels) if "test" in src.splits else 0
    digest = hashlib.sha256("\n".join(f"{s}:{sp.digest}" for s, sp in sorted(src.splits.items()))
                            .encode()).hexdigest()
    return DatasetFacts(kind, str(src.root), len(src.classes), src.channels, h, w, n_train, n_val,
                        n_test, src.classes, digest, how)


@dataclass
class Loaded:
    """The decoded splits (uint8 N, C, H, W and int64 labels, memory-mapped from the cache), the
    training split's per-channel mean/std (in [0, 1]) and the class names."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


Carve = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # labels -> (keep, held-out) indices


def load(kind: str, path: Any, *, with_test: bool, image_size: Any = None,
         num_classes: int | None = None, cache_dir: Any = None,
         carve: tuple[str, Carve] | None = None) -> Loaded:
    """Decode (once per machine, into the cache) and memory-map every split of the dataset.

    `carve` = (key, fn): without a given val split, the training split is cut by fn's indices into
    train and val, stored as two more cache entries named by `key` (e.g. the fraction and seed), so
    trials map a carved split too instead of each copying it."""
    src = _source(kind, path, cache_dir, SPLITS if with_test else ("train", "val"))
    h, w = _check(src, image_size, num_classes)
    root = cache_root(cache_dir)
    splits, entries = {}, {}
    for name, split in src.splits.items():
        key = hashlib.sha256(json.dumps([CACHE_VERSION, kind, split.digest, h, w, src.channels,
                                         list(src.classes)]).encode()).hexdigest()
        entries[name] = root / f"{kind}-{name}-{key[:24]}"
        splits[name] = _cached(entries[name], lambda s=split: _decode_split(src, s, h, w))
    mean, std = splits["train"][2]["mean"], splits["train"][2]["std"]
    if carve is not None and "val" not in splits:
        splits.update(_carved(entries["train"], splits["train"], *carve))
    return Loaded({k: (x, y) for k, (x, y, _) in splits.items()}, tuple(mean), tuple(std),
                  src.classes)


def _carved(entry: Path, train: tuple[np.ndarray, np.ndarray, Any], key: str, fn: Carve
            ) -> dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """{"train": ..., "val": ...}: the cached training split cut by `fn`, each part its own entry."""
    x, y, _ = train
    cut: list[tuple[np.ndarray, np.ndarray]] = []

    def part(i: int) -> tuple[np.ndarray, np.ndarray]:
        if not cut:
            cut.append(fn(np.asarray(y)))
        idx = cut[0][i]
        return x[idx], y[idx]

    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    return {name: _cached(entry.with_name(f"{entry.name}-carve{tag}-{name}"), lambda i=i: part(i))
            for i, name in enumerate(("train", "val"))}


def _decode_split(src: _Source, split: _Split, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N, C, H, W images, int64 labels) of one split, resized to h x w where they differ."""
    if split.npz_key is not None:
        with np.load(src.root, allow_pickle=False) as z:
            x = np.asarray(z[split.npz_key])
        return _npz_images(x, h, w, src.channels), split.labels
    x = np.empty((len(split.files), src.channels, h, w), dtype=np.uint8)
    mode = "L" if src.channels == 1 else "RGB"

    def one(i: int) -> None:
        x[i] = _decode_file(split.files[i], mode, h, w)

    _each(one, len(split.files))
    return x, split.labels


def _decode_file(path: str, mode: str, h: int, w: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode != mode:
                im = im.convert(mode)
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            a = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt past its header
        raise DataError(f"cannot decode image {path} ({type(exc).__name__}: {str(exc)[:160]}); "
                        f"replace or remove it") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _npz_images(x: np.ndarray, h: int, w: int, channels: int) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[3] != channels:  # greyscale beside RGB splits: repeat the grey channel
        x = np.repeat(x, channels, axis=3)
    if x.shape[1:3] != (h, w):
        from PIL import Image

        out = np.empty((len(x), h, w, channels), dtype=np.uint8)
        for i, img in enumerate(x):
            im = Image.fromarray(img[..., 0] if channels == 1 else img)
            out[i] = np.asarray(im.resize((w, h), Image.BILINEAR)).reshape(h, w, channels)
        x = out
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and std (in [0, 1]) of uint8 (N, C, H, W), from 256-bin histograms."""
    v = np.arange(256, dtype=np.float64)
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        n = max(counts.sum(), 1.0)
        m = (counts * v).sum() / n
        var = max((counts * v * v).sum() / n - m * m, 0.0)
        mean.append(m / 255.0)
        std.append(max(var ** 0.5 / 255.0, 1e-3))  # a constant channel must not divide by 0
    return mean, std


def _cached(entry: Path, build: Callable[[], tuple[np.ndarray, np.ndarray]]
            ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Memory-map a cache entry, building it first (under its lock) when it is not there yet."""
    found = _open_entry(entry)
    if found is not None:
        return found
    from filelock import FileLock

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(entry) + ".lock")
        lock.acquire()
    except OSError as exc:
        raise DataError(f"cannot write the decoded-image cache in {entry.parent} ({exc}); set "
                        f"data.cache_dir to a writable folder") from None
    try:
        found = _open_entry(entry)  # another process built it while we waited
        if found is not None:
            return found
        for stale in [entry, *entry.parent.glob(entry.name + ".tmp-*")]:  # torn, or a writer died
            shutil.rmtree(stale, ignore_errors=True)
        x, y = build()
        mean, std = channel_stats(x)
        meta = {"version": CACHE_VERSION, "n": int(len(y)), "shape": list(x.shape[1:]),
                "mean": mean, "std": std}
        tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
        np.save(tmp / "x.npy", x)
        np.save(tmp / "y.npy", y.astype(np.int64))
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, entry)
        log.info("cached %d decoded images in %s", len(y), entry)
    finally:
        lock.release()
    found = _open_entry(entry)
    assert found is not None
    return found


def _open_entry(entry: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """(x, y, meta) of a complete cache entry, memory-mapped copy-on-write; None when absent."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        x = np.load(entry / "x.npy", mmap_mode="c")
        y = np.load(entry / "y.npy", mmap_mode="c")
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION or len(x) != meta.get("n") or len(y) != len(x):
        return None
    return x, y, meta


def _write_atomic(path: Path, data: bytes) -> None:
    """Best effort (a memo only): write then rename; an unwritable cache folder is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        log.info("not remembering %s (%s)", path, exc)
