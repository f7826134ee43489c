"""The trainer on CPU with tiny models: schedule, every method, accuracy, resume, divergence, run files
and checkpoint errors. Each training test runs a few epochs of tiny_cnn on sklearn's digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tfkd_search.config import build_run_config
from tfkd_search.errors import CheckpointError
from tfkd_search.io import CHECKPOINT_FORMAT, load_checkpoint
from tfkd_search.runs import run_one
from tfkd_search.trainer import METRICS, EpochReport, TrainResult, lr_at, train

# ---------------------------------------------------------------------------------------------------
# Learning-rate schedule (no training)


def _sched_cfg(**schedule):
    return build_run_config({"device": "cpu", "schedule": schedule})


def test_warmup_per_step_reaches_base_at_end_of_epoch_one():
    cfg = _sched_cfg()
    steps = 10
    lrs = [lr_at(cfg, 0, s, steps) for s in range(steps)]
    assert lrs == pytest.approx([0.1 * (s + 1) / steps for s in range(steps)])
    assert all(b > a for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.1)
    assert lr_at(cfg, 1, 0, steps) == pytest.approx(0.1)


def test_two_epoch_warmup():
    cfg = _sched_cfg(warmup_epochs=2)
    assert lr_at(cfg, 0, 0, 4) == pytest.approx(0.1 / 8)
    assert lr_at(cfg, 1, 0, 4) == pytest.approx(0.1 * 5 / 8)
    assert lr_at(cfg, 1, 3, 4) == pytest.approx(0.1)


def test_no_warmup():
    assert lr_at(_sched_cfg(warmup_epochs=0), 0, 0, 10) == pytest.approx(0.1)


@pytest.mark.parametrize("epoch,factor", [
    (1, 1.0), (59, 1.0), (60, 0.2), (119, 0.2), (120, 0.04), (159, 0.04), (160, 0.008), (199, 0.008),
])
def test_step_decay_truncate(epoch, factor):
    cfg = _sched_cfg()  # 200 epochs, 60/120/160, x0.2
    assert lr_at(cfg, epoch, 0, 10) == pytest.approx(0.1 * factor)
    # truncate: a 70-epoch budget keeps the full schedule's milestones
    cfg70 = _sched_cfg(budget=70, mode="truncate")
    if epoch < 70:
        assert lr_at(cfg70, epoch, 5, 10) == pytest.approx(0.1 * factor)


@pytest.mark.parametrize("epoch,factor", [
    (1, 1.0), (20, 1.0), (21, 0.2), (41, 0.2), (42, 0.04), (55, 0.04), (56, 0.008), (69, 0.008),
])
def test_step_decay_scaled_to_budget(epoch, factor):
    # scale: 60/120/160 of 200 -> 21/42/56 of 70
    cfg = _sched_cfg(budget=70, mode="scale")
    assert lr_at(cfg, epoch, 0, 10) == pytest.approx(0.1 * factor)


def test_lr_scales_with_batch_size():
    cfg = build_run_config({"optim": {"batch_size": 64}})
    assert lr_at(cfg, 5, 0, 10) == pytest.approx(0.05)
    cfg = build_run_config({"optim": {"batch_size": 256, "lr": 0.2, "lr_batch": 128}})
    assert lr_at(cfg, 5, 0, 10) == pytest.approx(0.4)
    assert lr_at(cfg, 0, 9, 10) == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------------
# Teachers (trained once per module)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for model in ("tiny_cnn", "tiny_mlp"):
        cfg = build_run_config({"device": "cpu", "threads": 1, "model": model,
                                "schedule": {"epochs": 1, "milestones": []}})
        res = run_one(cfg, root / model)
        assert res.status == "completed"
        out[model] = root / model / "checkpoint.pt"
        assert out[model].is_file()
    return out


def _finite_history(res: TrainResult) -> None:
    for row in res.history:
        for key in ("train_loss", "train_ce", "train_kl", "val_acc", "val_loss"):
            assert math.isfinite(row[key]), (key, row)


# ---------------------------------------------------------------------------------------------------
# Every method trains


@pytest.mark.parametrize("method,extra", [
    ("ce", {}),
    ("lsr", {"loss.eps": 0.1}),
    ("lsr", {"loss.semantics": "official"}),
    ("tfkd_reg", {"loss.tau": 20, "loss.alpha": 0.5, "loss.a": 0.99}),
    ("tfkd_reg", {"loss.semantics": "official", "loss.multiplier": 10.0}),
    ("kd", {"loss.tau": 4, "loss.alpha": 0.9}),
    ("tfkd_self", {"loss.tau": 4, "loss.alpha": 0.9, "loss.semantics": "official"}),
])
def test_every_method_trains(make_cfg, teachers, method, extra):
    over = dict(extra)
    if method == "kd":
        over["teacher"] = {"checkpoint": str(teachers["tiny_mlp"])}  # another architecture
    if method == "tfkd_self":
        over["teacher"] = {"checkpoint": str(teachers["tiny_cnn"])}
    cfg = make_cfg(over, method=method)
    reports: list[EpochReport] = []
    res = train(cfg, report=reports.append)
    assert res.status == "completed" and res.epochs == 2 and len(res.history) == 2
    _finite_history(res)
    assert [r.epoch for r in reports] == [1, 2]
    assert [r.status for r in reports] == ["running", "completed"]
    if method in ("ce",):
        assert all(r["train_kl"] == 0.0 for r in res.history)
    if method in ("kd", "tfkd_self", "tfkd_reg"):
        assert all(r["train_kl"] > 0.0 for r in res.history)
        # total = (1-alpha)*CE + w*KL with w > 0: the total differs from the CE part
        assert all(r["train_loss"] != r["train_ce"] for r in res.history)
    assert 0.0 <= res.best_val_acc <= 1.0
    assert res.best_val_acc == max(r["val_acc"] for r in res.history)
    assert res.last_val_acc == res.history[-1]["val_acc"]
    assert res.test_acc is None and res.run_dir is None


def test_trainer_writes_no_files(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reports: list[EpochReport] = []
    res = train(make_cfg(), report=reports.append)
    assert res.status == "completed" and len(reports) == 2
    assert reports[-1].make_checkpoint()["epoch"] == 2  # what a caller may write, on request
    assert list(tmp_path.iterdir()) == []


def test_teacher_is_frozen_and_student_changes(make_cfg, teachers, monkeypatch):
    # train() writes no files, so the teacher's checkpoint cannot change on disk: watch the teacher
    # module it trains against instead (weights and BatchNorm buffers), and the student's weights
    import tfkd_search.trainer as trainer_mod

    loaded: list[tuple[torch.nn.Module, dict[str, torch.Tensor]]] = []
    real_load_teacher = trainer_mod.load_teacher

    def spy(*args, **kwargs):
        teacher = real_load_teacher(*args, **kwargs)
        loaded.append((teacher, {k: v.detach().clone() for k, v in teacher.state_dict().items()}))
        return teacher

    monkeypatch.setattr(trainer_mod, "load_teacher", spy)
    students: list[dict[str, torch.Tensor]] = []

    def report(r: EpochReport) -> None:
        students.append({k: v.detach().clone() for k, v in r.make_checkpoint()["model"].items()})

    cfg = make_cfg({"teacher": {"checkpoint": str(teachers["tiny_cnn"])}}, method="tfkd_self")
    assert train(cfg, report=report).status == "completed"
    (teacher, before), = loaded
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert before.keys() == after.keys() and before
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert len(students) == 2
    assert any(not torch.equal(students[0][k], students[1][k]) for k in students[0])


def test_tiny_cnn_reaches_090_on_digits(make_cfg):
    cfg = make_cfg({"schedule": {"epochs": 8, "milestones": [5, 7]}, "optim.lr": 0.1}, method="ce")
    res = train(cfg)
    assert res.status == "completed" and res.epochs == 8
    assert res.best_val_acc >= 0.9, [round(r["val_acc"], 3) for r in res.history]


# ---------------------------------------------------------------------------------------------------
# Resume


class _Stop(Exception):
    pass


def _stop_after(n: int):
    def report(ep: EpochReport) -> None:
        if ep.epoch == n:
            raise _Stop

    return report


def test_resume_is_bitwise_identical(make_cfg, tmp_path):
    cfg = make_cfg({"schedule": {"epochs": 4, "milestones": [3]}, "checkpoint_every": 1})
    full = run_one(cfg, tmp_path / "full")

    part = tmp_path / "part"
    with pytest.raises(_Stop):
        run_one(cfg, part, report=_stop_after(2))
    assert load_checkpoint(part / "checkpoint.pt")["epoch"] == 2
    assert not (part / "summary.json").exists()
    seen: list[int] = []
    res = run_one(cfg, part, resume=True, report=lambda ep: seen.append(ep.epoch))
    assert seen == [3, 4]
    assert res.status == "completed" and res.epochs == 4

    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(part / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # the same trajectory: identical losses and accuracies per epoch
    for ra, rb in zip(full.history, res.history):
        for key in ("epoch", "train_loss", "train_ce", "val_acc", "val_loss", "lr"):
            assert ra[key] == rb[key], key
    assert full.best_val_acc == res.best_val_acc

    import pandas as pd

    df = pd.read_parquet(part / "metrics.parquet")
    assert len(df) == 4 and df["epoch"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_resume_without_checkpoint_starts_fresh(make_cfg, tmp_path):
    res = run_one(make_cfg({"schedule.epochs": 1, "schedule.milestones": []}), tmp_path, resume=True)
    assert res.status == "completed" and res.epochs == 1


def test_resume_rejects_checkpoint_of_another_model(make_cfg, teachers, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(teachers["tiny_mlp"].read_bytes())
    with pytest.raises(CheckpointError, match="tiny_mlp"):
        run_one(make_cfg(), run, resume=True)


def test_resume_rejects_corrupt_checkpoint(make_cfg, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        run_one(make_cfg(), run, resume=True)


# ---------------------------------------------------------------------------------------------------
# Divergence


def test_divergence_is_reported_not_raised(make_cfg, tmp_path):
    cfg = make_cfg({"optim.lr": 1e6, "schedule": {"epochs": 3, "milestones": [2], "warmup_epochs": 0}})
    reports: list[EpochReport] = []
    res = run_one(cfg, tmp_path, report=reports.append)
    assert res.status == "diverged"
    assert res.epochs == len(res.history) < 3
    assert reports[-1].status == "diverged"
    assert not math.isfinite(res.history[-1]["train_loss"])
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_no_nan)
    assert summary["status"] == "diverged"
    if res.epochs == 1:  # no checkpoint of a diverged epoch
        assert not (tmp_path / "checkpoint.pt").exists()


def _no_nan(name: str) -> None:
    raise AssertionError(f"summary.json is not strict JSON: {name}")


def test_summary_is_strict_json_with_null_for_missing(make_cfg, tmp_path):
    # no validation split: no val accuracy to report, and no test split: no test accuracy
    res = run_one(make_cfg({"data.val_fraction": 0.0}), tmp_path)
    assert res.status == "completed"
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_no_nan)
    assert summary["best_val_acc"] is None and summary["last_val_acc"] is None
    assert summary["test_acc"] is None and summary["epochs"] == 2


def test_divergence_with_huge_multiplier(make_cfg):
    cfg = make_cfg({"loss": {"multiplier": 1e30, "alpha": 1.0, "tau": 1.0}, "schedule.epochs": 2},
                   method="tfkd_reg")
    res = train(cfg)
    assert res.status == "diverged"


# ---------------------------------------------------------------------------------------------------
# Run folder


def test_run_folder_files(make_cfg, tmp_path):
    import pandas as pd

    cfg = make_cfg({"keep_checkpoints": [1], "schedule": {"epochs": 2, "milestones": [1]}})
    res = run_one(cfg, tmp_path)
    df = pd.read_parquet(tmp_path / "metrics.parquet")
    assert set(df.columns) == {"epoch", *METRICS}
    assert len(df) == 2 and df["epoch"].tolist() == [1.0, 2.0]
    assert df["lr"].tolist() == pytest.approx([0.1, 0.02])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert summary["best_val_acc"] == pytest.approx(res.best_val_acc)
    assert "history" not in summary
    config = json.loads((tmp_path / "config.json").read_text())
    assert build_run_config(config) == cfg
    e1 = load_checkpoint(tmp_path / "epoch_1.pt")
    assert e1["epoch"] == 1 and e1["format"] == CHECKPOINT_FORMAT
    assert not (tmp_path / "epoch_2.pt").exists()
    last = load_checkpoint(tmp_path / "checkpoint.pt")
    assert last["epoch"] == 2 and last["model_name"] == "tiny_cnn" and last["num_classes"] == 10
    # the final checkpoint is loadable with weights_only=True
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)


def test_keep_checkpoints_independent_of_checkpoint_every(make_cfg, tmp_path):
    cfg = make_cfg({"keep_checkpoints": [1], "checkpoint_every": 2,
                    "schedule": {"epochs": 3, "milestones": [2]}})
    seen: list[int] = []

    def report(ep: EpochReport) -> None:
        if ep.epoch == 1:  # after epoch 1: only the kept copy, no rolling checkpoint yet
            assert not (tmp_path / "checkpoint.pt").exists()
        if ep.epoch == 2:
            seen.append(load_checkpoint(tmp_path / "checkpoint.pt")["epoch"])

    run_one(cfg, tmp_path, report=report)
    assert load_checkpoint(tmp_path / "epoch_1.pt")["epoch"] == 1
    assert seen == [2]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 3  # the last epoch is always saved


def test_resume_of_a_completed_run_trains_nothing(make_cfg, tmp_path):
    cfg = make_cfg({"schedule": {"epochs": 1, "milestones": []}})
    first = run_one(cfg, tmp_path)
    reports: list[EpochReport] = []
    again = run_one(cfg, tmp_path, resume=True, report=reports.append)
    assert reports == []
    assert again.status == "completed" and again.epochs == 1
    assert again.history[0]["train_loss"] == first.history[0]["train_loss"]


def test_evaluate_test_fills_test_acc(make_cfg):
    res = train(make_cfg(evaluate_test=True))
    assert res.test_acc is not None and 0.0 <= res.test_acc <= 1.0
    assert res.test_loss is not None and math.isfinite(res.test_loss)
    assert res.test_acc > 0.2  # 2 epochs of tiny_cnn on digits is far above chance (0.1)


# ---------------------------------------------------------------------------------------------------
# Teacher checkpoint errors


def _kd_cfg(make_cfg, path, **teacher):
    return make_cfg({"teacher": {"checkpoint": str(path), **teacher}, "schedule.epochs": 1,
                     "schedule.milestones": []}, method="kd")


def _expect_checkpoint_error(cfg, path) -> str:
    with pytest.raises(CheckpointError) as exc:
        train(cfg)
    msg = str(exc.value)
    assert str(path) in msg, msg
    return msg


def test_teacher_missing(make_cfg, tmp_path):
    p = tmp_path / "nope.pt"
    assert "not found" in _expect_checkpoint_error(_kd_cfg(make_cfg, p), p)


def test_teacher_truncated(make_cfg, teachers, tmp_path):
    data = teachers["tiny_cnn"].read_bytes()
    p = tmp_path / "half.pt"
    p.write_bytes(data[: len(data) // 2])
    _expect_checkpoint_error(_kd_cfg(make_cfg, p), p)


def test_teacher_random_bytes(make_cfg, tmp_path):
    p = tmp_path / "random.pt"
    p.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                dtype=torch.uint8).numpy().tobytes())
    _expect_checkpoint_error(_kd_cfg(make_cfg, p), p)


def test_teacher_empty_file(make_cfg, tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    _expect_checkpoint_error(_kd_cfg(make_cfg, p), p)


@pytest.mark.parametrize("obj", [torch.zeros(3), {"model": {}}, [1, 2]])
def test_teacher_file_without_weights(make_cfg, tmp_path, obj):
    p = tmp_path / "plain.pt"
    torch.save(obj, p)
    msg = _expect_checkpoint_error(_kd_cfg(make_cfg, p), p)
    assert "holds no weights: expected a tfkd-search checkpoint, a state_dict" in msg, msg


def test_teacher_of_another_architecture(make_cfg, teachers):
    p = teachers["tiny_cnn"]
    msg = _expect_checkpoint_error(_kd_cfg(make_cfg, p, model="tiny_mlp"), p)
    assert "tiny_mlp" in msg


def test_tfkd_self_teacher_of_another_architecture(make_cfg, teachers):
    p = teachers["tiny_mlp"]
    cfg = make_cfg({"teacher": {"checkpoint": str(p)}}, method="tfkd_self")
    msg = _expect_checkpoint_error(cfg, p)
    assert "tiny_mlp" in msg and "tiny_cnn" in msg


def test_teacher_of_another_class_count(make_cfg, teachers, tmp_path):
    state = torch.load(teachers["tiny_cnn"], weights_only=True)
    state["num_classes"] = 100
    p = tmp_path / "c100.pt"
    torch.save(state, p)
    assert torch.load(p, weights_only=True)["num_classes"] == 100
    msg = _expect_checkpoint_error(_kd_cfg(make_cfg, p), p)
    assert "100" in msg and "10" in msg


def test_teacher_with_weights_of_another_shape(make_cfg, teachers, tmp_path):
    state = torch.load(teachers["tiny_cnn"], weights_only=True)
    state["model"] = {"fc.weight": torch.zeros(3, 3)}
    p = tmp_path / "bad_weights.pt"
    torch.save(state, p)
    _expect_checkpoint_error(_kd_cfg(make_cfg, p), p)


def test_teacher_of_another_dataset_with_same_class_count(make_cfg, tmp_path):
    # synthetic (3 channels) and digits (1 channel) both have 10 classes
    cfg = make_cfg({"data": {"dataset": "synthetic", "synthetic_size": 64},
                    "schedule": {"epochs": 1, "milestones": []}})
    run_one(cfg, tmp_path / "t")
    p = tmp_path / "t" / "checkpoint.pt"
    msg = _expect_checkpoint_error(_kd_cfg(make_cfg, p), p)
    assert "synthetic" in msg and "digits" in msg


def test_last_epoch_reports_which_validation_images_it_got_right(make_cfg):
    from tfkd_search.stats import unpack_correct

    seen: list[EpochReport] = []
    cfg = make_cfg({"schedule": {"epochs": 3, "milestones": [2]}}, method="ce")
    res = train(cfg, report=seen.append)
    assert [ep.val_correct is not None for ep in seen] == [False, False, True]
    bits = unpack_correct(seen[-1].val_correct)
    assert res.val_correct == seen[-1].val_correct
    assert len(bits) == 144 and sum(bits) / len(bits) == pytest.approx(res.last_val_acc)  # 10% of digits
    assert res.summary()["val_correct"] == res.val_correct and res.test_correct is None  # no test split
