"""How fast `data.dataset: imagefolder` loads, against the built-in `cifar10` loader and plain Pillow.

    python benchmarks/imagefolder_load.py --data /work/shared/data [--work DIR] [--json OUT.json]

Writes the CIFAR-10 development copy (the .npz halves of JPEG files under --data, see its README) as
an image folder of JPEG files (train/<class>/<i>.jpg, the JPEG bytes as they are) and in torchvision's
pickle layout (benchmarks/cifar10_dev.py, every image in the training batches) into --work (default
./data/imagefolder-bench, an ignored folder), then times on the same images:

* a plain Pillow loop: open, convert to RGB, copy into one uint8 array, one file after another;
* the first imagefolder load into an empty cache (scan, headers, decode, write the cache);
* a cached imagefolder load (scan, memory-map the cache) and the built-in cifar10 load, both with
  the default val_fraction 0.1 carve, median of --repeats.

Targets: a cached load within 1.2x of the built-in loader; the first decode within 2x of the plain
Pillow loop. `--per-class N` keeps N images of each class (the test's smoke run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

HALVES = ("cifar10_train_jpeg_a.npz", "cifar10_train_jpeg_b.npz")


def read_halves(data: Path, per_class: int | None) -> tuple[list[bytes], np.ndarray, list[str]]:
    """The JPEG files, labels and class names of both halves (the first `per_class` of each class)."""
    files: list[bytes] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    for half in HALVES:
        with np.load(data / half) as z:
            blob, offsets, y = z["blob"], z["offsets"], z["y"].astype(np.int64)
            names = [str(n) for n in z["class_names"]]
        files += [blob[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(y))]
        labels.append(y)
    y = np.concatenate(labels)
    if per_class:
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)]))
        files, y = [files[i] for i in keep], y[keep]
    return files, y, names


def write_folder(root: Path, files: list[bytes], y: np.ndarray, names: list[str]) -> list[Path]:
    """train/<class>/<i>.jpg with the JPEG bytes as they are; kept when already complete."""
    paths = [root / "train" / names[lab] / f"{i:05d}.jpg" for i, lab in enumerate(y.tolist())]
    done = root / ".complete"
    if done.is_file() and done.read_text() == str(len(paths)):
        return paths
    shutil.rmtree(root, ignore_errors=True)
    for name in names:
        (root / "train" / name).mkdir(parents=True)
    for path, data in zip(paths, files):
        path.write_bytes(data)
    done.write_text(str(len(paths)))
    return paths


def write_torchvision(root: Path, files: list[bytes], y: np.ndarray, names: list[str]) -> None:
    """OUT/cifar-10-batches-py/ with every image in the training batches (an empty test batch)."""
    import io

    from PIL import Image

    from cifar10_dev import write

    done = root / ".complete"
    if done.is_file() and done.read_text() == str(len(y)):
        return
    shutil.rmtree(root, ignore_errors=True)
    images = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files])
    write(root, images, y, names, np.array([], dtype=np.int64), seed=0)
    done.write_text(str(len(y)))


def pillow_loop(paths: list[Path]) -> np.ndarray:
    from PIL import Image

    out = None
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB"))
        if out is None:
            out = np.empty((len(paths), *a.shape), dtype=np.uint8)
        out[i] = a
    assert out is not None
    return out


def timed(fn, repeats: int = 1):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with the development copy's .npz halves")
    p.add_argument("--work", type=Path, default=Path("data/imagefolder-bench"),
                   help="where the image folder and the torchvision copy are written (kept for reruns)")
    p.add_argument("--per-class", type=int, help="only N images of each class")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=HERE / "results" / "imagefolder_load-cpu.json")
    args = p.parse_args(argv)
    missing = [h for h in HALVES if not (args.data / h).is_file()]
    if missing:
        p.error(f"--data {args.data}: missing {', '.join(missing)} (the CIFAR-10 development copy)")

    import torchvision.datasets.folder  # noqa: F401 - imported once per process, as in a trial

    from tfkd_search.data import load_splits

    files, y, names = read_halves(args.data, args.per_class)
    folder, tv = args.work / "imagefolder", args.work / "torchvision"
    t0 = time.perf_counter()
    paths = write_folder(folder, files, y, names)
    write_torchvision(tv, files, y, names)
    print(f"{len(paths):,} images: {folder} and {tv} ready in {time.perf_counter() - t0:.1f} s")

    pillow_s, reference = timed(lambda: pillow_loop(paths))  # also warms the page cache for all
    cache = Path(tempfile.mkdtemp(prefix="tfkd-bench-cache-"))
    try:
        def user() -> object:
            return load_splits("imagefolder", folder, val_fraction=0.1, cache_dir=cache)

        first_s, first = timed(user)
        cached_s, cached = timed(user, args.repeats)
        builtin_s, builtin = timed(lambda: load_splits("cifar10", tv, val_fraction=0.1), args.repeats)
        # the same pixels and labels as Pillow decoded (the folder's order: class, then file name)
        whole = load_splits("imagefolder", folder, val_fraction=0.0, cache_dir=cache)
        order = np.argsort([str(q.relative_to(folder)) for q in paths], kind="stable")
        same = bool(np.array_equal(whole.train_x.numpy(), reference[order].transpose(0, 3, 1, 2))
                    and np.array_equal(whole.train_y.numpy(), y[order]))
        assert first.train_x.shape == cached.train_x.shape
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    rows = [
        {"what": "plain Pillow loop (one thread)", "seconds": pillow_s},
        {"what": "imagefolder, first load (decode into the cache)", "seconds": first_s},
        {"what": "imagefolder, cached load (median)", "seconds": cached_s},
        {"what": "built-in cifar10 loader (median)", "seconds": builtin_s},
    ]
    checks = {"cached_vs_builtin": cached_s / builtin_s, "cached_target": 1.2,
              "first_vs_pillow": first_s / pillow_s, "first_target": 2.0,
              "same_pixels_as_pillow": same}
    print(f"\n{'load':<50} {'seconds':>9} {'images/s':>10}")
    for r in rows:
        print(f"{r['what']:<50} {r['seconds']:>9.3f} {len(paths) / r['seconds']:>10,.0f}")
    print(f"\ntargets: cached load {checks['cached_vs_builtin']:.2f}x the built-in loader (target <= 1.2x: "
          f"{'met' if checks['cached_vs_builtin'] <= 1.2 else 'missed'}); first decode "
          f"{checks['first_vs_pillow']:.2f}x the Pillow loop (target <= 2x: "
          f"{'met' if checks['first_vs_pillow'] <= 2.0 else 'missed'}); same pixels as Pillow: {same}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"images": len(paths), "train": int(len(builtin.train_x)),
                                     "val": int(len(builtin.val_x)), "rows": rows, "checks": checks},
                                    indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
