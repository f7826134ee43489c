"""Write a CIFAR-100-shaped dataset of random pixels in the real on-disk format (cifar-100-python/),
for end-to-end speed runs on machines without the real files:
    python benchmarks/make_fake_cifar.py DIR [N_TRAIN [N_TEST]]     (default 50000 and 10000 images)"""

import pickle
import sys
from pathlib import Path

import numpy as np


def main(root: str, n_train: int = 50000, n_test: int = 10000) -> None:
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 100, n)
        entry = {"filenames": [f"{name}_{i}.png" for i in range(n)], "batch_label": name,
                 "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)],
                     "coarse_label_names": [f"s{i}" for i in range(20)]}, f, protocol=2)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(n) for n in sys.argv[2:4]))
