"""Unpack the CIFAR-10 development copy (official training images as JPEG, in .npz halves) into the
layout `--data-dir` reads: OUT/cifar-10-batches-py/ with five training pickles, a `test_batch` and
`batches.meta`, as torchvision's CIFAR10 class expects them.

    python benchmarks/cifar10_dev.py OUT --npz .gpu_data/cifar10_train_jpeg_a.npz \
        .gpu_data/cifar10_train_jpeg_b.npz --test-fraction 0.2

The copy holds training images only, so the `test_batch` written here is a stand-in: a stratified
share (`--test-fraction` of every class, drawn with `--seed`) of the given images, never trained on.
An .npz holds `blob` (the JPEG files concatenated, uint8), `offsets` (N+1 int64: image i is
blob[offsets[i]:offsets[i+1]]), `y` (uint8 labels) and `class_names`. Decoding uses Pillow (a
dependency of torchvision). tfkd-search reads the result with an existence-only check, since
torchvision's md5 sums do not match these files.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
from pathlib import Path

import numpy as np


def decode(npz: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images N x 32 x 32 x 3 uint8, labels N, class names) of one .npz half."""
    from PIL import Image

    with np.load(npz) as z:
        blob, offsets, y = z["blob"], z["offsets"], z["y"].astype(np.int64)
        names = [str(n) for n in z["class_names"]]
    images = np.stack([np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes()))
                                  .convert("RGB")) for i in range(len(offsets) - 1)])
    if len(images) != len(y):
        raise SystemExit(f"{npz}: {len(images)} images but {len(y)} labels")
    return images, y, names


def stratified_test(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of the stand-in test split: round(fraction * n_c) of each class c, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(y == c))[:round(fraction * int((y == c).sum()))]
             for c in np.unique(y)]
    return np.sort(np.concatenate(picks))


def subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` images of every class (all of a class that has fewer)."""
    rng = np.random.default_rng(seed + 2)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]))


def write(out: Path, images: np.ndarray, y: np.ndarray, names: list[str], test: np.ndarray,
          seed: int) -> tuple[int, int]:
    folder = out / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    train = rng.permutation(np.setdiff1d(np.arange(len(y)), test))
    rows = images.transpose(0, 3, 1, 2).reshape(len(y), -1)  # CHW bytes per image, as the official files

    def dump(name: str, idx: np.ndarray, label: str) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": label, "labels": y[idx].tolist(), "data": rows[idx],
                         "filenames": [f"{i}.jpg" for i in idx]}, f)

    for k, part in enumerate(np.array_split(train, 5), start=1):
        dump(f"data_batch_{k}", part, f"training batch {k} of 5")
    dump("test_batch", rng.permutation(test), "stand-in test batch (training images held out)")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": -(-len(train) // 5), "num_vis": 3072}, f)
    return len(train), len(test)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--npz", type=Path, nargs="+", required=True, help="one or both halves")
    p.add_argument("--test-fraction", type=float, default=0.2, help="stand-in test share of each class")
    p.add_argument("--per-class", type=int, help="keep only N images of each class (a stratified subset, "
                   "drawn with --seed, before the split): small real-image runs on a CPU")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 0 < args.test_fraction < 1:
        p.error(f"--test-fraction {args.test_fraction}: must be between 0 and 1")
    missing = [str(n) for n in args.npz if not n.is_file()]
    if missing:
        p.error(f"no such file: {', '.join(missing)} (copy the development copy's .npz halves first)")
    parts = [decode(n) for n in args.npz]
    if len({tuple(names) for _, _, names in parts}) != 1:
        raise SystemExit("the .npz files disagree on class_names")
    images = np.concatenate([x for x, _, _ in parts])
    y = np.concatenate([lab for _, lab, _ in parts])
    if args.per_class:
        keep = subset(y, args.per_class, args.seed)
        images, y = images[keep], y[keep]
    n_train, n_test = write(args.out, images, y, parts[0][2],
                            stratified_test(y, args.test_fraction, args.seed), args.seed)
    print(f"{args.out / 'cifar-10-batches-py'}: {n_train} train, {n_test} stand-in test "
          f"({', '.join(n.name for n in args.npz)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
