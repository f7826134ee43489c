"""Search spaces: every shipped file loads; bad spaces are rejected with every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tfkd_search.errors import ConfigError
from tfkd_search.spaces import describe, grid_points, load_space

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
BASE = {"model": "tiny_cnn", "method": "tfkd_reg", "data": {"dataset": "digits"},
        "schedule": {"epochs": 6, "milestones": [4]}}


def write(tmp_path: Path, search: dict, **top) -> Path:
    doc = {"name": "t", "base": BASE, "search": search, **top}
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def grid(**params) -> dict:
    return {"params": {k: {"kind": "grid", "values": v} for k, v in params.items()}}


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_loads(path: Path) -> None:
    space = load_space(path)
    assert space.num_trials() >= 1
    assert space.params
    text = describe(space, gpus=8, cpus=64)
    assert space.spec.name in text


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
