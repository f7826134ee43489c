"""Write an image folder from data already on this machine: scikit-learn's bundled digits (1,797 8x8 greyscale
images, 10 classes) as PNG files, `OUT/train/<class>/<i>.png` and a stratified 20% `OUT/test/<class>/<i>.png`,
the layout `data.dataset: imagefolder` reads (docs/datasets.md).

    python examples/own_model/make_images.py data/digits_images
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the image folder to write (train/ and test/ in it)")
    args = p.parse_args()
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # values 0..16 -> 0..255
    rng = np.random.default_rng(0)
    test = np.zeros(len(images), dtype=bool)
    for c in np.unique(digits.target):  # stratified: 20% of each class
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        test[idx[: len(idx) // 5]] = True
    for i, (img, label) in enumerate(zip(images, digits.target)):
        folder = args.out / ("test" if test[i] else "train") / digits.target_names[label].astype(str)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    print(f"wrote {len(images)} images ({int(test.sum())} in test/) to {args.out}")


if __name__ == "__main__":
    main()
