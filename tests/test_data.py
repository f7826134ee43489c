"""Tests of tfkd_search.data: loaders on small fake datasets in the real on-disk formats, and the batch
pipeline. CPU only, no network."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from _fakedata import (TINY_COLOURS, TINY_VAL, TINY_WNIDS, make_fake_cifar10, make_fake_cifar100,
                       make_fake_tiny)
from tfkd_search import data
from tfkd_search.batches import Batches
from tfkd_search.data import DATASETS, DatasetInfo, dataset_info, load_splits
from tfkd_search.errors import ConfigError, DataError

# --------------------------------------------------------------------------------------------------
# Dataset info
# --------------------------------------------------------------------------------------------------


def test_dataset_info_static():
    assert set(DATASETS) == {"cifar10", "cifar100", "tiny-imagenet", "digits", "synthetic"}
    for name, info in DATASETS.items():
        assert info.name == name
        assert len(info.mean) == len(info.std) == info.in_channels
        assert all(s > 0 for s in info.std)
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("tiny-imagenet").image_size == 64
    assert dataset_info("digits").flip is False and dataset_info("digits").crop_padding == 1
    assert dataset_info("cifar10").crop_padding == 4 and dataset_info("cifar10").flip is True


def test_unknown_dataset_hint():
    with pytest.raises(ConfigError, match=r"Did you mean 'cifar100'\?"):
        dataset_info("cifar-100")
    with pytest.raises(ConfigError, match="tiny-imagenet"):
        load_splits("tiny_imagenet", None)


def test_bad_val_fraction():
    # the run config bounds val_fraction (load_splits no longer checks it again)
    from tfkd_search.config import build_run_config

    for bad in (-0.1, 0.6):
        with pytest.raises(ConfigError, match=r"data\.val_fraction"):
            build_run_config({"data": {"dataset": "synthetic", "val_fraction": bad}})


# --------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------


def test_cifar10_fake(tmp_path):
    make_fake_cifar10(tmp_path)
    s = load_splits("cifar10", tmp_path, val_fraction=0.2, split_seed=3, with_test=True)
    assert s.info is DATASETS["cifar10"]
    assert s.train_x.shape == (80, 3, 32, 32) and s.train_x.dtype == torch.uint8
    assert s.val_x.shape == (20, 3, 32, 32)
    assert s.test_x.shape == (30, 3, 32, 32)
    assert s.train_y.dtype == torch.int64 and s.train_y.shape == (80,)
    # CHW layout: the sample id is in (R, 0, 0), 7 in (G, 0, 1)
    assert (s.train_x[:, 1, 0, 1] == 7).all() and (s.test_x[:, 1, 0, 1] == 7).all()
    train_ids, val_ids = s.train_x[:, 0, 0, 0].long(), s.val_x[:, 0, 0, 0].long()
    assert torch.equal(s.train_y, train_ids % 10) and torch.equal(s.val_y, val_ids % 10)
    assert torch.equal(s.test_y, (s.test_x[:, 0, 0, 0].long() * 3) % 10)
    assert torch.equal(s.test_x[:, 0, 0, 0].long(), torch.arange(30))
    # disjoint and complete
    assert not set(train_ids.tolist()) & set(val_ids.tolist())
    assert sorted(train_ids.tolist() + val_ids.tolist()) == list(range(100))
    # stratified: 2 of the 10 samples of each class go to validation
    assert torch.bincount(s.val_y, minlength=10).tolist() == [2] * 10
    # deterministic in split_seed
    again = load_splits("cifar10", tmp_path, val_fraction=0.2, split_seed=3)
    assert torch.equal(again.val_x, s.val_x) and torch.equal(again.train_y, s.train_y)
    assert again.test_x is None and again.test_y is None
    other = load_splits("cifar10", tmp_path, val_fraction=0.2, split_seed=4)
    assert not torch.equal(other.val_x[:, 0, 0, 0], s.val_x[:, 0, 0, 0])


def test_cifar100_fake_and_folder_itself(tmp_path):
    make_fake_cifar100(tmp_path)
    s = load_splits("cifar100", tmp_path, val_fraction=0.1, with_test=True)
    assert s.train_x.shape == (180, 3, 32, 32) and s.val_x.shape == (20, 3, 32, 32)
    assert s.test_x.shape == (50, 3, 32, 32)
    assert int(s.train_y.max()) == 99 and int(s.train_y.min()) == 0
    assert torch.equal(s.train_y, s.train_x[:, 0, 0, 0].long() % 100)
    # --data-dir pointing at cifar-100-python/ itself works too
    t = load_splits("cifar100", tmp_path / "cifar-100-python", val_fraction=0.0)
    assert t.val_x is None and t.val_y is None and t.train_x.shape[0] == 200


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits("cifar100", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-100-python") in msg and "--download" in msg
    assert "cifar-100-python/train" in msg and "cifar-100-python/meta" in msg


def test_cifar_missing_file(tmp_path):
    make_fake_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "batches.meta")
    with pytest.raises(DataError, match="batches.meta") as err:
        load_splits("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value) and "--download" in str(err.value)


def test_cifar_corrupt_file(tmp_path):
    make_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch|corrupt"):
        load_splits("cifar10", tmp_path)


def test_cifar_download_path(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kw):
        calls.append((url, md5))
        make_fake_cifar10(tmp_path / "dl")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_download)
    s = load_splits("cifar10", tmp_path / "dl", download=True, val_fraction=0.0)
    assert s.train_x.shape == (100, 3, 32, 32) and len(calls) == 1
    assert calls[0][1] == tv_cifar.CIFAR10.tgz_md5  # the archive's md5 is still checked

    # present files: --download does not fetch again
    load_splits("cifar10", tmp_path / "dl", download=True)
    assert len(calls) == 1

    def failing(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", failing)
    with pytest.raises(DataError, match="network is unreachable"):
        load_splits("cifar100", tmp_path / "none", download=True)


def test_cifar_needs_data_dir():
    with pytest.raises(DataError, match="--data-dir"):
        load_splits("cifar10", None)


# --------------------------------------------------------------------------------------------------
# Tiny-ImageNet
# --------------------------------------------------------------------------------------------------


def _assert_tiny(s):
    wnids = sorted(TINY_WNIDS)
    assert s.train_x.shape == (12, 3, 64, 64) and s.train_x.dtype == torch.uint8
    assert s.test_x.shape == (6, 3, 64, 64)
    assert s.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert s.test_y.tolist() == [wnids.index(w) for _, w in TINY_VAL]
    for x, y in zip(s.train_x, s.train_y):
        colour = torch.tensor(TINY_COLOURS[wnids[int(y)]]).view(3, 1, 1)
        assert (x.int() - colour).abs().max() <= 3
    assert (s.test_x[0].int() - 128).abs().max() <= 2  # grayscale -> RGB


def test_tiny_imagenet_fake_and_cache(tmp_path, monkeypatch):
    base = make_fake_tiny(tmp_path)
    s = load_splits("tiny-imagenet", tmp_path, val_fraction=0.0, with_test=True)
    _assert_tiny(s)
    caches = sorted(p.name for p in base.glob("*.npz"))
    assert len(caches) == 2 and any("train" in c for c in caches) and any("val" in c for c in caches)
    assert not list(base.glob("*.tmp"))

    # second load (data_dir = the folder itself) reads the cache: decoding is not called
    def no_decode(*a, **k):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(data, "_decode_image", no_decode)
    t = load_splits("tiny-imagenet", base, val_fraction=0.25, split_seed=1, with_test=True)
    assert t.val_x.shape == (3, 3, 64, 64) and t.train_x.shape == (9, 3, 64, 64)
    assert sorted(t.val_y.tolist()) == [0, 1, 2]  # stratified
    assert torch.equal(t.test_x, s.test_x)
    assert load_splits("tiny-imagenet", base).test_x is None  # test only with with_test


def test_tiny_imagenet_cache_invalidated_and_readonly(tmp_path, monkeypatch):
    from PIL import Image

    base = make_fake_tiny(tmp_path)
    load_splits("tiny-imagenet", tmp_path, val_fraction=0.0)
    # a new training image changes the fingerprint: rebuilt
    Image.new("RGB", (64, 64), (0, 0, 0)).save(base / "train" / "n01000000" / "images" / "extra.JPEG")
    s = load_splits("tiny-imagenet", tmp_path, val_fraction=0.0)
    assert s.train_x.shape[0] == 13

    # read-only folder: no cache, still loads
    for p in base.glob("*.npz"):
        p.unlink()

    def refuse(*a, **k):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    s = load_splits("tiny-imagenet", tmp_path, val_fraction=0.0, with_test=True)
    assert s.train_x.shape[0] == 13 and s.test_x.shape[0] == 6
    assert not list(base.glob("*.npz"))


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits("tiny-imagenet", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "tiny-imagenet-200") in msg and "--download" in msg and "wnids.txt" in msg
    with pytest.raises(DataError, match="cs231n"):
        load_splits("tiny-imagenet", tmp_path, download=True)

    base = make_fake_tiny(tmp_path)
    os.remove(base / "val" / "images" / "val_3.JPEG")
    load_splits("tiny-imagenet", tmp_path)  # test split not requested: fine
    with pytest.raises(DataError, match="val_3.JPEG"):
        load_splits("tiny-imagenet", tmp_path, with_test=True)
    os.remove(base / "wnids.txt")
    with pytest.raises(DataError, match="wnids.txt"):
        load_splits("tiny-imagenet", tmp_path)


# --------------------------------------------------------------------------------------------------
# digits and synthetic
# --------------------------------------------------------------------------------------------------


def test_digits():
    s = load_splits("digits", None, val_fraction=0.1, split_seed=0, with_test=True)
    n = s.train_x.shape[0] + s.val_x.shape[0] + s.test_x.shape[0]
    assert n == 1797
    assert s.train_x.shape[1:] == (1, 8, 8) and s.train_x.dtype == torch.uint8
    assert int(s.train_x.max()) == 255
    assert set(s.train_y.unique().tolist()) == set(range(10)) == set(s.test_y.unique().tolist())
    assert s.test_x.shape[0] == round(0.2 * 1797)
    # the test split does not depend on split_seed
    t = load_splits("digits", None, val_fraction=0.2, split_seed=5, with_test=True)
    assert torch.equal(t.test_x, s.test_x) and torch.equal(t.test_y, s.test_y)
    assert t.train_x.shape[0] + t.val_x.shape[0] == 1797 - s.test_x.shape[0]
    # the measured statistics match the data
    x = torch.cat([s.train_x, s.val_x, s.test_x]).double() / 255
    assert abs(x.mean().item() - s.info.mean[0]) < 1e-3 and abs(x.std().item() - s.info.std[0]) < 1e-3


def test_split_indices_disjoint():
    y = torch.arange(103) % 7
    keep, held = data._stratified_split(y, 0.2, 0)
    assert len(held) == round(0.2 * 103) and len(keep) + len(held) == 103
    assert not set(keep.tolist()) & set(held.tolist())
    counts = torch.bincount(y[held], minlength=7)
    assert counts.min() >= 2 and counts.max() <= 3


def test_synthetic():
    s = load_splits("synthetic", None, synthetic_size=400, val_fraction=0.1, with_test=True)
    assert s.train_x.shape == (360, 3, 16, 16) and s.val_x.shape == (40, 3, 16, 16)
    assert s.test_x.shape == (100, 3, 16, 16)
    assert s.train_y.dtype == torch.int64 and set(s.train_y.tolist()) == set(range(10))
    again = load_splits("synthetic", None, synthetic_size=400, val_fraction=0.1, with_test=True)
    assert torch.equal(again.train_x, s.train_x) and torch.equal(again.test_y, s.test_y)
    # learnable: nearest class mean (of the channel means) already separates the classes
    feats = lambda x: x.double().mean((2, 3))  # noqa: E731
    centres = torch.stack([feats(s.train_x[s.train_y == k]).mean(0) for k in range(10)])
    pred = torch.cdist(feats(s.test_x), centres).argmin(1)
    assert (pred == s.test_y).double().mean() > 0.9


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------

RAW = DatasetInfo("raw", 10, 1, 16, (0.0,), (1.0 / 255.0,), 2, True)  # normalisation = identity


def _ids_data(n=50, c=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)
    return x, torch.arange(n)  # labels = sample ids


def _norm(x, info):
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


def test_eval_batches_in_order_cover_once():
    info = DATASETS["synthetic"]
    x, y = _ids_data(50)
    b = Batches(x, y, batch_size=16, device="cpu", info=info, train=False)
    assert len(b) == 4 and b.num_samples == 50
    batches = list(b.epoch(None))
    assert [len(yb) for _, yb in batches] == [16, 16, 16, 2]
    xs = torch.cat([xb for xb, _ in batches])
    assert xs.dtype == torch.float32 and xs.shape == (50, 3, 16, 16)
    assert torch.equal(torch.cat([yb for _, yb in batches]), y)
    torch.testing.assert_close(xs, _norm(x, info), rtol=1e-5, atol=1e-5)
    # eval batches ignore the generator and never augment
    again = torch.cat([xb for xb, _ in b.epoch(torch.Generator().manual_seed(9))])
    assert torch.equal(again, xs)


def test_len_and_drop_last():
    x, y = _ids_data(10)
    info = DATASETS["synthetic"]
    for train in (True, False):
        b = Batches(x, y, batch_size=4, device="cpu", info=info, train=train)
        assert len(b) == 3 and sum(len(yb) for _, yb in b.epoch(torch.Generator())) == 10
        d = Batches(x, y, batch_size=4, device="cpu", info=info, train=train, drop_last=True)
        sizes = [len(yb) for _, yb in d.epoch(torch.Generator())]
        assert len(d) == 2 and sizes == [4, 4]


def test_train_without_augmentation_is_shuffled_originals():
    info = DATASETS["synthetic"]
    x, y = _ids_data(50)
    b = Batches(x, y, batch_size=8, device="cpu", info=info, train=True, crop_padding=0, flip=False)
    batches = list(b.epoch(torch.Generator().manual_seed(0)))
    ids = torch.cat([yb for _, yb in batches])
    assert sorted(ids.tolist()) == list(range(50))  # every sample exactly once
    assert not torch.equal(ids, y)  # shuffled
    assert torch.equal(ids, torch.randperm(50, generator=torch.Generator().manual_seed(0)))
    for xb, yb in batches:
        assert torch.equal(xb, b._normalise(x[yb]))
        torch.testing.assert_close(xb, _norm(x[yb], info), rtol=1e-5, atol=1e-5)


def test_train_determinism():
    x, y = _ids_data(40)
    info = DATASETS["synthetic"]
    b = Batches(x, y, batch_size=16, device="cpu", info=info, train=True, rotation=15.0)
    first = list(b.epoch(torch.Generator().manual_seed(123)))
    second = list(b.epoch(torch.Generator().manual_seed(123)))
    other = list(b.epoch(torch.Generator().manual_seed(124)))
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not all(torch.equal(a[0], c[0]) for a, c in zip(first, other))
    # generator None: global RNG, still a full epoch
    assert sum(len(yb) for _, yb in b.epoch(None)) == 40


def test_crop_shifts_by_at_most_padding():
    n, p, size = 400, 2, 16
    x = torch.full((n, 1, size, size), 100, dtype=torch.uint8)
    x[:, :, 8, 8] = 255  # marker
    b = Batches(x, torch.arange(n), batch_size=64, device="cpu", info=RAW, train=True, crop_padding=p,
                flip=False)
    assert b.crop_padding == p
    shifts = set()
    for xb, _ in b.epoch(torch.Generator().manual_seed(0)):
        v = xb.round().long()[:, 0]
        assert set(v.unique().tolist()) <= {0, 100, 255}
        for img in v:
            (r, c), = (img == 255).nonzero().tolist()
            dy, dx = r - 8, c - 8
            assert abs(dy) <= p and abs(dx) <= p
            shifts.add((dy, dx))
            # zero padding only shows up within p pixels of the border, on the side the image moved away
            zero = img == 0
            if zero.any():
                rows, cols = zero.nonzero().unbind(1)
                assert ((rows < p) | (rows >= size - p) | (cols < p) | (cols >= size - p)).all()
            # zero rows/cols appear exactly where the shift says
            assert int(zero.all(1).sum()) == abs(dy) and int(zero.all(0).sum()) == abs(dx)
    assert len(shifts) == (2 * p + 1) ** 2  # every offset occurs


def test_flip_flips_some():
    n = 200
    x = torch.zeros((n, 1, 16, 16), dtype=torch.uint8)
    x[:, :, :, 8:] = 200  # right half bright
    b = Batches(x, torch.arange(n), batch_size=50, device="cpu", info=RAW, train=True, crop_padding=0,
                flip=True)
    flipped = 0
    for xb, _ in b.epoch(torch.Generator().manual_seed(0)):
        v = xb.round()
        left_bright = v[:, 0, :, :8].eq(200).all(2).all(1)
        right_bright = v[:, 0, :, 8:].eq(200).all(2).all(1)
        assert torch.equal(left_bright, ~right_bright)
        flipped += int(left_bright.sum())
    assert 0.3 * n < flipped < 0.7 * n
    # digits default: no flip
    digits = Batches(x, torch.arange(n), batch_size=8, device="cpu", info=DATASETS["digits"], train=True)
    assert digits.flip is False


def test_crop_and_flip_together_match_reference():
    x, y = _ids_data(30, c=1, size=8)
    b = Batches(x, y, batch_size=7, device="cpu", info=RAW, train=True, crop_padding=3, flip=True)
    gen = torch.Generator().manual_seed(5)
    got = torch.cat([xb for xb, _ in b.epoch(gen)]).round().to(torch.uint8)
    # reference with a Python loop over the same random draws
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(30, generator=g)
    off = torch.randint(0, 7, (30, 2), generator=g)
    flips = torch.rand(30, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    ref = []
    for j, i in enumerate(perm.tolist()):
        oy, ox = off[j].tolist()
        img = padded[i, :, oy : oy + 8, ox : ox + 8]
        ref.append(img.flip(-1) if flips[j] else img)
    assert torch.equal(got, torch.stack(ref))


def test_rotation_changes_images():
    n = 32
    x = torch.zeros((n, 1, 16, 16), dtype=torch.uint8)
    x[:, :, 4:12, 4:12] = 200
    common = dict(batch_size=n, device="cpu", info=RAW, train=True, crop_padding=0, flip=False)
    plain = Batches(x, torch.arange(n), **common)
    rot = Batches(x, torch.arange(n), rotation=15, **common)
    (a, ya), = list(plain.epoch(torch.Generator().manual_seed(0)))
    (r, yr), = list(rot.epoch(torch.Generator().manual_seed(0)))
    assert torch.equal(ya, yr)  # the permutation is drawn first
    torch.testing.assert_close(a, x[ya].float(), atol=1e-3, rtol=0)
    changed = (r - a).abs().amax((1, 2, 3)) > 10
    assert changed.float().mean() > 0.3  # nearest sampling: small angles move few pixels
    # centre pixel stays, corners stay dark, the square's mass is roughly preserved
    assert (r[:, 0, 7:9, 7:9] > 190).all()
    assert (r[:, 0, 0, 0].abs() < 1e-3).all()
    torch.testing.assert_close(r.sum((1, 2, 3)), a.sum((1, 2, 3)), rtol=0.1, atol=0)


def test_rotation_matches_torchvision_nearest():
    """The official pipeline's transforms.RandomRotation(15) on PIL images: NEAREST, zero fill, about
    the centre (torchvision's default interpolation)."""
    import math

    import numpy as np
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    from tfkd_search.batches import _rotate

    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    pil = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    for deg in (3.0, 7.5, 15.0, -10.0):
        ref = torch.from_numpy(np.array(TF.rotate(pil, deg, interpolation=InterpolationMode.NEAREST)))
        ours = _rotate(x.float(), torch.tensor([deg * math.pi / 180]))[0].permute(1, 2, 0)
        assert (ours == ref.float()).all(-1).float().mean() >= 0.99, deg


def test_channels_last_and_shapes():
    info = DATASETS["cifar10"]
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(20) % 10
    b = Batches(x, y, batch_size=8, device="cpu", info=info, train=True, channels_last=True, rotation=15)
    for xb, yb in b.epoch(torch.Generator().manual_seed(0)):
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 32, 32)
        assert xb.is_contiguous(memory_format=torch.channels_last)
        assert yb.dtype == torch.int64
    e = Batches(x, y, batch_size=8, device="cpu", info=info, train=False, channels_last=True)
    xb, _ = next(iter(e.epoch(None)))
    assert xb.is_contiguous(memory_format=torch.channels_last)


def test_batches_bad_input():
    common = dict(batch_size=2, device="cpu", info=DATASETS["cifar10"], train=True)
    with pytest.raises(ValueError):
        Batches(torch.zeros(4, 3, 8, 8), torch.arange(4), **common)  # float images
    with pytest.raises(ValueError):
        Batches(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4), **common)  # 1 channel
    with pytest.raises(ConfigError, match="batch_size"):
        Batches(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4), **{**common, "batch_size": 0})


def test_nvidia_smi_free_memory_is_read_in_bytes():
    """visible_gpu asks nvidia-smi in the search's driver (no CUDA context there): its csv line, and
    what it prints when it cannot tell."""
    from tfkd_search.data import parse_nvidia_smi, visible_gpu

    assert parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81004\n") == ("NVIDIA H100 80GB HBM3", 81004 * 2 ** 20)
    assert parse_nvidia_smi("NVIDIA A100-SXM4-40GB, 40326\nNVIDIA A100-SXM4-40GB, 1\n")[1] == 40326 * 2 ** 20
    for bad in ("", "NVIDIA H100, [N/A]", "No devices were found", ", 12"):
        assert parse_nvidia_smi(bad) is None, bad
    if not torch.cuda.is_available():
        assert visible_gpu() is None and visible_gpu(here=True) is None


def test_check_files_finds_what_the_loader_would_miss_without_reading(tmp_path):
    """data.check_files (what each node of a cluster search runs first): the loader's own file checks
    from the listing alone, the same DataError; --download lets missing CIFAR files pass."""
    from tfkd_search.config import DataConfig
    from tfkd_search.data import check_files

    make_fake_cifar10(tmp_path / "c10")
    check_files(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "c10")))
    with pytest.raises(DataError) as got:
        check_files(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "none")))
    with pytest.raises(DataError) as loaded:
        load_splits("cifar10", tmp_path / "none", val_fraction=0.1, split_seed=0)
    assert str(got.value) == str(loaded.value) and "--download" in str(got.value)
    check_files(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "none"), download=True))
    (tmp_path / "c10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        check_files(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "c10")))

    make_fake_tiny(tmp_path / "tiny")
    check_files(DataConfig(dataset="tiny-imagenet", data_dir=str(tmp_path / "tiny")), with_test=True)
    (tmp_path / "tiny" / "tiny-imagenet-200" / "wnids.txt").unlink()
    with pytest.raises(DataError, match="wnids.txt is missing"):
        check_files(DataConfig(dataset="tiny-imagenet", data_dir=str(tmp_path / "tiny")))
    check_files(DataConfig(dataset="digits"))  # no files needed
