"""Bad input, through the real CLI: one table row per mistake a user can make.

Every case runs `tfkd-search ...` in a subprocess and checks the exit code (2: the input is wrong,
3: the environment is wrong, 1: the run failed; see tfkd_search/errors.py), that no Python traceback is printed, that the one error message names the place (file,
key path or flag), the bad value and the fix, and that no half-written run folder is left behind that
would confuse a later `--resume`. Almost every case fails in validation, before Ray or MLflow start.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from _proc import cli_env, run_cli, sigkill_driver, start_cli, wait_for
from _spaces import base_cfg, grid_params, search_block

# A valid space: every case below breaks exactly one thing in it (or in the command line).
GOOD: dict[str, Any] = {
    "name": "bad",
    "base": base_cfg(4),
    "search": search_block(grid_params(**{"loss.tau": [1.0, 4.0]}),
                           scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2}),
}
DROP = object()


def space(*edits: tuple[str, Any]) -> dict[str, Any]:
    """GOOD with edits; a path is '/'-separated because parameter names contain dots."""
    doc = copy.deepcopy(GOOD)
    for path, value in edits:
        *parents, last = path.split("/")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is DROP:
            node.pop(last)
        else:
            node[last] = value
    return doc


def params(**dists: dict[str, Any]) -> tuple[str, Any]:
    return ("search/params", {k.replace("__", "."): v for k, v in dists.items()})


RANDOM = ("search/searcher", {"kind": "random"})


def run_config(**top: Any) -> dict[str, Any]:
    """A run config for `tfkd-search train` (kd from the shared 1-epoch tiny_cnn teacher)."""
    cfg: dict[str, Any] = {"name": "student", "model": "tiny_cnn", "method": "kd", "device": "cpu",
                           "threads": 1, "data": {"dataset": "digits"},
                           "teacher": {"checkpoint": "{ckpt}"},
                           "schedule": {"epochs": 1, "milestones": [], "warmup_epochs": 0}}
    cfg.update(top)
    return cfg


S = ("--space", "{tmp}/space.yaml", "--storage", "{tmp}/runs")  # a search
T = ("train", "--config", "{tmp}/run.yaml", "--storage", "{tmp}/runs")  # a training run
F = "{tmp}/space.yaml"
R = "{tmp}/run.yaml"


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    code: int  # 2: bad input (usage, config, path), 1: runtime
    needles: tuple[str, ...]  # substrings of the one error message: place, bad value, fix
    files: dict[str, Any] = field(default_factory=dict)  # name -> YAML doc (dict) or raw text


CASES = [
    # --- the file itself ----------------------------------------------------------------------
    Case("yaml-syntax-error", S, 2, (F, "line 3", "YAML syntax error", "fix the YAML"),
         {"space.yaml": "name: x\nbase: {model: tiny_cnn\nsearch: [\n"}),
    Case("yaml-bad-indentation", S, 2, (F, "line 4", "YAML syntax error", "indentation"),
         {"space.yaml": "name: x\nbase:\n  model: tiny_cnn\n method: ce\n"}),
    Case("empty-file", S, 2, (F, "the file is empty", "must hold a YAML mapping"),
         {"space.yaml": "# nothing here\n"}),
    Case("top-level-not-a-mapping", S, 2, (F, "top level must be a mapping", "got a list"),
         {"space.yaml": "- loss.tau\n- loss.alpha\n"}),
    Case("space-file-missing", ("--space", "{tmp}/nope.yaml", "--storage", "{tmp}/runs"), 2,
         ("{tmp}/nope.yaml", "file not found", "pass the path of a YAML file")),
    # --- unknown keys (with a close-match hint) and wrong types -------------------------------
    Case("unknown-top-level-key", S, 2, (F, "serch: unknown key", "Did you mean 'search'?"),
         {"space.yaml": {**space(), "serch": {}}}),
    Case("unknown-base-key", S, 2, (F, "base.loss.tua: unknown key", "Did you mean 'tau'?"),
         {"space.yaml": space(("base/loss/tua", 3))}),
    Case("unknown-search-key", S, 2,
         (F, "search.schedular: unknown key", "Did you mean 'scheduler'?"),
         {"space.yaml": space(("search/schedular", {"kind": "none"}))}),
    Case("unknown-parameter", S, 2,
         (F, "search.params.loss.tua", "unknown parameter 'loss.tua'", "Did you mean 'loss.tau'?"),
         {"space.yaml": space(params(loss__tua={"kind": "grid", "values": [1.0]}))}),
    Case("unknown-key-via-set", (*S, "--set", "optim.lrr=0.2"), 2,
         (F, "base.optim.lrr: unknown key", "Did you mean 'lr'?"), {"space.yaml": space()}),
    Case("wrong-type-tau", S, 2, (F, "base.loss.tau", "valid number", "'hot'"),
         {"space.yaml": space(("base/loss/tau", "hot"))}),
    Case("wrong-type-num-samples", S, 2, (F, "search.num_samples", "valid integer", "'many'"),
         {"space.yaml": space(("search/num_samples", "many"))}),
    Case("malformed-set", (*S, "--set", "loss.tau"), 2,
         ("--set 'loss.tau'", "expected key.path=value", "--set loss.tau=20"),
         {"space.yaml": space()}),
    # --- values out of range ------------------------------------------------------------------
    Case("tau-zero", S, 2, (F, "base.loss.tau", "greater than 0", "(got 0)"),
         {"space.yaml": space(("base/loss/tau", 0))}),
    Case("tau-negative-in-grid", S, 2,
         (F, "search.params.loss.tau: value -2.0", "loss.tau: Input should be greater than 0"),
         {"space.yaml": space(params(loss__tau={"kind": "grid", "values": [1.0, -2.0]}))}),
    Case("alpha-above-one", S, 2, (F, "base.loss.alpha", "less than or equal to 1", "(got 1.5)"),
         {"space.yaml": space(("base/loss/alpha", 1.5))}),
    Case("alpha-below-zero-in-range", S, 2,
         (F, "search.params.loss.alpha: value -0.1", "greater than or equal to 0"),
         {"space.yaml": space(RANDOM, params(
             loss__alpha={"kind": "uniform", "low": -0.1, "high": 0.5}))}),
    Case("a-not-above-one-over-C", S, 2,
         (F, "loss.a must be in (1/C, 1] = (0.1, 1] for digits", "got 0.05"),
         {"space.yaml": space(("base/loss/a", 0.05))}),
    Case("a-above-one-in-grid", S, 2,
         (F, "search.params.loss.a: value 1.2", "less than or equal to 1"),
         {"space.yaml": space(params(loss__a={"kind": "grid", "values": [0.9, 1.2]}))}),
    # --- ranges --------------------------------------------------------------------------------
    Case("empty-grid", S, 2, (F, "search.params.loss.tau.values", "at least 1 item", "(got [])"),
         {"space.yaml": space(params(loss__tau={"kind": "grid", "values": []}))}),
    Case("range-low-equals-high", S, 2,
         (F, "search.params.loss.alpha: need low < high", "low=0.5, high=0.5", "set low below high"),
         {"space.yaml": space(RANDOM, params(
             loss__alpha={"kind": "uniform", "low": 0.5, "high": 0.5}))}),
    Case("range-one-sided", S, 2,
         (F, "search.params.loss.alpha.high", "required key is missing; add it"),
         {"space.yaml": space(RANDOM, params(loss__alpha={"kind": "uniform", "low": 0.5}))}),
    Case("loguniform-non-positive-low", S, 2,
         (F, "search.params.loss.tau: loguniform needs low > 0", "low=0.0", "use uniform"),
         {"space.yaml": space(RANDOM, params(
             loss__tau={"kind": "loguniform", "low": 0, "high": 8}))}),
    Case("grid-larger-than-limit", S, 2,
         (F, "the grid has 8 trials", "search.max_trials=6", "shrink the grid or raise max_trials"),
         {"space.yaml": space(("search/max_trials", 6), params(
             loss__tau={"kind": "grid", "values": [1.0, 2.0, 4.0, 8.0]},
             loss__alpha={"kind": "grid", "values": [0.1, 0.9]}))}),
    Case("grid-searcher-with-a-range", S, 2,
         (F, "search.params.loss.alpha", "searcher 'grid' needs kind: grid", "use searcher 'random'"),
         {"space.yaml": space(params(loss__alpha={"kind": "uniform", "low": 0.1, "high": 0.9}))}),
    # --- unknown names --------------------------------------------------------------------------
    Case("unknown-model", S, 2, (F, "base.model", "'resnet81'", "Did you mean 'resnet18'?"),
         {"space.yaml": space(("base/model", "resnet81"))}),
    Case("unknown-dataset", S, 2,
         (F, "base.data.dataset", "'cifar1000'", "Did you mean 'cifar100'?"),
         {"space.yaml": space(("base/data/dataset", "cifar1000"))}),
    Case("unknown-method", S, 2, (F, "base.method", "'tfkd_rge'", "Did you mean 'tfkd_reg'?"),
         {"space.yaml": space(("base/method", "tfkd_rge"))}),
    Case("unknown-searcher", S, 2,
         (F, "search.searcher.kind", "'optona'", "Did you mean 'optuna'?"),
         {"space.yaml": space(("search/searcher", {"kind": "optona"}))}),
    Case("unknown-scheduler", S, 2,
         (F, "search.scheduler.kind", "'hyperband'", "Input should be 'asha' or 'none'"),
         {"space.yaml": space(("search/scheduler", {"kind": "hyperband"}))}),
    Case("unknown-distribution-kind", S, 2,
         (F, "search.params.loss.tau", "'gird'", "Did you mean 'grid'?"),
         {"space.yaml": space(params(loss__tau={"kind": "gird", "values": [1.0]}))}),
    # --- budget and resources -------------------------------------------------------------------
    Case("budget-not-above-grace-period", S, 2,
         (F, "search.scheduler.grace_period: 4", "budget of 4 epochs",
          "lower grace_period or use scheduler kind: none"),
         {"space.yaml": space(("search/scheduler/grace_period", 4))}),
    Case("gpu-share-does-not-divide-a-gpu", S, 2,
         (F, "search.resources.gpu: 0.3", "does not divide one GPU", "use 1/k"),
         {"space.yaml": space(("search/resources/gpu", 0.3))}),
    Case("gpus-more-than-this-machine-has", (*S, "--gpus", "1"), 3,
         ("--gpus 1", "this machine has 0 CUDA GPUs", "pass --gpus 0 to run on the CPU"),
         {"space.yaml": space()}),
    Case("dry-run-checks-the-gpus-too", (*S, "--gpus", "8", "--dry-run"), 3,
         ("--gpus 8", "this machine has 0 CUDA GPUs", "pass --gpus 0 to run on the CPU"),
         {"space.yaml": space()}),
    Case("dry-run-checks-the-mlflow-server", (*S, "--dry-run", "--mlflow-uri", "http://127.0.0.1:1"),
         3, ("--mlflow-uri http://127.0.0.1:1", "does not answer"), {"space.yaml": space()}),
    Case("gpus-not-a-number", (*S, "--gpus", "abc"), 2,
         ("argument --gpus", "invalid float value: 'abc'"),
         {"space.yaml": space()}),
    # --- services and folders -------------------------------------------------------------------
    Case("mlflow-server-unreachable", (*S, "--mlflow-uri", "http://127.0.0.1:1"), 3,
         ("--mlflow-uri http://127.0.0.1:1", "does not answer", "start it (mlflow server",
          "or pass another --mlflow-uri"), {"space.yaml": space()}),
    Case("mlflow-sqlite-under-a-file", (*S, "--mlflow-uri", "sqlite:///{tmp}/afile/mlflow.db"), 3,
         ("--mlflow-uri sqlite:///{tmp}/afile/mlflow.db", "{tmp}/afile is not a writable folder",
          "pass sqlite:////abs/writable/path/mlflow.db"),
         {"space.yaml": space(), "afile": "a regular file\n"}),
    Case("ray-address-unreachable", (*S, "--address", "127.0.0.1:1"), 3,
         ("--address 127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1", "ray start --head",
          "drop --address"), {"space.yaml": space()}),
    Case("ray-address-malformed", (*S, "--address", "headnode"), 2,
         ("--address headnode", "expected HOST:PORT"), {"space.yaml": space()}),
    Case("resume-of-a-missing-run", (*S, "--resume", "--name", "never"), 2,
         ("--resume", "no search to resume in {tmp}/runs/never", "check --storage and --name",
          "drop --resume"), {"space.yaml": space()}),
    Case("resume-of-another-space", ("--space", "{tmp}/space.yaml", "--storage", "{other}",
                                     "--resume", "--name", "other"), 2,
         ("--resume", "{other}/other was searched with other settings than {tmp}/space.yaml",
          "what differs (searched -> now)", "resume with the same space file", "pick a new --name"),
         {"space.yaml": space()}),
    Case("storage-not-writable", ("--space", F, "--storage", "{tmp}/afile/sub"), 3,
         ("--storage {tmp}/afile/sub", "cannot write the run folder", "Not a directory",
          "pass a writable --storage"), {"space.yaml": space(), "afile": "a regular file\n"}),
    # --- data ---------------------------------------------------------------------------------
    Case("train-cifar100-empty-data-dir", (*T, "--data-dir", "{tmp}/empty"), 2,
         ("{tmp}/empty/cifar-100-python", "does not exist", "--download", "--data-dir"),
         {"run.yaml": run_config(method="ce", teacher=None, data={"dataset": "cifar100"}),
          "empty/": None}),
    Case("search-cifar100-empty-data-dir", (*S, "--data-dir", "{tmp}/empty"), 2,
         ("{tmp}/empty/cifar-100-python", "does not exist", "--download"),
         {"space.yaml": space(("base/data/dataset", "cifar100"), ("base/loss/a", 0.5)),
          "empty/": None}),
    # --- teacher checkpoints ------------------------------------------------------------------
    Case("teacher-checkpoint-missing", T, 2,
         (R, "teacher.checkpoint", "{tmp}/gone.pt", "file not found", "written by 'tfkd-search train'"),
         {"run.yaml": run_config(teacher={"checkpoint": "{tmp}/gone.pt"})}),
    Case("teacher-checkpoint-truncated", T, 2,
         (R, "teacher.checkpoint", "{trunc}", "truncated, corrupt or not a PyTorch checkpoint",
          "re-create it with 'tfkd-search train'"),
         {"run.yaml": run_config(teacher={"checkpoint": "{trunc}"})}),
    Case("teacher-checkpoint-is-text", T, 2,
         (R, "teacher.checkpoint", "{text}", "not a PyTorch checkpoint", "re-create it"),
         {"run.yaml": run_config(teacher={"checkpoint": "{text}"})}),
    Case("teacher-checkpoint-is-weights-of-another-model", T, 2,
         (R, "teacher.checkpoint", "{plain}", "its weights do not fit 'tiny_cnn'",
          "missing keys: 'features.0.weight'", "unexpected keys: 'weights'",
          "set teacher.model to the architecture they were trained as"),
         {"run.yaml": run_config(teacher={"checkpoint": "{plain}", "model": "tiny_cnn"})}),
    Case("teacher-of-another-architecture", T, 2,
         (R, "teacher.checkpoint", "{ckpt}", "holds a 'tiny_cnn' but teacher.model is 'tiny_mlp'",
          "set teacher.model: tiny_cnn"),
         {"run.yaml": run_config(teacher={"checkpoint": "{ckpt}", "model": "tiny_mlp"})}),
    Case("tfkd-self-teacher-of-another-architecture", T, 2,
         (R, "teacher.checkpoint", "{ckpt}", "tfkd_self needs the student's own architecture",
          "'tiny_mlp'", "use method: kd"),
         {"run.yaml": run_config(method="tfkd_self", model="tiny_mlp")}),
    Case("teacher-of-another-class-count", T, 2,
         (R, "teacher.checkpoint", "{ckpt}", "trained for 10 classes but cifar100 has 100",
          "use a teacher trained on the same dataset"),
         {"run.yaml": run_config(data={"dataset": "cifar100"})}),
    Case("teacher-of-another-channel-count", T, 2,
         (R, "teacher.checkpoint", "1-channel images (digits) but synthetic has 3",
          "use a teacher trained on the same dataset"),
         {"run.yaml": run_config(data={"dataset": "synthetic"})}),
    Case("search-teacher-truncated", S, 2,
         (F, "base.teacher.checkpoint", "{trunc}", "truncated", "re-create it"),
         {"space.yaml": space(("base/method", "kd"), ("base/teacher", {"checkpoint": "{trunc}"}))}),
    # --- other subcommands --------------------------------------------------------------------
    Case("train-into-an-existing-run", ("train", "--config", R, "--out", "{teacher_run}"), 2,
         ("{teacher_run}/seed0 already holds a run", "pass --resume", "--out NEW_FOLDER"),
         {"run.yaml": run_config(method="ce", teacher=None)}),
    Case("export-of-a-folder-that-is-no-run", ("export", "{tmp}"), 2,
         ("{tmp}", "not a finished tfkd-search run folder", "pass the folder <storage>/<name>")),
    Case("export-of-an-unfinished-search-with-a-torn-table", ("export", "{tmp}/run"), 2,
         ("{tmp}/run/trials.parquet", "unreadable", "ArrowInvalid", "--resume"),
         {"run/": None, "run/search.json": '{"name": "run", "finished": false, "base": {}}',
          "run/trials.parquet": "PAR1 torn"}),
    Case("export-with-a-torn-search-json", ("export", "{tmp}/run"), 2,
         ("{tmp}/run/search.json", "unreadable", "JSONDecodeError", "--name NEW", "tfkd-search report"),
         {"run/": None, "run/search.json": '{"name": "run", "fini'}),
    # --- the finalists stage -----------------------------------------------------------------
    Case("finalists-top-larger-than-the-configs", S, 2,
         (F, "search.finalists.top: 5 finalists, but the search tries only 2 configs",
          "set search.finalists.top to at most 2", "0 turns the finalists off"),
         {"space.yaml": space(("search/finalists", {"top": 5, "seeds": 3}))}),
    Case("finalists-negative-seeds", S, 2,
         (F, "search.finalists.seeds", "greater than or equal to 0", "(got -1)"),
         {"space.yaml": space(("search/finalists", {"top": 1, "seeds": -1}))}),
    Case("finalists-top-via-set", (*S, "--set", "search.finalists.top=3"), 2,
         ("--set search.finalists.top=3", "only 2 configs"), {"space.yaml": space()}),
    Case("final-before-any-export", ("final", "{tmp}"), 2,
         ("{tmp}/best", "no exported configs", "tfkd-search export {tmp}")),
    Case("final-of-a-missing-folder", ("final", "{tmp}/nope"), 2,
         ("{tmp}/nope: no such run folder", "<storage>/<name>")),
    Case("resume-with-a-torn-search-json", ("--space", F, "--storage", "{tmp}/store", "--resume"), 2,
         ("{tmp}/store/bad/search.json", "unreadable", "restore it", "--name NEW"),
         {"space.yaml": space(), "store/": None, "store/bad/": None, "store/bad/search.json": "{torn"}),
]


# ------------------------------------------------------------------------------------------------
# Fixtures: one real teacher checkpoint (and broken copies), one real interrupted search


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return cli_env()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, env) -> dict[str, str]:
    """A real 1-epoch tiny_cnn/digits checkpoint from `tfkd-search train`, and broken variants."""
    import torch

    tmp = tmp_path_factory.mktemp("teacher")
    (tmp / "teacher.yaml").write_text(yaml.safe_dump(
        {"name": "teacher", "model": "tiny_cnn", "method": "ce", "device": "cpu", "threads": 1,
         "data": {"dataset": "digits"},
         "schedule": {"epochs": 1, "milestones": [], "warmup_epochs": 0}}))
    res = run_cli(["train", "--config", str(tmp / "teacher.yaml"), "--no-mlflow", "--out",
                   str(tmp / "run")], env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    ckpt = tmp / "run" / "seed0" / "checkpoint.pt"
    data = ckpt.read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp / "text.pt").write_text("this is not a checkpoint\n")
    torch.save({"weights": torch.zeros(3)}, tmp / "plain.pt")
    return {"ckpt": str(ckpt), "trunc": str(tmp / "truncated.pt"), "text": str(tmp / "text.pt"),
            "plain": str(tmp / "plain.pt"), "teacher_run": str(tmp / "run")}


@pytest.fixture(scope="module")
def other_space_run(tmp_path_factory, env) -> str:
    """A real (interrupted) search of another space: its folder holds search.json."""
    tmp = tmp_path_factory.mktemp("other")
    doc = space(("name", "other"), params(loss__alpha={"kind": "grid", "values": [0.2, 0.8]}))
    (tmp / "other.yaml").write_text(yaml.safe_dump(doc))
    storage = tmp / "runs"
    proc = start_cli(["--space", str(tmp / "other.yaml"), "--storage", str(storage)], env,
                     tmp / "log.txt")
    try:
        wait_for(lambda: (storage / "other" / "search.json").exists(), 120, what="search.json")
    finally:
        sigkill_driver(proc, env)
    return str(storage)


def _fill(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text


def _fill_doc(doc: Any, values: dict[str, str]) -> Any:
    if isinstance(doc, dict):
        return {k: _fill_doc(v, values) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_fill_doc(v, values) for v in doc]
    return _fill(doc, values) if isinstance(doc, str) else doc


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _marked(case: Case) -> Any:
    """A case that first runs a real search (a resume of another space) starts Ray."""
    ray = "{other}" in " ".join(case.args)
    return pytest.param(case, marks=[pytest.mark.ray, pytest.mark.slow]) if ray else case


@pytest.mark.parametrize("case", [_marked(c) for c in CASES], ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, env, teacher, request) -> None:
    values = {"tmp": str(tmp_path), **teacher}
    other_before = None
    if "{other}" in " ".join(case.args):
        values["other"] = request.getfixturevalue("other_space_run")
        other_before = _digest(Path(values["other"]))
    for name, content in case.files.items():
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        elif isinstance(content, dict):
            (tmp_path / name).write_text(yaml.safe_dump(_fill_doc(content, values), sort_keys=False))
        else:
            (tmp_path / name).write_text(content)
    args = [_fill(a, values) for a in case.args]

    res = run_cli(args, env, timeout=120)  # a bounded wait: these fail in validation, before trials

    out = res.stdout + res.stderr
    assert res.returncode == case.code, f"exit {res.returncode}, expected {case.code}\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    assert res.stderr.count("tfkd-search: error:") == 1, res.stderr
    msg = res.stderr[res.stderr.index("tfkd-search: error:"):]
    for needle in case.needles:
        assert _fill(needle, values) in msg, f"{_fill(needle, values)!r} not in:\n{msg}"

    # nothing half-written that a later --resume (or train --resume) would pick up
    runs = tmp_path / "runs"
    if runs.exists():
        leftovers = [p for p in runs.rglob("*")
                     if p.name in ("search.json", "tuner.pkl", "checkpoint.pt", "trials.parquet")
                     or p.name.startswith(("trial_", "experiment_state"))]
        assert not leftovers, leftovers
    assert not (tmp_path / "runs" / "train").exists()
    if other_before is not None:  # a refused resume leaves the other search untouched
        assert _digest(Path(values["other"])) == other_before


# ------------------------------------------------------------------------------------------------
# Where a problem came from (issues 13.2, 13.3, 13.5), through `tfkd-search validate`


def test_set_problems_name_the_override_and_every_problem_is_reported(tmp_path: Path, env) -> None:
    doc = space(("base/optim", {"batchsize": 64}),
                params(loss__alpah={"kind": "grid", "values": [0.1]}))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run_cli(["validate", str(tmp_path / "space.yaml"), "--set", "loss.tau=-2"], env,
                  timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    msg = res.stderr
    assert "Traceback" not in msg
    assert "--set loss.tau=-2: base.loss.tau: Input should be greater than 0 (got -2)" in msg, msg
    assert f"{tmp_path}/space.yaml: base.optim.batchsize: unknown key. Did you mean 'batch_size'?" \
        in msg, msg
    assert "search.params.loss.alpah: unknown parameter 'loss.alpah'. Did you mean 'loss.alpha'?" \
        in msg, msg


def test_misspelled_space_path_gets_a_close_match(tmp_path: Path, env) -> None:
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(space()))
    res = run_cli(["validate", str(tmp_path / "quickstrat.yaml")], env, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"Did you mean {tmp_path}/quickstart.yaml?" in res.stderr, res.stderr
