"""Your own model: references (`_target_`, torchvision:, timm:), the checks before anything starts,
teachers from plain weights, the CUDA-graph fallback's decision logic, code shipping to Ray trials,
and exports that carry the reference. The models are in tests/usermodels/byo_nets.py."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

from _proc import cli_env, run_cli, search_runs
from tfkd_search.cli import main
from tfkd_search.config import build_run_config
from tfkd_search.errors import CheckpointError, ConfigError
from tfkd_search.modelref import parse_model_ref
from tfkd_search.trainer import StepRunner

USER = Path(__file__).resolve().parent / "usermodels"
NET = {"_target_": "byo_nets:build", "width": 4}


def run_config(model: Any = None, **top: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": "byo", "model": model or dict(NET), "method": "ce", "device": "cpu",
                           "threads": 1, "data": {"dataset": "digits"},
                           "schedule": {"epochs": 1, "milestones": [], "warmup_epochs": 0}}
    cfg.update(top)
    return cfg


def space_doc(name: str, base: dict[str, Any], **params: dict[str, Any]) -> dict[str, Any]:
    """A search space over `params` (dotted names with __ for the dots), no early stopping."""
    return {"name": name, "base": base, "search": {
        "params": {k.replace("__", "."): v for k, v in params.items()}, "scheduler": {"kind": "none"}}}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def byo() -> Any:
    """The test models' module, imported as a reference to it would import it."""
    if str(USER) not in sys.path:
        sys.path.insert(0, str(USER))
    import byo_nets

    return byo_nets


# ------------------------------------------------------------------------------------------------
# The reference syntax, checked without torch or the user's code


@pytest.mark.parametrize("value,kind,label", [
    ("resnet18", "zoo", "resnet18"),
    ("torchvision:resnet18", "torchvision", "torchvision:resnet18"),
    ("timm:vit_tiny_patch16_224.augreg_in21k", "timm", "timm:vit_tiny_patch16_224.augreg_in21k"),
    ({"_target_": "pkg.nets:build", "width": 64}, "target", "pkg.nets:build(width=64)"),
    ({"_target_": "pkg.nets.build"}, "target", "pkg.nets.build"),
    ({"_target_": "timm:resnet18", "drop_rate": 0.1}, "timm", "timm:resnet18(drop_rate=0.1)"),
])
def test_reference_forms(value, kind, label):
    ref = parse_model_ref(value)
    assert (ref.kind, ref.label()) == (kind, label)
    assert build_run_config({"model": value}).model == value  # kept as written (exports need it)


@pytest.mark.parametrize("value,needle", [
    ("resnet19", "Did you mean 'resnet18'? Available: densenet121"),
    ("pkg.nets:build", "written as a mapping: {_target_: 'pkg.nets:build'}"),
    ({"width": 3}, "needs a _target_ key"),
    ({"_target_": "resnet18"}, "is a zoo model: write model: resnet18"),
    ({"_target_": "nets"}, "is not an import path"),
    ({"_target_": "pkg.nets:build", "_partial_": True}, "got '_partial_'"),
    ({"_target_": "torchvision:resnet18", "weights": "DEFAULT"}, "drop weights"),
    ({"_target_": "timm:resnet18", "pretrained": True}, "drop pretrained"),
    ("timm:", "needs a model name after the colon"),
    (7, "got a int"),
])
def test_bad_reference_syntax_is_a_config_error(value, needle):
    with pytest.raises(ConfigError) as exc:
        build_run_config({"model": value})
    assert "config: model: " in str(exc.value) and needle in str(exc.value), str(exc.value)


def test_validation_of_references_imports_neither_torch_nor_the_code(tmp_path):
    import subprocess

    cfg = write(tmp_path / "run.yaml", run_config({"_target_": "not_imported_module:build"}))
    code = ("import sys; from tfkd_search.config import load_run_config; "
            f"load_run_config({str(cfg)!r}); print('torch' in sys.modules, "
            "'not_imported_module' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_model_arguments_are_config_paths_for_set_and_search(tmp_path):
    from tfkd_search.spaces import load_space

    doc = space_doc("args", run_config(), model__drop_rate={"kind": "grid", "values": [0.0, 0.5]})
    space = load_space(write(tmp_path / "space.yaml", doc), {"model.width": 6})
    assert space.base.model == {"_target_": "byo_nets:build", "width": 6}
    trial = space.trial_config({"model.drop_rate": 0.5})
    assert trial.model == {"_target_": "byo_nets:build", "width": 6, "drop_rate": 0.5}
    doc["base"]["model"] = "tiny_cnn"
    with pytest.raises(ConfigError) as exc:
        load_space(write(tmp_path / "zoo.yaml", doc))
    assert "search.params.model.drop_rate: model.drop_rate is a keyword argument of a model " \
           "reference, but base.model is 'tiny_cnn'" in str(exc.value), str(exc.value)


# ------------------------------------------------------------------------------------------------
# The checks before anything starts: import, build, forward (meta device), size


def test_check_counts_parameters_and_flops_of_an_installed_model():
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    from tfkd_search.preflight_model import DataShape, check_model

    facts = check_model(parse_model_ref("torchvision:resnet18"), DataShape(10, 3, 16, 16))
    ref = torchvision.models.resnet18(num_classes=10).eval()
    with FlopCounterMode(display=False) as counter:
        ref(torch.zeros(1, 3, 16, 16))
    assert facts.device == "meta"
    assert facts.params == sum(p.numel() for p in ref.parameters())
    assert facts.flops == counter.get_total_flops() > 0
    assert facts.mlflow_params()["model_reference"] == "torchvision:resnet18"


def test_a_model_that_needs_real_values_is_checked_on_the_cpu():
    from tfkd_search.preflight_model import DataShape, check_model

    byo()
    facts = check_model(parse_model_ref({"_target_": "byo_nets:syncs"}), DataShape(10, 1, 8, 8))
    assert facts.device == "cpu" and "item()" in facts.note and "CUDA-graph" in facts.note
    assert facts.params == sum(p.numel() for p in byo().syncs(10).parameters())


def test_the_dataset_shape_comes_from_one_function():
    from tfkd_search.config import DataConfig
    from tfkd_search.preflight_model import DataShape, dataset_shape

    assert dataset_shape(DataConfig(dataset="digits")) == DataShape(10, 1, 8, 8)
    assert dataset_shape(DataConfig(dataset="cifar100")) == DataShape(100, 3, 32, 32)


# Bad input through the CLI: exit 2, one message naming the file, key, value and the fix.
BAD = [
    ("module-missing", {"_target_": "no_such_module_xyz:build"},
     ("cannot import 'no_such_module_xyz'", "--code-dir DIR", "pip install")),
    ("attribute-missing", {"_target_": "byo_nets:biuld"},
     ("module 'byo_nets'", "has no attribute 'biuld'", "Did you mean 'build'?")),
    ("callable-raises", {"_target_": "byo_nets:raises", "width": 3},
     ("calling byo_nets:raises(width=3, num_classes=10) raised ValueError: width must be even",
      "fix the keyword arguments beside _target_")),
    ("bad-keyword", {"_target_": "byo_nets:build", "widht": 3},
     ("raised TypeError", "unexpected keyword argument 'widht'")),
    ("returns-no-module", {"_target_": "byo_nets:not_a_module"},
     ("returned a list, not a torch.nn.Module",)),
    ("returns-a-tuple", {"_target_": "byo_nets:tuple_out"},
     ("in train mode returns a tuple of 2 outputs", "return only the logits")),
    ("returns-a-dict", {"_target_": "byo_nets:dict_out"},
     ("returns a dict (keys 'logits')", "return the logits tensor itself")),
    ("wrong-number-of-outputs", {"_target_": "byo_nets:wrong_classes"},
     ("returns 11 outputs per image but the dataset has 10 classes", "num_classes argument")),
    ("num-classes-disagrees", {"_target_": "byo_nets:build", "num_classes": 100},
     ("num_classes is 100 but the dataset has 10 classes", "drop num_classes")),
    ("wrong-channels", "torchvision:resnet18",
     ("expected input[2, 1, 8, 8] to have 3 channels", "images have 1 channel(s)")),
    ("unknown-torchvision-model", "torchvision:resnet181",
     ("torchvision has no classification model 'resnet181'", "Did you mean 'resnet18'?")),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_model_through_the_cli(case, tmp_path, capsys):
    _, model, needles = case
    cfg = write(tmp_path / "run.yaml", run_config(model))
    code = main(["validate", "--config", str(cfg), "--code-dir", str(USER)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("tfkd-search: error:") == 1, err
    assert f"{cfg}: model: " in err, err  # the file and the key
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err}"


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed here")
def test_timm_without_timm_names_the_extra(tmp_path, capsys):
    cfg = write(tmp_path / "run.yaml", run_config({"_target_": "timm:resnet18", "drop_rate": 0.1}))
    assert main(["validate", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: model: timm is not installed" in err
    assert "pip install 'tfkd-search[timm]'" in err and "(got 'timm:resnet18(drop_rate=0.1)')" in err


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs timm (tfkd-search[timm])")
def test_timm_models_are_checked_and_train(tmp_path, capsys):
    """With timm installed: a timm model gets the dataset's classes and channels (digits: 10, 1),
    keyword arguments beside the shorthand reach timm.create_model, a misspelt name gets timm's
    closest, and a run trains (pretrained=False: nothing is downloaded)."""
    import timm

    from tfkd_search.models import build_model
    from tfkd_search.preflight_model import DataShape, check_model

    ref = parse_model_ref({"_target_": "timm:resnet18", "drop_rate": 0.1})
    facts = check_model(ref, DataShape(10, 1, 8, 8))
    want = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)
    assert facts.params == sum(p.numel() for p in want.parameters())
    cfg = write(tmp_path / "bad.yaml", run_config("timm:resnet181"))
    assert main(["validate", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: model: " in err and "timm has no model 'resnet181'" in err and "'resnet18'" in err
    cfg = write(tmp_path / "run.yaml", run_config({"_target_": "timm:resnet18", "drop_rate": 0.1}))
    built = build_model({"_target_": "timm:resnet18", "drop_rate": 0.1}, 10, 1)
    assert built.drop_rate == 0.1 and built.fc.out_features == 10 and built.conv1.in_channels == 1
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    summary = yaml.safe_load((tmp_path / "out" / "seed0" / "summary.json").read_text())
    assert summary["status"] == "completed" and 0.0 < summary["last_val_acc"] <= 1.0, summary


def test_a_bad_model_stops_a_search_before_ray_starts(tmp_path):
    env = cli_env()
    doc = space_doc("bad", run_config({"_target_": "byo_nets:tuple_out"}),
                    loss__tau={"kind": "grid", "values": [1.0]})
    space = write(tmp_path / "space.yaml", doc)
    res = run_cli(["--space", str(space), "--storage", str(tmp_path / "runs"), "--code-dir", str(USER)],
                  env, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{space}: base.model: byo_nets:tuple_out in train mode returns a tuple" in res.stderr
    assert "Traceback" not in res.stderr and "Ray" not in res.stdout
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # width 0, on purpose
def test_a_searched_model_argument_is_checked_for_each_value(tmp_path, capsys):
    doc = space_doc("widths", run_config(), model__width={"kind": "grid", "values": [4, 0]})
    space = write(tmp_path / "space.yaml", doc)
    assert main(["validate", str(space), "--code-dir", str(USER)]) == 2
    err = capsys.readouterr().err
    assert f"{space}: search.params.model.width: value 0 gives a model that does not work" in err, err


def test_a_model_broken_by_set_names_the_set(tmp_path, capsys):
    cfg = write(tmp_path / "run.yaml", run_config())
    assert main(["validate", "--config", str(cfg), "--code-dir", str(USER),
                 "--set", "model.widht=3"]) == 2
    err = capsys.readouterr().err
    assert f"a model does not work ({cfg} with command-line overrides)" in err, err
    assert "--set model.widht=3: model: calling byo_nets:build(width=4, widht=3, num_classes=10) " \
           "raised TypeError" in err, err


def test_code_dir_that_does_not_exist(tmp_path, capsys):
    cfg = write(tmp_path / "run.yaml", run_config())
    assert main(["validate", "--config", str(cfg), "--code-dir", str(tmp_path / "nope")]) == 2
    assert f"--code-dir {tmp_path / 'nope'}: does not exist" in capsys.readouterr().err


def test_dry_run_plan_shows_size_and_cost(tmp_path, capsys):
    doc = space_doc("plan", run_config(), loss__tau={"kind": "grid", "values": [1.0]})
    space = write(tmp_path / "space.yaml", doc)
    assert main(["--space", str(space), "--dry-run", "--code-dir", str(USER),
                 "--storage", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    params = sum(p.numel() for p in byo().build(10, width=4).parameters())
    assert f"model byo_nets:build(width=4): {params:,} parameters, " in out, out
    assert "FLOPs per image" in out and "dry run: every check passed" in out


# ------------------------------------------------------------------------------------------------
# Teachers from plain weights


def _teacher_weights(width: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return byo().build(10, width=width).state_dict()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module-prefix", "model-prefix"])
def test_load_weights_reads_the_usual_containers(wrap, tmp_path):
    from tfkd_search.io import load_weights

    sd = _teacher_weights()
    doc: Any = {
        "plain": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "model": {"model": sd, "opt": {}},
        "module-prefix": {f"module.{k}": v for k, v in sd.items()},
        "model-prefix": {"state_dict": {f"model.{k}": v for k, v in sd.items()}},
    }[wrap]
    torch.save(doc, tmp_path / "w.pt")
    weights, state = load_weights(tmp_path / "w.pt")
    assert state is None and list(weights) == list(sd)
    assert all(torch.equal(weights[k], sd[k]) for k in sd)


def test_load_weights_refuses_a_file_without_weights(tmp_path):
    from tfkd_search.io import load_weights

    torch.save({"epoch": 3, "note": "x"}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"holds no weights: .* found 'epoch', 'note'"):
        load_weights(tmp_path / "w.pt")


@pytest.mark.parametrize("method", ["kd", "tfkd_self"])
def test_reference_teacher_from_plain_weights_trains(method, tmp_path):
    from tfkd_search.trainer import load_teacher, train

    sd = _teacher_weights()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "teacher.pt")
    teacher = {"checkpoint": str(tmp_path / "teacher.pt")}
    if method == "kd":
        teacher["model"] = dict(NET)
    cfg = build_run_config(run_config(method=method, teacher=teacher))
    loaded = load_teacher(cfg, 1, torch.device("cpu"))
    assert all(torch.equal(loaded.state_dict()[k], sd[k]) for k in sd)
    result = train(cfg)
    assert result.status == "completed" and result.epochs == 1
    assert result.history[0]["train_kl"] > 0  # the teacher's logits reached the loss


def test_teacher_weights_that_do_not_fit_name_the_file_and_keys(tmp_path, capsys):
    sd = _teacher_weights(width=8)
    sd["extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "teacher.pt")
    cfg = write(tmp_path / "run.yaml", run_config(method="kd", teacher={
        "checkpoint": str(tmp_path / "teacher.pt"), "model": dict(NET)}))
    code = main(["train", "--config", str(cfg), "--code-dir", str(USER), "--no-mlflow",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{cfg}: teacher.checkpoint: teacher checkpoint {tmp_path / 'teacher.pt'}: its weights do " \
           f"not fit 'byo_nets:build(width=4)'" in err, err
    assert "unexpected keys: 'extra.weight'" in err
    assert "shapes differ (file vs model): features.0.weight (8, 1, 3, 3) vs (4, 1, 3, 3)" in err
    assert not (tmp_path / "out").exists()


def test_plain_weights_for_kd_need_the_architecture(tmp_path, capsys):
    torch.save(_teacher_weights(), tmp_path / "teacher.pt")
    cfg = write(tmp_path / "run.yaml", run_config(method="kd", teacher={
        "checkpoint": str(tmp_path / "teacher.pt")}))
    assert main(["train", "--config", str(cfg), "--code-dir", str(USER), "--no-mlflow",
                 "--out", str(tmp_path / "out")]) == 2
    assert "holds plain weights (a state_dict), which do not say what architecture" in \
        capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# CUDA graphs: the fallback's decision logic (the capture itself needs a GPU: tests/test_gpu.py)


class _CaptureFails(StepRunner):
    """A StepRunner forced into graph mode on the CPU whose capture raises as CUDA does for `.item()`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args[:-1], True)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")


def _runner_pair() -> tuple[Any, Any]:
    from tfkd_search import losses

    cfg = build_run_config(run_config())
    out = []
    for make in (StepRunner, _CaptureFails):
        torch.manual_seed(0)
        model = byo().build(10, width=4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
        out.append(make(model, None, opt, losses.loss_fn_for(cfg), torch.device("cpu"), False, False))
    return out[0], out[1]


def test_a_failed_capture_goes_on_eagerly_with_the_same_steps():
    eager, fallback = _runner_pair()
    torch.manual_seed(1)
    batches = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(6)]
    for i, (x, y) in enumerate(batches):
        eager(x, y, 0.1)
        fallback(x, y, 0.1)
        if i < fallback.WARMUP:  # warm-up steps, then the capture is tried at step 4
            assert fallback.graphs and fallback.eager_reason is None
    assert not fallback.graphs and fallback.graph is None
    assert "could not be captured in a CUDA graph (RuntimeError: CUDA error: operation not permitted" \
        in fallback.eager_reason and "cuda_graphs: false" in fallback.eager_reason
    for a, b in zip(eager.model.parameters(), fallback.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)  # the batch at the failed capture was trained too


def test_the_fallback_is_reported_once_and_tagged_in_mlflow(tmp_path, monkeypatch):
    from tfkd_search import trainer
    from tfkd_search.runs import train_seeds
    from tfkd_search.tracking import GRAPHS_TAG, Tracker

    monkeypatch.setattr(trainer, "StepRunner", _CaptureFails)
    cfg = build_run_config(run_config(schedule={"epochs": 2, "milestones": [1], "warmup_epochs": 0},
                                      optim={"batch_size": 256}))
    reports = []
    result = trainer.train(cfg, report=reports.append)
    reasons = [r.eager_reason for r in reports]
    assert reasons[0] and reasons[1:] == [None], reasons  # said once, on the first epoch after it
    assert result.eager_reason == reasons[0]
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "graphs")
    lines: list[str] = []
    train_seeds(cfg, [0], tmp_path / "out", resume=False, gpus=0, tracker=tracker, printer=lines.append)
    assert sum("note: the training step could not be captured" in line for line in lines) == 1, lines
    (seed_run,) = [r for r in tracker.children()]
    assert seed_run.data.tags[GRAPHS_TAG].startswith("off: the training step could not be captured")


def test_the_search_progress_says_once_why_a_trial_went_eager(tmp_path, capsys):
    """The driver's Tune callback: a result carrying the reason prints it and tags the trial's run."""
    from types import SimpleNamespace

    from tfkd_search.runfolder import Ranking
    from tfkd_search.search.progress import make_callback
    from tfkd_search.search.trial import EAGER_REASON
    from tfkd_search.tracking import GRAPHS_TAG, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Tracker(uri, "eager").start_parent("key", "search-eager")
    callback = make_callback({"uri": uri, "experiment": "eager", "parent_id": parent}, ["loss.tau"],
                             2, Ranking(), 1, print)
    trial = SimpleNamespace(trial_id="t1", config={"loss.tau": 1.0}, last_result={}, status="RUNNING")
    callback.on_trial_start(0, [trial], trial)
    why = "the training step could not be captured in a CUDA graph (RuntimeError: x); running eagerly"
    for epoch, extra in ((1, {EAGER_REASON: why}), (2, {})):
        callback.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_acc": 0.5, "score": 0.5,
                                                    **extra})
    out = capsys.readouterr().out
    assert out.count(f"trial t1: {why}") == 1, out
    (run,) = callback.tracker.children()
    assert run.data.tags[GRAPHS_TAG] == f"off: {why}"


@pytest.mark.parametrize("setting,cuda,conv,want", [
    (None, True, True, True), (None, True, False, False), (None, False, True, False),
    (True, False, False, True), (False, True, True, False)])
def test_channels_last_only_for_convolutions(setting, cuda, conv, want):
    from tfkd_search.models import build_model
    from tfkd_search.trainer import wants_channels_last

    model = build_model("tiny_cnn" if conv else "tiny_mlp", 10, 1)
    assert wants_channels_last(setting, cuda, model) is want


# ------------------------------------------------------------------------------------------------
# Code shipping (the cluster cases are in tests/test_cluster.py)


def test_py_modules_ship_a_code_dir_and_cluster_only_the_current_folders_modules(tmp_path, monkeypatch):
    from tfkd_search.usercode import JOB_CONFIG_ENV, py_modules, use_code_dirs

    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "__init__.py").write_text("")
    (code / "nets.py").write_text("")
    (code / "data").mkdir()  # no package: not shipped
    (code / "notes.txt").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    (work / "mynets_here.py").write_text("def build(num_classes): ...\n")
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", list(sys.path))
    dirs = use_code_dirs([str(code)])
    assert sys.path[:2] == [str(code), str(work)]
    shipped = [str(code / "nets.py"), str(code / "pkg")]
    assert py_modules(dirs, ["mynets_here:build", "torch.nn:Linear"], cluster=False) == shipped
    assert py_modules(dirs, ["mynets_here:build", "torch.nn:Linear"], cluster=True) == \
        [*shipped, str(work / "mynets_here.py")]  # installed packages are not shipped
    monkeypatch.setenv(JOB_CONFIG_ENV, '{"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}')
    assert py_modules(dirs, ["mynets_here:build"], cluster=True) == shipped


@pytest.mark.ray
@pytest.mark.slow
def test_search_with_user_models_from_the_current_folder_and_a_code_dir(tmp_path):
    """An embedded-Ray search whose student module is in the current folder and whose teacher's
    module is in --code-dir (not on any worker's path otherwise), with the teacher's plain weights;
    it searches a model argument, exports the reference unchanged, and `train` runs the export."""
    work, code = tmp_path / "work", tmp_path / "code"
    work.mkdir()
    code.mkdir()
    shutil.copy(USER / "byo_nets.py", work / "cwd_nets.py")
    shutil.copy(USER / "byo_nets.py", code / "dir_nets.py")
    torch.save({f"module.{k}": v for k, v in _teacher_weights().items()}, work / "teacher.pt")
    student = {"_target_": "cwd_nets:build", "width": 4}
    teacher = {"_target_": "dir_nets:build", "width": 4}
    doc = {"name": "byo", "base": run_config(student, method="kd", teacher={
               "checkpoint": "teacher.pt", "model": teacher},
               schedule={"epochs": 2, "milestones": [1], "warmup_epochs": 1}),
           "search": {"params": {"model.width": {"kind": "grid", "values": [4, 6]}},
                      "scheduler": {"kind": "none"}, "resources": {"cpu": 1, "gpu": 0},
                      # the finalists stage with your model and teacher: one finalist, CE and LSR
                      "finalists": {"top": 1, "seeds": 1}},
           "export": {"top_k": 2, "seeds": [0], "epochs": 2}}
    write(work / "space.yaml", doc)
    env = cli_env()
    res = run_cli(["--space", "space.yaml", "--storage", "runs", "--code-dir", str(code)], env,
                  timeout=600, cwd=work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = pd.read_parquet(work / "runs" / "byo" / "trials.parquet")
    assert sorted(trials["model.width"]) == [4, 6] and (trials["status"] == "completed").all()
    rank1 = yaml.safe_load((work / "runs" / "byo" / "best" / "rank1.yaml").read_text())
    assert rank1["model"] == {**student, "width": rank1["model"]["width"]}
    assert rank1["teacher"]["model"] == teacher
    # the finalists and the baselines ran your model too, and the baselines carry it unchanged
    fin = pd.read_parquet(work / "runs" / "byo" / "finalists.parquet")
    assert sorted(fin["name"]) == ["ce", "finalist1", "lsr"] and set(fin["status"]) == {"completed"}
    ce = yaml.safe_load((work / "runs" / "byo" / "best" / "baseline-ce.yaml").read_text())
    assert ce["method"] == "ce" and ce["model"] == student
    parent, _ = search_runs(f"sqlite:///{work / 'runs' / 'mlflow.db'}", "byo")
    assert parent.data.params["model_reference"] == "cwd_nets:build(width=4)"
    assert parent.data.params["teacher_reference"] == "dir_nets:build(width=4)"
    assert int(parent.data.params["model_params"]) > 0
    res = run_cli(["train", "--config", "runs/byo/best/rank1.yaml", "--code-dir", str(code),
                   "--storage", "runs"], env, timeout=300, cwd=work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "summary: 1 run(s)" in res.stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'runs' / 'mlflow.db'}")
    (final,) = [r for r in client.search_runs([parent.info.experiment_id])
                if r.data.tags.get("tfkd.role") == "final"]
    assert final.data.params["model_reference"] == f"cwd_nets:build(width={rank1['model']['width']})"
    assert final.data.params["model_flops_per_image"].isdigit()
