"""Your own data: `data.dataset: imagefolder` and `npz` (tfkd_search.userdata), their decoded-image cache,
the checks before anything starts (through the real CLI), the plan's memory line and MLflow. CPU only;
the images are small PNG/JPEG files written here by Pillow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from _proc import ROOT, cli_env, run_cli
from tfkd_search import data, userdata
from tfkd_search.config import build_run_config
from tfkd_search.data import describe_dataset, load_splits
from tfkd_search.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def image(path: Path, h: int = 8, w: int = 8, mode: str = "RGB", value: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    pixels = (np.full(shape, value, np.uint8) if value is not None
              else RNG.integers(0, 256, shape, dtype=np.uint8))
    Image.fromarray(pixels, mode).save(path)


def folder(root: Path, layout: dict[str, dict[str, int]], **kw: Any) -> Path:
    """root/<split>/<class>/<i>.png: `layout` = {split: {class: number of images}}."""
    for split, classes in layout.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image(root / split / name / f"{i}.png", **kw)
    return root


def data_cfg(**data: Any) -> Any:
    return build_run_config({"data": data}).data


# ---------------------------------------------------------------------------------------------------
# imagefolder


def test_imagefolder_class_map_hidden_files_and_given_val(tmp_path) -> None:
    root = folder(tmp_path / "d", {"train": {"b_dog": 4, "a_cat": 3, "c_emu": 2},
                                   "val": {"c_emu": 2, "a_cat": 1}, "test": {"b_dog": 2}})
    (root / "train" / ".ipynb_checkpoints").mkdir()  # a hidden folder is no class
    image(root / "train" / ".ipynb_checkpoints" / "x.png")
    image(root / "train" / "a_cat" / ".hidden.png")  # hidden files and non-images are skipped
    (root / "train" / "a_cat" / "notes.txt").write_text("not an image")
    image(root / "train" / "a_cat" / "upper.PNG")  # extensions match case-insensitively
    cache = tmp_path / "cache"
    facts = describe_dataset(data_cfg(dataset="imagefolder", data_dir=str(root), cache_dir=str(cache)),
                             with_test=True)
    assert facts.class_names == ("a_cat", "b_dog", "c_emu") and facts.num_classes == 3
    assert (facts.channels, facts.height, facts.width) == (3, 8, 8)
    assert (facts.n_train, facts.n_val, facts.n_test, facts.val_source) == (10, 3, 2, "given")
    assert facts.resident_bytes == 15 * (3 * 8 * 8 + 8)
    s = load_splits("imagefolder", root, val_fraction=0.1, with_test=True, cache_dir=cache)
    # one class map for every split: val has no b_dog, yet c_emu is label 2 there too
    assert s.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert s.val_y.tolist() == [0, 2, 2] and s.test_y.tolist() == [1, 1]
    assert s.train_x.dtype == torch.uint8 and s.train_x.shape == (10, 3, 8, 8)
    assert s.info.num_classes == 3 and s.info.crop_padding == 1 and s.info.flip
    # the pixels are the files' pixels, in the folder's order (class, then file name)
    first = np.asarray(Image.open(root / "train" / "a_cat" / "0.png")).transpose(2, 0, 1)
    assert np.array_equal(s.train_x[0].numpy(), first)
    # normalisation statistics of the training split, per channel
    x = s.train_x.double() / 255
    assert s.info.mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-9)
    assert s.info.std == pytest.approx(x.std((0, 2, 3), unbiased=False).tolist(), abs=1e-9)
    # the test split is only read when asked for
    assert load_splits("imagefolder", root, with_test=False, cache_dir=cache).test_x is None


def test_imagefolder_carves_val_and_resizes_and_greyscale(tmp_path) -> None:
    root = folder(tmp_path / "d", {"train": {"a": 10, "b": 10}}, h=12, w=10, mode="L")
    cache = tmp_path / "cache"
    s = load_splits("imagefolder", root, val_fraction=0.2, split_seed=1, cache_dir=cache)
    assert s.train_x.shape == (16, 1, 12, 10) and s.val_x.shape == (4, 1, 12, 10)
    assert torch.bincount(s.val_y).tolist() == [2, 2]  # stratified
    again = load_splits("imagefolder", root, val_fraction=0.2, split_seed=1, cache_dir=cache)
    assert torch.equal(again.val_x, s.val_x)
    # the cached carve is the built-in datasets' carve of the whole training split
    whole = load_splits("imagefolder", root, val_fraction=0.0, cache_dir=cache)
    expected = data._carve(whole.train_x, whole.train_y, 0.2, 1)
    assert all(torch.equal(a, b) for a, b in zip(expected, (s.train_x, s.train_y, s.val_x, s.val_y)))
    small = load_splits("imagefolder", root, val_fraction=0.0, image_size=[6, 4], cache_dir=cache)
    assert small.train_x.shape == (20, 1, 6, 4) and small.val_x is None
    facts = describe_dataset(data_cfg(dataset="imagefolder", data_dir=str(root), image_size=5,
                                      cache_dir=str(cache)))
    assert (facts.channels, facts.height, facts.width, facts.n_val) == (1, 5, 5, 2)


def test_cache_is_read_back_without_decoding_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    root = folder(tmp_path / "d", {"train": {"a": 3, "b": 3}})
    cache = tmp_path / "cache"
    first = load_splits("imagefolder", root, val_fraction=0.0, cache_dir=cache)
    entries = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert len(entries) == 1 and entries[0].startswith("imagefolder-train-")
    assert isinstance(np.load(cache / entries[0] / "x.npy", mmap_mode="r"), np.memmap)

    def no_decoding(*a: Any) -> None:
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(userdata, "_decode_file", no_decoding)
    assert torch.equal(load_splits("imagefolder", root, val_fraction=0.0, cache_dir=cache).train_x,
                       first.train_x)
    digest = describe_dataset(data_cfg(dataset="imagefolder", data_dir=str(root),
                                       cache_dir=str(cache))).digest
    monkeypatch.undo()
    image(root / "train" / "b" / "0.png", value=7)  # new content (size and mtime change)
    assert describe_dataset(data_cfg(dataset="imagefolder", data_dir=str(root),
                                     cache_dir=str(cache))).digest != digest
    changed = load_splits("imagefolder", root, val_fraction=0.0, cache_dir=cache)
    assert (changed.train_x[3] == 7).all() and not torch.equal(changed.train_x, first.train_x)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_torn_cache_entries_are_never_read(tmp_path) -> None:
    root = folder(tmp_path / "d", {"train": {"a": 2, "b": 2}})
    cache = tmp_path / "cache"
    good = load_splits("imagefolder", root, val_fraction=0.0, cache_dir=cache).train_x.clone()
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    (entry / "x.npy").write_bytes(b"torn")  # e.g. a disk that filled up
    stale = cache / (entry.name + ".tmp-dead")  # a writer killed before its rename
    stale.mkdir()
    (stale / "x.npy").write_bytes(b"half")
    again = load_splits("imagefolder", root, val_fraction=0.0, cache_dir=cache)
    assert torch.equal(again.train_x, good) and not stale.exists()


BUILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from tfkd_search.data import load_splits
s = load_splits("imagefolder", sys.argv[1], val_fraction=0.0, cache_dir=sys.argv[2])
print("sum", int(s.train_x.long().sum()))
"""


def test_two_processes_build_the_cache_once(tmp_path) -> None:
    root = folder(tmp_path / "d", {"train": {"a": 150, "b": 150}}, h=16, w=16)
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(root), str(cache)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(o.count("cached 300 decoded images") for o in outs) == 1, outs
    sums = {line for o in outs for line in o.splitlines() if line.startswith("sum")}
    assert len(sums) == 1, outs
    assert not list(cache.glob("*.tmp-*"))


# ---------------------------------------------------------------------------------------------------
# npz


def test_npz_keys_given_splits_and_class_names(tmp_path) -> None:
    path = tmp_path / "d.npz"
    x = RNG.integers(0, 256, (12, 6, 5, 3), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=(np.arange(12) % 3).reshape(12, 1),
             x_val=x[:3], y_val=np.array([2, 1, 0]), x_test=x[:2], y_test=np.array([0, 0]),
             class_names=np.array(["ant", "bee", "cow"]))
    cache = tmp_path / "cache"
    facts = describe_dataset(data_cfg(dataset="npz", data_dir=str(path), cache_dir=str(cache)),
                             with_test=True)
    assert facts.class_names == ("ant", "bee", "cow")
    assert (facts.n_train, facts.n_val, facts.n_test, facts.height, facts.width) == (12, 3, 2, 6, 5)
    s = load_splits("npz", path, with_test=True, cache_dir=cache)
    assert torch.equal(s.train_x, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert s.val_y.tolist() == [2, 1, 0] and s.test_x.shape == (2, 3, 6, 5)
    grey = tmp_path / "g.npz"
    np.savez(grey, x_train=x[..., 0], y_train=np.arange(12) % 2)
    g = load_splits("npz", grey, val_fraction=0.25, cache_dir=cache)
    assert g.info.in_channels == 1 and g.train_x.shape == (9, 1, 6, 5) and g.info.num_classes == 2


def test_num_classes_comes_from_the_data(tmp_path) -> None:
    root = folder(tmp_path / "d", {"train": {"a": 2, "b": 2, "c": 2, "d": 2}})
    cfg = build_run_config({"method": "tfkd_reg", "loss": {"a": 0.2},
                            "data": {"dataset": "imagefolder", "data_dir": str(root),
                                     "cache_dir": str(tmp_path / "c")}})
    assert cfg.num_classes == 4
    with pytest.raises(ConfigError, match=r"loss\.a must be in \(1/C, 1\] = \(0\.25, 1\]"):
        build_run_config({"method": "tfkd_reg", "loss": {"a": 0.2},
                          "data": {"dataset": "imagefolder"}}, num_classes=4)
    with pytest.raises(ConfigError, match="data.image_size: applies to imagefolder and npz only"):
        build_run_config({"data": {"dataset": "digits", "image_size": 16}})
    with pytest.raises(DataError, match="data.num_classes is 5 but .* holds 4 classes"):
        describe_dataset(data_cfg(dataset="imagefolder", data_dir=str(root), num_classes=5,
                                  cache_dir=str(tmp_path / "c")))


# ---------------------------------------------------------------------------------------------------
# GPU memory: the decision, for a stated card (no GPU here)


def test_memory_plan_against_a_stated_card() -> None:
    from tfkd_search.spaces import dataset_copies, dataset_memory, load_space

    gib = 2**30
    cifar = userdata.DatasetFacts("imagefolder", "/d", 10, 3, 32, 32, 45_000, 5_000, 0, (), "x", "carved")
    assert cifar.resident_bytes == 50_000 * (3 * 32 * 32 + 8)
    line, fits = userdata.memory_plan(cifar.resident_bytes, 4, ("NVIDIA A10G", 22 * gib))
    assert fits and "146.9 MiB per copy x 4 = 587.5 MiB per GPU; fits NVIDIA A10G" in line
    imagenet = userdata.DatasetFacts("imagefolder", "/d", 1000, 3, 224, 224, 1_281_167, 0, 0, (), "x",
                                     "none")
    line, fits = userdata.memory_plan(imagenet.resident_bytes, 1, ("NVIDIA H100 80GB HBM3", 79 * gib))
    assert not fits and "179.62 GiB per copy x 1" in line and "does not fit" in line
    assert userdata.memory_plan(imagenet.resident_bytes, 1, None)[1]  # no GPU here: estimate only
    space = load_space(ROOT / "search_spaces" / "tfkd_reg.yaml")  # gpu: 0.25, packed by default
    assert dataset_copies(space, 8) == 1 and dataset_copies(space, 0) == 1
    unpacked = load_space(ROOT / "search_spaces" / "tfkd_reg.yaml",
                          {"search.resources.pack": False})
    assert dataset_copies(unpacked, 8) == 4
    line, fits = dataset_memory(unpacked, 8, imagenet, ("card", 500 * gib))
    assert not fits and "x 4 =" in line and "4 trial(s) per GPU, one copy each" in line


# ---------------------------------------------------------------------------------------------------
# Through the CLI: a run, the plan, MLflow, and every kind of bad data


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return cli_env({"XDG_CACHE_HOME": str(tmp_path_factory.mktemp("xdg"))})


def _run_cfg(data: dict[str, Any], **top: Any) -> dict[str, Any]:
    cfg = {"name": "mine", "model": "tiny_cnn", "method": "tfkd_reg", "device": "cpu", "threads": 1,
           "data": data, "optim": {"batch_size": 8},
           "schedule": {"epochs": 1, "milestones": [], "warmup_epochs": 0}}
    cfg.update(top)
    return cfg


def test_train_on_an_image_folder_logs_class_names_and_digest(tmp_path, env) -> None:
    root = folder(tmp_path / "d", {"train": {"cat": 12, "dog": 12}, "test": {"cat": 2, "dog": 2}})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(_run_cfg(
        {"dataset": "imagefolder", "data_dir": str(root)}, evaluate_test=True)))
    res = run_cli(["train", "--config", str(tmp_path / "run.yaml"), "--storage", str(tmp_path / "runs")],
                  env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((tmp_path / "runs" / "train" / "mine" / "seed0" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test_acc"] is not None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "mine"]
    (parent,) = [r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("tfkd.role") == "final"]
    assert json.loads(parent.data.params["dataset.class_names"]) == ["cat", "dog"]
    assert parent.data.params["dataset.shape"] == "3x8x8"
    facts = describe_dataset(data_cfg(dataset="imagefolder", data_dir=str(root),
                                      cache_dir=str(Path(env["XDG_CACHE_HOME"]) / "tfkd-search")),
                             with_test=True)
    assert parent.data.tags["tfkd.data_digest"] == facts.digest


def test_dry_run_plan_shows_the_dataset_and_its_memory(tmp_path) -> None:
    env = cli_env({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    root = folder(tmp_path / "d", {"train": {"cat": 5, "dog": 5}, "val": {"cat": 1}}, h=10, w=6)
    space = {"name": "mine", "base": _run_cfg({"dataset": "imagefolder", "data_dir": str(root)}),
             "search": {"params": {"loss.a": {"kind": "grid", "values": [0.9, 0.99]}},
                        "scheduler": {"kind": "none"}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    for args in (["--space", str(tmp_path / "space.yaml"), "--dry-run"],
                 ["validate", str(tmp_path / "space.yaml")]):
        res = run_cli([*args, "--storage", str(tmp_path / "runs")] if "--dry-run" in args else args,
                      env, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"dataset: imagefolder {root}: 2 classes, 3x10x6, 10 train / 1 val / 0 test" in res.stdout
        assert "resident dataset:" in res.stdout and "per trial, in host memory" in res.stdout
    # the dry run decodes nothing: only the header memo is in the cache
    assert not list((Path(env["XDG_CACHE_HOME"]) / "tfkd-search").glob("imagefolder-*"))


def _bad_folder(kind: str, root: Path) -> None:
    if kind == "missing":
        return
    if kind == "no-train":
        root.mkdir(parents=True)
    elif kind == "one-class":
        folder(root, {"train": {"cat": 3}})
    elif kind == "empty-class":
        folder(root, {"train": {"cat": 3}})
        (root / "train" / "dog").mkdir()
        (root / "train" / "dog" / "readme.txt").write_text("no images")
    elif kind == "class-only-in-val":
        folder(root, {"train": {"cat": 3, "dog": 3}, "val": {"cat": 1, "emu": 1}})
    elif kind == "unreadable-image":
        folder(root, {"train": {"cat": 3, "dog": 3}})
        (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    elif kind == "mixed-sizes":
        folder(root, {"train": {"cat": 3, "dog": 2}})
        image(root / "train" / "dog" / "big.png", h=16, w=12)


def _bad_npz(kind: str, path: Path) -> None:
    x = RNG.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])
    if kind == "missing-key":
        np.savez(path, images=x, y_train=y)
    elif kind == "wrong-dtype":
        np.savez(path, x_train=x.astype(np.float32) / 255, y_train=y)
    elif kind == "labels-out-of-range":
        np.savez(path, x_train=x, y_train=y * 2, class_names=np.array(["ant", "bee"]))


BAD = [  # (id, dataset, kind, needles)
    ("folder-missing", "imagefolder", "missing", ("{d}", "does not exist", "data.data_dir")),
    ("folder-without-train", "imagefolder", "no-train", ("{d}", "has no train/ folder")),
    ("folder-one-class", "imagefolder", "one-class", ("{d}/train", "1 class folder(s) (cat)",
                                                      "at least 2")),
    ("folder-empty-class", "imagefolder", "empty-class", ("train/dog/ holds no images",)),
    ("folder-class-only-in-val", "imagefolder", "class-only-in-val",
     ("{d}/val", "emu are not in train/", "every class needs training images")),
    ("folder-unreadable-image", "imagefolder", "unreadable-image",
     ("1 image(s) cannot be read", "{d}/train/dog/broken.jpg", "UnidentifiedImageError")),
    ("folder-mixed-sizes", "imagefolder", "mixed-sizes",
     ("2 different sizes", "8x8 (height x width): 5 images", "16x12", "set data.image_size")),
    ("npz-missing-key", "npz", "missing-key", ("{d}", "key 'x_train' is missing", "images")),
    ("npz-wrong-dtype", "npz", "wrong-dtype", ("x_train is float32", "must be uint8")),
    ("npz-labels-out-of-range", "npz", "labels-out-of-range",
     ("y_train labels range over [0, 2]", "[0, 2) (class_names has 2)")),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_data_through_the_cli(case, tmp_path, env) -> None:
    _, dataset, kind, needles = case
    d = tmp_path / ("d.npz" if dataset == "npz" else "d")
    (_bad_npz if dataset == "npz" else _bad_folder)(kind, d)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(_run_cfg({"dataset": dataset, "data_dir": str(d)})))
    res = run_cli(["train", "--config", str(tmp_path / "run.yaml"), "--storage", str(tmp_path / "runs")],
                  env, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("tfkd-search: error:") == 1, res.stderr
    assert f"{tmp_path / 'run.yaml'}: data:" in res.stderr
    for needle in needles:
        assert needle.replace("{d}", str(d)) in res.stderr, res.stderr
    assert not (tmp_path / "runs" / "train").exists()  # nothing started


def test_searched_value_checked_against_the_class_count_of_the_data(tmp_path, env) -> None:
    root = folder(tmp_path / "d", {"train": {"a": 2, "b": 2, "c": 2, "d": 2}})
    space = {"name": "mine", "base": _run_cfg({"dataset": "imagefolder", "data_dir": str(root)}),
             "search": {"params": {"loss.a": {"kind": "grid", "values": [0.9, 0.2]}},
                        "scheduler": {"kind": "none"}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    res = run_cli(["--space", str(tmp_path / "space.yaml"), "--dry-run", "--storage",
                   str(tmp_path / "runs")], env, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "search.params.loss.a: value 0.2" in res.stderr and "(0.25, 1]" in res.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_search_on_an_image_folder_trains_from_the_cache_and_logs_the_dataset(tmp_path) -> None:
    """A real (local Ray) search of two trials on an image folder: the driver decodes it into the cache
    once, the trials read it from there, the parent MLflow run records the class names and digest."""
    from _proc import search_runs

    env = cli_env({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    root = folder(tmp_path / "d", {"train": {"cat": 10, "dog": 10}, "val": {"cat": 2, "dog": 2}})
    space = {"name": "mine", "base": _run_cfg({"dataset": "imagefolder", "data_dir": str(root)}),
             "search": {"params": {"loss.a": {"kind": "grid", "values": [0.9, 0.99]}},
                        "scheduler": {"kind": "none"}, "resources": {"cpu": 1},
                        "finalists": {"top": 0}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    res = run_cli(["--space", str(tmp_path / "space.yaml"), "--storage", str(tmp_path / "runs")], env,
                  timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    import pandas as pd

    trials = pd.read_parquet(tmp_path / "runs" / "mine" / "trials.parquet")
    assert sorted(trials["status"]) == ["completed", "completed"]
    cache = tmp_path / "xdg" / "tfkd-search"
    assert len([p for p in cache.glob("imagefolder-*") if p.is_dir()]) == 2  # train and val, once
    parent, kids = search_runs(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "mine")
    assert len(kids) == 2 and json.loads(parent.data.params["dataset.class_names"]) == ["cat", "dog"]
    assert parent.data.tags["tfkd.data_digest"] == describe_dataset(data_cfg(
        dataset="imagefolder", data_dir=str(root), cache_dir=str(cache))).digest


def test_every_entry_point_makes_the_same_data_check(tmp_path, env) -> None:
    """train, validate (a run config and a space), --dry-run and a real search all stop on the same
    bad folder, with the same message, before anything starts."""
    root = tmp_path / "d"
    _bad_folder("mixed-sizes", root)
    run = _run_cfg({"dataset": "imagefolder", "data_dir": str(root)})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(
        {"name": "mine", "base": run, "search": {"params": {"loss.a": {"kind": "grid", "values": [0.9]}},
                                                "scheduler": {"kind": "none"}}}))
    storage = ["--storage", str(tmp_path / "runs")]
    for args in (["train", "--config", str(tmp_path / "run.yaml"), *storage],
                 ["validate", "--config", str(tmp_path / "run.yaml")],
                 ["validate", str(tmp_path / "space.yaml")],
                 ["--space", str(tmp_path / "space.yaml"), "--dry-run", *storage],
                 ["--space", str(tmp_path / "space.yaml"), *storage]):
        res = run_cli(args, env, timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)
        assert "the images have 2 different sizes" in res.stderr and "set data.image_size" in res.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("search.json"))
