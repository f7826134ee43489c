"""Search spaces: every shipped file loads; bad spaces are rejected with every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from _spaces import base_cfg, grid_params, write_space
from tfkd_search.errors import ConfigError
from tfkd_search.spaces import describe, grid_points, load_space

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
BASE = base_cfg(6, milestones=[4])  # a budget of 6 epochs: the rung and grace checks below use it


def write(tmp_path: Path, search: dict, name: str = "space") -> Path:
    return write_space(tmp_path / f"{name}.yaml", "t", search, base=BASE)


def grid(**values: list) -> dict:
    """A `search:` block with only grid params: the searcher and scheduler are left to their defaults."""
    return {"params": grid_params(**values)}


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_loads(path: Path) -> None:
    space = load_space(path)
    assert space.num_trials() >= 1
    assert space.params
    text = describe(space, gpus=8, cpus=64)
    assert space.spec.name in text
    # the answer with its confidence is on in every shipped space: >= 3 fresh seeds give an interval
    f = space.spec.search.finalists
    assert f.enabled and f.seeds >= 3, f
    assert "finalists: the best" in text and "more trial-epochs" in text


def test_finalists_plan_counts_the_extra_runs_and_checks_top(tmp_path: Path) -> None:
    block = {**grid(**{"loss.tau": [1, 2, 4], "loss.alpha": [0.1, 0.9]}),
             "finalists": {"top": 2, "seeds": 4}}
    space = load_space(write(tmp_path, block))
    assert space.finalist_trials() == (2 + 2) * 4  # two finalists and the baselines CE, LSR
    text = describe(space)
    budget = space.budget
    assert (f"finalists: the best 2 configs and the baselines ce, lsr (eps 0.1) trained again for "
            f"{budget} epochs on seeds [1, 2, 3, 4] (the search's is 0); 16 trials, {16 * budget} more "
            f"trial-epochs") in text
    # the default (top 2) adapts to a one-config space; an explicit top larger than the configs is an
    # error that says what to set
    one = load_space(write(tmp_path, grid(**{"loss.tau": [1]}), name="one"))
    assert one.finalist_trials() == (1 + 2) * 3
    with pytest.raises(ConfigError, match=r"search\.finalists\.top: 7 finalists, but the search tries "
                       r"only 6 configs; set search\.finalists\.top to at most 6"):
        load_space(write(tmp_path, {**block, "finalists": {"top": 7}}, name="toomany"))
    with pytest.raises(ConfigError, match=r"search\.finalists\.seeds.*greater than or equal to 0"):
        load_space(write(tmp_path, {**block, "finalists": {"top": 1, "seeds": -1}}, name="neg"))
    off = load_space(write(tmp_path, {**block, "finalists": {"top": 0}}, name="off"))
    assert off.finalist_trials() == 0 and "finalists: off" in describe(off)
    two = load_space(write(tmp_path, {**block, "finalists": {"top": 1, "seeds": 2}}, name="two"))
    assert "2 seed(s) give no confidence interval" in describe(two)
    # 16 stage trials for a 6-config grid: the plan says what the stage costs and how to spend less
    assert ("note: 16 finalist trials for 6 search trials: the stage alone costs 267% of a full grid's "
            "trial-epochs (with the halving before it, the two stay under half a full grid from about 80 "
            "configs); search.finalists.top: 1 trains 12 trials, top: 0 none") in text
    # ... and nothing of the kind where the stage is small beside the grid (the shipped 64-sample space)
    assert "finalist trials for" not in describe(load_space(SPACES / "tfkd_reg.yaml"))
    # a method with a teacher: the plan says the teacher's seed is never a finalist seed
    kd = describe(load_space(SPACES / "kd.yaml"))
    assert "seed equal to the teacher checkpoint's seed is replaced by the next free one" in kd


def test_shipped_quickstart_is_small_and_cpu_only() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    assert space.num_trials() >= 8
    assert space.base.data.dataset == "digits" and space.spec.search.resources.gpu == 0
    assert space.spec.search.scheduler.kind == "asha"


def test_main_space_searches_tau_alpha_a() -> None:
    space = load_space(SPACES / "tfkd_reg.yaml")
    assert set(space.params) == {"loss.tau", "loss.alpha", "loss.a"}
    assert space.budget == 70 and space.base.schedule.epochs == 200


def test_grid_points_cover_the_product(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, grid(**{"loss.tau": [1, 2, 4], "loss.alpha": [0.1, 0.9]})))
    pts = grid_points(space)
    assert len(pts) == 6 == space.num_trials()
    assert {(p["loss.tau"], p["loss.alpha"]) for p in pts} == {
        (t, a) for t in (1, 2, 4) for a in (0.1, 0.9)}


def test_unknown_parameter_gets_a_close_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search\.params\.loss\.alpah.*Did you mean 'loss\.alpha'"):
        load_space(write(tmp_path, grid(**{"loss.alpah": [0.1]})))


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    search = {"params": {"loss.alpha": {"kind": "grid", "values": [0.5, 1.5]},
                         "loss.tau": {"kind": "grid", "values": [0.0, 2.0]}},
              "scheduler": {"kind": "asha", "grace_period": 10}}
    with pytest.raises(ConfigError) as err:
        load_space(write(tmp_path, search))
    msg = str(err.value)
    assert "search.params.loss.alpha: value 1.5" in msg
    assert "search.params.loss.tau: value 0.0" in msg
    assert "grace_period" in msg
    assert str(tmp_path / "space.yaml") in msg


@pytest.mark.parametrize("dist, needle", [
    ({"kind": "uniform", "low": 0.5, "high": 0.5}, "need low < high"),
    ({"kind": "uniform", "low": 0.9, "high": 0.1}, "need low < high"),
    ({"kind": "loguniform", "low": 0.0, "high": 1.0}, "loguniform needs low > 0"),
    ({"kind": "grid", "values": []}, "at least 1 item"),
    ({"kind": "normal", "low": 0, "high": 1}, "does not match any of the expected tags"),
])
def test_bad_ranges_are_rejected(tmp_path: Path, dist: dict, needle: str) -> None:
    search = {"params": {"loss.alpha": dist}, "searcher": {"kind": "random"}}
    with pytest.raises(ConfigError, match=needle):
        load_space(write(tmp_path, search))


def test_grid_needs_grid_kinds_and_optuna_refuses_grids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="searcher 'grid' needs kind: grid"):
        load_space(write(tmp_path, {"params": {"loss.alpha": {"kind": "uniform", "low": 0.1,
                                                              "high": 0.9}}}))
    with pytest.raises(ConfigError, match="searcher 'optuna' cannot take kind: grid"):
        load_space(write(tmp_path, {**grid(**{"loss.tau": [1, 2]}),
                                    "searcher": {"kind": "optuna"}}))


def test_grid_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    search = {**grid(**{"loss.tau": list(range(1, 11)), "loss.alpha": [i / 20 for i in range(11)]}),
              "max_trials": 50}
    with pytest.raises(ConfigError, match="the grid has 110 trials, more than search.max_trials=50"):
        load_space(write(tmp_path, search))


def test_gpu_share_must_divide_one_gpu(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not divide one GPU"):
        load_space(write(tmp_path, {**grid(**{"loss.tau": [1]}), "resources": {"gpu": 0.3}}))
    assert load_space(write(tmp_path, {**grid(**{"loss.tau": [1]}),
                                       "resources": {"gpu": 0.25}})).spec.search.resources.gpu == 0.25


def test_a_range_is_checked_against_the_class_count(tmp_path: Path) -> None:
    # digits has 10 classes: a must be in (0.1, 1]
    with pytest.raises(ConfigError, match=r"loss\.a must be in \(1/C, 1\]"):
        load_space(write(tmp_path, grid(**{"loss.a": [0.05, 0.9]})))


def test_set_overrides_apply_to_base_and_search(tmp_path: Path) -> None:
    p = write(tmp_path, grid(**{"loss.tau": [1, 2]}))
    space = load_space(p, {"loss.alpha": 0.3, "search.num_samples": 3})
    assert space.base.loss.alpha == 0.3 and space.num_trials() == 6


def test_int_range_is_inclusive_in_tune() -> None:
    from tfkd_search.search import to_tune
    from tfkd_search.spaces import IntRange

    domain = to_tune(IntRange(kind="int", low=1, high=3))
    assert {domain.sample() for _ in range(300)} == {1, 2, 3}


# ---------------------------------------------------------------------------------------------------
# Every problem at once (issue 13.2), --set origins (13.3), scheduler rungs/window (10.3)


def test_unknown_base_key_and_unknown_parameter_reported_together(tmp_path: Path) -> None:
    doc = {"name": "t", "base": {**BASE, "optim": {"batchsize": 64}},
           "search": grid(**{"loss.alpah": [0.1], "loss.tau": [1.0, -2.0]})}
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_space(p)
    msg = str(err.value)
    assert "base.optim.batchsize: unknown key. Did you mean 'batch_size'?" in msg, msg
    assert "search.params.loss.alpah: unknown parameter 'loss.alpah'" in msg, msg
    assert "search.params.loss.tau: value -2.0 gives an invalid run config: loss.tau:" in msg, msg
    # the base's unknown key is reported once, not again for every parameter value
    assert msg.count("batchsize") == 1, msg
    assert "search.params.loss.tau: value 1.0" not in msg


def test_spec_errors_base_errors_and_parameters_reported_together(tmp_path: Path) -> None:
    doc = {"name": "t", "base": {**BASE, "loss": {"tua": 1}},
           "search": {**grid(**{"loss.alpah": [0.1], "loss.alpha": [0.5, 1.5]}),
                      "num_samples": "many", "scheduler": {"grace_period": 1, "rungs": [3, 2]}},
           "export": {"top_k": 0}}
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_space(p)
    paths = {x.path for x in err.value.problems}
    assert {"search.num_samples", "search.scheduler.rungs", "export.top_k", "base.loss.tua",
            "search.params.loss.alpah", "search.params.loss.alpha"} <= paths, paths


def test_unknown_key_in_a_distribution_gets_a_hint_from_its_kind(tmp_path: Path) -> None:
    search = {"params": {"loss.alpha": {"kind": "uniform", "low": 0.1, "hihg": 0.9}},
              "searcher": {"kind": "random"}}
    with pytest.raises(ConfigError) as err:
        load_space(write(tmp_path, search))
    msg = str(err.value)
    assert "search.params.loss.alpha.hihg: unknown key. Did you mean 'high'?" in msg, msg
    assert ".uniform." not in msg


def test_set_errors_name_the_override(tmp_path: Path) -> None:
    p = write(tmp_path, grid(**{"loss.tau": [1.0, 2.0]}))
    with pytest.raises(ConfigError) as err:
        load_space(p, {"loss.tau": -2, "optim.lrr": 0.2, "search.num_samples": 0})
    lines = [ln.strip() for ln in str(err.value).splitlines()]
    assert str(p) in lines[0] and "overrides" in lines[0], lines[0]
    assert "--set loss.tau=-2: base.loss.tau: Input should be greater than 0 (got -2)" in lines
    assert "--set optim.lrr=0.2: base.optim.lrr: unknown key. Did you mean 'lr'? " \
           "Valid keys here: lr, lr_batch, momentum, weight_decay, nesterov, batch_size" in lines
    assert any(ln.startswith("--set search.num_samples=0: search.num_samples:") for ln in lines)
    assert not any(ln.startswith(f"{p}:") for ln in lines), lines


def test_set_of_parameter_values_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, grid(**{"loss.tau": [1.0, 2.0]}))
    with pytest.raises(ConfigError) as err:
        load_space(p, {"search.params.loss.tau.values": [1.0, -3.0]})
    assert ("--set search.params.loss.tau.values=[1.0, -3.0]: search.params.loss.tau: value -3.0"
            in str(err.value)), str(err.value)
    # a problem in the file next to an override still names the file
    with pytest.raises(ConfigError) as err:
        load_space(write(tmp_path, grid(**{"loss.tau": [-1.0]})), {"seed": 3})
    assert f"{tmp_path / 'space.yaml'}: search.params.loss.tau: value -1.0" in str(err.value)


def test_space_records_overrides_and_describe_changes(tmp_path: Path) -> None:
    from tfkd_search.config import describe_changes

    p = write(tmp_path, grid(**{"loss.tau": [1.0, 2.0]}))
    a = load_space(p, {"loss.alpha": 0.3, "search.num_samples": 2})
    b = load_space(p, {"loss.alpha": 0.4, "search.num_samples": 2, "seed": 1})
    assert a.overrides == {"base.loss.alpha": 0.3, "search.num_samples": 2}
    assert describe_changes(a, b) == ["base.loss.alpha: 0.3 -> 0.4", "base.seed: (not set) -> 1"]
    assert describe_changes(a, a) == []


def sched(**kw) -> dict:
    return {**grid(**{"loss.tau": [1.0]}), "scheduler": {"kind": "asha", **kw}}


def test_scheduler_defaults() -> None:
    from tfkd_search.spaces import Scheduler

    s = Scheduler()
    assert s.rungs is None and s.synchronous is True and s.window == 1
    assert Scheduler(grace_period=2, reduction_factor=2).rung_epochs(8) == [2, 4]
    assert Scheduler(grace_period=1, reduction_factor=3).rung_epochs(10) == [1, 3, 9]
    assert Scheduler(rungs=[2, 5]).rung_epochs(6) == [2, 5]


def test_explicit_rungs_load_and_skip_the_grace_check(tmp_path: Path) -> None:
    # grace_period 10 >= budget 6 would be refused with geometric rungs; explicit rungs replace it
    space = load_space(write(tmp_path, sched(grace_period=10, rungs=[1, 3, 5], window=2,
                                             synchronous=False)))
    s = space.spec.search.scheduler
    assert s.rungs == [1, 3, 5] and s.window == 2 and s.synchronous is False
    text = describe(space)
    assert "rungs at epochs [1, 3, 5]" in text and "last 2 epochs" in text
    assert "asynchronous" in text
    assert "rungs at epochs [1, 2, 4]" in describe(load_space(write(tmp_path, sched(
        grace_period=1, reduction_factor=2))))
    with pytest.raises(ConfigError, match="grace_period: 10 is not below the budget"):
        load_space(write(tmp_path, sched(grace_period=10)))


@pytest.mark.parametrize("rungs,needle", [
    ([3, 2], "strictly increasing"),
    ([2, 2], "strictly increasing"),
    ([0, 2], ">= 1"),
    ([], "at least one rung"),
    ([2, 6], "below the budget of 6 epochs"),
    ([2, 9], "[9] are not"),
    ("2,4", "valid list"),
])
def test_bad_rungs_are_refused(tmp_path: Path, rungs, needle) -> None:
    with pytest.raises(ConfigError) as err:
        load_space(write(tmp_path, sched(rungs=rungs)))
    msg = str(err.value)
    assert "search.scheduler.rungs" in msg and needle in msg, msg


def test_window_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search\.scheduler\.window: Input should be greater than"
                                          r" or equal to 1 \(got 0\)"):
        load_space(write(tmp_path, sched(window=0)))


def test_describe_reads_the_method_table() -> None:
    text = describe(load_space(SPACES / "kd.yaml"))
    assert "uses loss fields tau, alpha, multiplier, semantics" in text
    assert "needs a teacher checkpoint" in text


def test_set_reaches_dotted_parameter_names(tmp_path: Path) -> None:
    p = write(tmp_path, {**grid(**{"loss.tau": [1.0, 2.0]}), "searcher": {"kind": "random"}})
    space = load_space(p, {"search.params.loss.tau.values": [4.0, 8.0, 16.0],
                           "search.params.loss.alpha": {"kind": "uniform", "low": 0.1,
                                                        "high": 0.9}})
    assert space.params["loss.tau"].values == [4.0, 8.0, 16.0]
    assert space.params["loss.alpha"].low == 0.1


@pytest.mark.parametrize("pack,gpu,gpus,packed", [
    (None, 0.25, 8, True), (None, 1.0, 8, False), (None, 0.25, 0, False),  # default: shared GPUs only
    (False, 0.25, 8, False), (True, 0.0, 0, True),  # explicit: pack true packs CPU trials too
])
def test_packing_follows_the_gpu_share_unless_set(tmp_path: Path, pack, gpu, gpus, packed) -> None:
    from tfkd_search.spaces import packs

    resources = {"cpu": 1, "gpu": gpu, **({} if pack is None else {"pack": pack})}
    space = load_space(write_space(tmp_path / "p.yaml", "p", {
        "params": grid_params(**{"loss.tau": [1.0, 4.0]}), "searcher": {"kind": "grid"},
        "resources": resources}))
    assert packs(space, gpu if gpus else 0.0) is packed
    shown = "packed: the trials of a GPU share one host process" in describe(space, gpus=gpus, cpus=8)
    assert shown is packed
