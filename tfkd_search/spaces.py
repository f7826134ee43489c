"""Search spaces: a base run config plus a `search` block, typed and validated before Ray starts.

File format (see search_spaces/*.yaml)::

    name: tfkd-reg-resnet18-cifar100
    base: {...a complete run config...}
    search:
      params:
        loss.tau:   {kind: grid, values: [1, 2, 4, 8]}
        loss.alpha: {kind: uniform, low: 0.1, high: 0.9}
      searcher:  {kind: grid | random | optuna, seed: 0}
      num_samples: 1
      scheduler: {kind: asha | none, metric: val_acc, mode: max, grace_period: 10, reduction_factor: 3}
      resources: {cpu: 1, gpu: 0.25}
    export: {top_k: 3, seeds: [0, 1, 2], epochs: 200}

Bounds: `uniform`/`loguniform` sample [low, high]; `int` includes both ends; `grid` visits every value;
`choice` samples one value.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, model_validator

from .config import (ConfigError, RunConfig, Strict, build_run_config, config_to_dict, flatten,
                     format_validation_error, get_path, read_yaml, with_overrides)
from .registry import did_you_mean


class Grid(Strict):
    kind: Literal["grid"]
    values: list[Any] = Field(min_length=1)


class Choice(Strict):
    kind: Literal["choice"]
    values: list[Any] = Field(min_length=1)


class Uniform(Strict):
    kind: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _range(self) -> Uniform:
        if not self.low < self.high:
            raise ValueError(f"need low < high, got low={self.low}, high={self.high}; set low below "
                             f"high (a single value is kind: grid or choice)")
        return self


class LogUniform(Strict):
    kind: Literal["loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _range(self) -> LogUniform:
        if not self.low > 0:
            raise ValueError(f"loguniform needs low > 0, got low={self.low}; use uniform for "
                             f"ranges that include 0")
        if not self.low < self.high:
            raise ValueError(f"need low < high, got low={self.low}, high={self.high}")
        return self


class IntRange(Strict):
    kind: Literal["int"]
    low: int
    high: int  # inclusive

    @model_validator(mode="after")
    def _range(self) -> IntRange:
        if not self.low <= self.high:
            raise ValueError(f"need low <= high, got low={self.low}, high={self.high}")
        return self


Distribution = Annotated[Union[Grid, Choice, Uniform, LogUniform, IntRange],
                         Field(discriminator="kind")]


class Searcher(Strict):
    kind: Literal["grid", "random", "optuna"] = "grid"
    seed: int = 0


class Scheduler(Strict):
    kind: Literal["asha", "none"] = "asha"
    metric: Literal["val_acc", "val_loss"] = "val_acc"
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, description="epochs before the first ASHA cut")
    reduction_factor: float = Field(3.0, gt=1.0)


class Resources(Strict):
    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0, le=1.0, description="share of one GPU per trial, 1/k")


class SearchBlock(Strict):
    params: dict[str, Distribution] = Field(min_length=1)
    searcher: Searcher = Searcher()
    num_samples: int = Field(1, ge=1, description="random/optuna: trials; grid: repeats of the grid")
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    max_concurrent: int | None = Field(None, ge=1)
    max_trials: int = Field(1000, ge=1, description="refuse grids larger than this")
    max_failures: int = Field(2, ge=0, description="retries of a crashed trial from its checkpoint")


class ExportBlock(Strict):
    top_k: int = Field(3, ge=1)
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    epochs: int = Field(200, ge=1, description="full schedule of the final runs")
    val_fraction: float = Field(0.0, ge=0.0, le=0.5, description="final runs train on all data")


class SearchSpace(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: dict[str, Any]
    search: SearchBlock
    export: ExportBlock = ExportBlock()


class Space:
    """A validated search space: the spec, its source, and the validated base config."""

    def __init__(self, spec: SearchSpace, source: str, base: RunConfig, raw: dict[str, Any]) -> None:
        self.spec, self.source, self.base, self.raw = spec, source, base, raw

    @property
    def params(self) -> dict[str, Any]:
        return self.spec.search.params

    @property
    def budget(self) -> int:
        return self.base.schedule.trained_epochs

    def grid_size(self) -> int:
        return math.prod(len(d.values) for d in self.params.values() if isinstance(d, Grid))

    def num_trials(self) -> int:
        s = self.spec.search
        if s.searcher.kind == "optuna":
            return s.num_samples
        return self.grid_size() * s.num_samples

    def base_dict(self) -> dict[str, Any]:
        return config_to_dict(self.base)

    def trial_config(self, params: Mapping[str, Any]) -> RunConfig:
        return build_run_config(with_overrides(self.base_dict(), params), source=self.source,
                                prefix="base")


def _valid_paths() -> list[str]:
    paths = flatten(config_to_dict(RunConfig()))
    paths.pop("teacher", None)
    return sorted([*paths, "teacher.checkpoint", "teacher.model"])


def load_space(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> Space:
    """Load, validate and corner-check a search-space file; raises one ConfigError with every problem.

    `overrides` are `--set` values: keys starting with base./search./export./name apply to the file,
    any other key (e.g. `loss.tau`) to the base run config.
    """
    source = str(path)
    raw = read_yaml(path)
    for key, value in (overrides or {}).items():
        top = key.split(".", 1)[0]
        target = key if top in SearchSpace.model_fields else f"base.{key}"
        raw = with_overrides(raw, {target: value})
    problems: list[str] = []
    try:
        spec = SearchSpace.model_validate(raw)
    except ValidationError as err:
        lines = [_fix_loc(x) for x in format_validation_error(source, err, root=SearchSpace)]
        if isinstance(raw.get("base"), dict):  # report the base config's problems too, all at once
            try:
                build_run_config(raw["base"], source=source, prefix="base")
            except ConfigError as base_err:
                lines += str(base_err).split("\n", 1)[-1].strip().split("\n  ")
        raise ConfigError("invalid search space:\n  " + "\n  ".join(lines)) from None
    try:
        base = build_run_config(spec.base, source=source, prefix="base")
    except ConfigError as err:
        raise ConfigError(str(err).replace("invalid run config", "invalid search space")) from None

    valid = _valid_paths()
    s = spec.search
    for key, dist in s.params.items():
        where = f"{source}: search.params.{key}"
        if key not in valid:
            problems.append(f"{where}: unknown parameter {key!r}.{did_you_mean(key, valid)} Parameters "
                            f"are dotted paths of the run config, e.g. loss.tau, loss.alpha, loss.a")
            continue
        if s.searcher.kind == "grid" and not isinstance(dist, Grid):
            problems.append(f"{where}: searcher 'grid' needs kind: grid for every parameter, got "
                            f"kind: {dist.kind}; use searcher 'random' or 'optuna' to sample it")
        if s.searcher.kind == "optuna" and isinstance(dist, Grid):
            problems.append(f"{where}: searcher 'optuna' cannot take kind: grid; use kind: choice")
        typed = []
        for value in _corners(dist):
            try:
                cfg = build_run_config(with_overrides(spec.base, {key: value}), source=source)
            except ConfigError as err:
                msg = str(err).split("\n", 1)[-1].strip().removeprefix(f"{source}: ")
                problems.append(f"{where}: value {value!r} gives an invalid run config: {msg}")
                continue
            typed.append(get_path(config_to_dict(cfg), key))
        if isinstance(dist, (Grid, Choice)) and len(typed) == len(dist.values):
            # values as the run config types them: YAML reads 1e-4 as the string '1e-4', which the
            # config accepts as a float; trials, MLflow and trials.parquet must see the float
            s.params[key] = dist.model_copy(update={"values": typed})
    space = Space(spec, source, base, raw)
    if space.num_trials() > s.max_trials:
        problems.append(f"{source}: search: the grid has {space.num_trials()} trials, more than "
                        f"search.max_trials={s.max_trials}; shrink the grid or raise max_trials")
    sch = s.scheduler
    if sch.kind == "asha" and sch.grace_period >= space.budget:
        problems.append(f"{source}: search.scheduler.grace_period: {sch.grace_period} is not below the "
                        f"budget of {space.budget} epochs (base.schedule.budget), so ASHA could never "
                        f"stop a trial; lower grace_period or use scheduler kind: none")
    g = s.resources.gpu
    if g > 0 and abs(1 / g - round(1 / g)) > 1e-6:
        problems.append(f"{source}: search.resources.gpu: {g} does not divide one GPU; use 1/k "
                        f"(1, 0.5, 0.25, 0.2, ...) so trials pack evenly")
    if problems:
        raise ConfigError("invalid search space:\n  " + "\n  ".join(problems))
    return space


def _fix_loc(line: str) -> str:
    # pydantic names union members ("search.params.loss.tau.uniform.low"); drop the tag names
    for tag in ("grid", "choice", "uniform", "loguniform", "int"):
        line = line.replace(f".{tag}.", ".").replace(f".{tag}: ", ": ")
    return line


def _corners(dist: Any) -> list[Any]:
    if isinstance(dist, (Grid, Choice)):
        return list(dist.values)
    return [dist.low, dist.high]


def grid_points(space: Space) -> list[dict[str, Any]]:
    """Every point of the grid dimensions (for plans and tests)."""
    grid = {k: d.values for k, d in space.params.items() if isinstance(d, Grid)}
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def describe(space: Space, gpus: float = 0, cpus: float | None = None) -> str:
    """Human-readable plan of a search (`--dry-run`, `validate`)."""
    s = space.spec.search
    b = space.base
    lines = [f"search space {space.spec.name!r} ({space.source})",
             f"  base: {b.method} ({b.loss.semantics} semantics), model {b.model}, "
             f"dataset {b.data.dataset}, budget {space.budget} of {b.schedule.epochs} epochs "
             f"(schedule mode {b.schedule.mode})",
             "  parameters:"]
    for k, d in space.params.items():
        if isinstance(d, (Grid, Choice)):
            lines.append(f"    {k:<24} {d.kind:<10} {d.values}")
        else:
            lines.append(f"    {k:<24} {d.kind:<10} [{d.low}, {d.high}]")
    sched = (f"ASHA on {s.scheduler.metric} ({s.scheduler.mode}), grace {s.scheduler.grace_period}, "
             f"reduction {s.scheduler.reduction_factor:g}, max_t {space.budget}"
             if s.scheduler.kind == "asha" else "none (every trial runs the whole budget)")
    lines += [f"  searcher: {s.searcher.kind} (seed {s.searcher.seed}); trials: {space.num_trials()}",
              f"  scheduler: {sched}",
              f"  resources per trial: {s.resources.cpu:g} CPU, {s.resources.gpu:g} GPU",
              f"  at most {space.num_trials() * space.budget} trial-epochs without early stopping"]
    conc = concurrency(space, gpus, cpus)
    if conc:
        lines.append(f"  concurrent trials: {conc} ({'GPUs' if gpus else 'CPUs'}: "
                     f"{gpus if gpus else cpus:g})")
    return "\n".join(lines)


def concurrency(space: Space, gpus: float, cpus: float | None) -> int | None:
    s = space.spec.search
    limits = []
    if s.max_concurrent:
        limits.append(s.max_concurrent)
    if gpus and s.resources.gpu > 0:
        limits.append(int(round(gpus / s.resources.gpu)))
    if cpus:
        limits.append(max(1, int(cpus // s.resources.cpu)))
    return min(limits) if limits else None


def resolved_for_trial(space: Space, gpu_share: float) -> dict[str, Any]:
    """Base dict adjusted for where the trial runs: CPU-only trials must never touch a GPU."""
    base = space.base_dict()
    if gpu_share == 0:
        base["device"] = "cpu"
    return base


def space_file_text(space: Space) -> str:
    return Path(space.source).read_text(encoding="utf-8")
