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
      scheduler: {kind: asha | none, metric: val_acc, mode: max, grace_period: 10, reduction_factor: 3,
                  rungs: null, synchronous: true, window: 1}
      resources: {cpu: 1, gpu: 0.25}
    export: {top_k: 3, seeds: [0, 1, 2], epochs: 200}

Bounds: `uniform`/`loguniform` sample [low, high]; `int` includes both ends; `grid` visits every value;
`choice` samples one value.

Scheduler (ASHA, `max_t` = the budget in epochs):

* `rungs`: explicit rung epochs, strictly increasing, each >= 1 and below the budget; null (default)
  = geometric rungs grace_period * reduction_factor**k below the budget.
* `synchronous` (default true): a rung is decided once it is complete (every trial that can reach
  it has reported there), so the result does not depend on the order results arrive; false =
  classic asynchronous ASHA (decide as results arrive).
* `window` (default 1): the rung and ranking metric is the mean of `metric` over the last `window`
  epochs (1 = the last epoch's value).

Every problem is reported at once (`load_space`): unknown keys and bad values in the spec and the
base config, unknown search parameters, parameter values that give an invalid run config, and the
checks that need the budget. A problem caused by a `--set` override names it instead of the file.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, model_validator

from pydantic import TypeAdapter

from .config import (ConfigError, FieldProblems, RunConfig, Strict, attribute, build_run_config,
                     check_run_config, config_to_dict, flatten, get_path, override_labels, read_yaml,
                     set_path, validation_problems, with_overrides)
from .errors import Problem
from .finalists import BASELINES, fresh_seeds
from .modelref import model_label
from .registry import METHOD_REGISTRY, did_you_mean
from .stats import MIN_SEEDS


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
    rungs: list[int] | None = Field(
        None, description="explicit rung epochs, strictly increasing, each >= 1 and below the "
        "budget; null = geometric: grace_period * reduction_factor**k")
    synchronous: bool = Field(
        True, description="decide a rung once every trial that can reach it has reported there "
        "(order-independent); false = classic asynchronous ASHA")
    window: int = Field(1, ge=1, description="rung/ranking metric = mean of `metric` over the last "
                        "`window` epochs")

    @model_validator(mode="after")
    def _rungs(self) -> Scheduler:
        r = self.rungs
        if r is None:
            return self
        if not r:
            raise FieldProblems([("rungs", "needs at least one rung epoch; use null for geometric "
                                  "rungs from grace_period and reduction_factor", r)])
        if any(x < 1 for x in r) or any(b <= a for a, b in zip(r, r[1:])):
            raise FieldProblems([("rungs", "rung epochs must be strictly increasing and each >= 1, "
                                  "e.g. [2, 6, 18]", r)])
        return self

    def rung_epochs(self, budget: int) -> list[int]:
        """The rungs below `budget`: the explicit ones, or the geometric grace*rf**k."""
        from .scheduling import rung_epochs

        return rung_epochs(budget, self.grace_period, self.reduction_factor, self.rungs)


class Resources(Strict):
    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0, le=1.0, description="share of one GPU per trial, 1/k")
    pack: bool | None = Field(None, description="run the trials that share a GPU in one process, each "
                              "on its own CUDA stream (default: when gpu < 1 and GPUs are used)")


class Finalists(Strict):
    """After the halving, the best `top` configs and the baselines CE and LSR are trained again at the
    search budget on `seeds` fresh seeds (paired: the same seeds for all); `finalists.py`."""

    top: int = Field(2, ge=0, description="configs trained again on fresh seeds (0: no finalists)")
    seeds: int = Field(3, ge=0, description="fresh seeds per finalist and baseline (0: no finalists); "
                       "an interval needs at least 3")

    @property
    def enabled(self) -> bool:
        return self.top > 0 and self.seeds > 0


class SearchBlock(Strict):
    params: dict[str, Distribution] = Field(min_length=1)
    searcher: Searcher = Searcher()
    num_samples: int = Field(1, ge=1, description="random/optuna: trials; grid: repeats of the grid")
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    max_concurrent: int | None = Field(None, ge=1, description="most trials running at once (trials "
                                       "waiting at a synchronous rung do not count)")
    max_trials: int = Field(1000, ge=1, description="refuse grids larger than this")
    max_failures: int = Field(2, ge=0, description="retries of a crashed trial from its checkpoint")
    finalists: Finalists = Finalists()


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
    """A validated search space: the spec, its source, the validated base config, the raw tree (with
    overrides applied), the overrides themselves (target path -> value, e.g. base.loss.tau) and what
    to call each one in a message (target path -> e.g. "--set loss.tau=2", see override_labels)."""

    def __init__(self, spec: SearchSpace, source: str, base: RunConfig, raw: dict[str, Any],
                 overrides: Mapping[str, Any] | None = None,
                 origins: Mapping[str, str] | None = None) -> None:
        self.spec, self.source, self.base, self.raw = spec, source, base, raw
        self.overrides: dict[str, Any] = dict(overrides or {})
        self.origins: dict[str, str] = dict(origins or {})

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

    def distinct_configs(self) -> int:
        """How many different configs the search can try (a grid's repeats are the same configs)."""
        s = self.spec.search
        return self.grid_size() if s.searcher.kind == "grid" else s.num_samples

    def finalist_trials(self) -> int:
        """Trials of the finalists stage: (finalists + baselines) x fresh seeds (0 when off)."""
        f = self.spec.search.finalists
        if not f.enabled:
            return 0
        return (min(f.top, self.distinct_configs()) + len(BASELINES)) * f.seeds

    def base_dict(self) -> dict[str, Any]:
        return config_to_dict(self.base)

    def trial_config(self, params: Mapping[str, Any]) -> RunConfig:
        return build_run_config(with_overrides(self.base_dict(), params), source=self.source,
                                prefix="base")


_DISTRIBUTION: TypeAdapter[Any] = TypeAdapter(Distribution)


def _valid_paths() -> list[str]:
    paths = flatten(config_to_dict(RunConfig()))
    paths.pop("teacher", None)
    return sorted([*paths, "teacher.checkpoint", "teacher.model"])


def _model_argument_problem(key: str, base_raw: Any) -> str | None:
    """Why `key` cannot be searched as a keyword argument of the base's model reference
    (`model.<argument>`), or None when it can (or is no such key)."""
    if not key.startswith("model."):
        return None
    model = base_raw.get("model") if isinstance(base_raw, Mapping) else None
    argument = key.removeprefix("model.")
    if not isinstance(model, Mapping):
        return (f"{key} is a keyword argument of a model reference, but base.model is "
                f"{model if model is not None else 'tiny_cnn'!r}, which takes none; write base.model as "
                f"{{_target_: 'package.module:callable', {argument}: ...}} (or timm:/torchvision: "
                f"as its _target_)")
    if not argument.isidentifier() or argument.startswith("_"):
        return (f"{argument!r} is not a keyword argument name; search model.<argument> with a "
                f"Python identifier, e.g. model.drop_rate")
    return None


def _override_target(key: str) -> str:
    """Where a `--set` key applies: the space file (base./search./export./name...) or the base."""
    return key if key.split(".", 1)[0] in SearchSpace.model_fields else f"base.{key}"


def _param_aware(raw: Mapping[str, Any], target: str) -> list[str]:
    """Key list of an override target; below search.params the parameter name keeps its dots: an
    existing parameter is matched whole (search.params.loss.tau.values), a new one takes the rest
    (search.params.loss.eps={kind: grid, values: [0.1]})."""
    prefix = "search.params."
    if not target.startswith(prefix):
        return target.split(".")
    rest = target[len(prefix):]
    params = get_path(raw, "search.params")
    names = sorted(params, key=len, reverse=True) if isinstance(params, Mapping) else []
    for name in names:
        if rest == name or rest.startswith(name + "."):
            return ["search", "params", name, *filter(None, rest[len(name):].split("."))]
    return ["search", "params", rest]


def _part(model: Any, raw: Any) -> Any:
    """`raw` validated as `model` (a pydantic class or TypeAdapter), or None when it is invalid (its
    problems are reported by the validation of the whole spec)."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(raw)
        return model.model_validate(raw)
    except ValidationError:
        return None


def load_space(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None, *,
               labels: Mapping[str, str] | None = None, num_classes: int | None = None) -> Space:
    """Load, validate and corner-check a search-space file; raises one ConfigError with every problem.

    `overrides` are `--set` values: keys starting with base./search./export./name apply to the file,
    any other key (e.g. `loss.tau`) to the base run config. A problem with a value an override
    supplied names the override ("--set loss.tau=-2: base.loss.tau: ..."), not the file; `labels`
    may name another origin for a key (e.g. {"base.data.data_dir": "--data-dir"}). `num_classes` is
    the class count read from an imagefolder/npz dataset (see config.check_run_config).
    """
    source = str(path)
    raw = read_yaml(path)
    overrides = dict(overrides or {})
    targets = {key: _override_target(key) for key in overrides}
    for key, value in overrides.items():
        set_path(raw, _param_aware(raw, targets[key]), value)
    problems: list[Problem] = []

    spec: SearchSpace | None = None
    try:
        spec = SearchSpace.model_validate(raw)
    except ValidationError as err:
        problems += validation_problems(err, source, root=SearchSpace)

    base: RunConfig | None = None
    base_raw = raw.get("base")
    base_seen: set[tuple[str, str]] = set()
    if isinstance(base_raw, dict):
        base, base_problems = check_run_config(base_raw, source, prefix="base",
                                               num_classes=num_classes)
        problems += base_problems
        base_seen = {(p.path, p.message) for p in base_problems}

    search_raw = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    params_raw = search_raw.get("params") if isinstance(search_raw.get("params"), dict) else {}
    searcher = spec.search.searcher if spec else _part(Searcher, search_raw.get("searcher", {}))
    valid = _valid_paths()
    for key, dist_raw in params_raw.items():
        where = f"search.params.{key}"
        argument = _model_argument_problem(key, base_raw)
        if argument:
            problems.append(Problem(source, where, argument))
            continue
        if key not in valid and not key.startswith("model."):
            problems.append(Problem(
                source, where, f"unknown parameter {key!r}.{did_you_mean(key, valid)} Parameters "
                f"are dotted paths of the run config, e.g. loss.tau, loss.alpha, loss.a"))
            continue
        dist = spec.search.params[key] if spec else _part(_DISTRIBUTION, dist_raw)
        if dist is None:
            continue
        if searcher is not None and searcher.kind == "grid" and not isinstance(dist, Grid):
            problems.append(Problem(
                source, where, f"searcher 'grid' needs kind: grid for every parameter, got kind: "
                f"{dist.kind}; use searcher 'random' or 'optuna' to sample it"))
        if searcher is not None and searcher.kind == "optuna" and isinstance(dist, Grid):
            problems.append(Problem(source, where,
                                    "searcher 'optuna' cannot take kind: grid; use kind: choice"))
        if not isinstance(base_raw, dict):
            continue
        typed = []
        for value in corners(dist):
            cfg, corner = check_run_config(with_overrides(base_raw, {key: value}), source,
                                           num_classes=num_classes)
            # the base's own problems are reported once, above; only what this value adds counts
            new = [p for p in corner if (p.under("base").path, p.message) not in base_seen]
            for p in new:
                problems.append(Problem(source, where, f"value {value!r} gives an invalid run "
                                        f"config: {p.detail()}"))
            if cfg is not None:
                typed.append(get_path(config_to_dict(cfg), key))
        if spec is not None and isinstance(dist, (Grid, Choice)) and len(typed) == len(dist.values):
            # values as the run config types them: YAML reads 1e-4 as the string '1e-4', which the
            # config accepts as a float; trials, MLflow and trials.parquet must see the float
            spec.search.params[key] = dist.model_copy(update={"values": typed})

    origins = override_labels(overrides, labels, targets)
    space = Space(spec, source, base, raw, {targets[k]: v for k, v in overrides.items()}, origins) \
        if spec is not None and base is not None else None
    if space is not None and space.num_trials() > spec.search.max_trials:  # type: ignore[union-attr]
        s = spec.search  # type: ignore[union-attr]
        problems.append(Problem(source, "search", f"the grid has {space.num_trials()} trials, more "
                                f"than search.max_trials={s.max_trials}; shrink the grid or raise "
                                f"max_trials"))
    given = (search_raw.get("finalists") or {}) if isinstance(search_raw.get("finalists"), dict) else {}
    if space is not None and spec.search.finalists.enabled and "top" in given:  # type: ignore[union-attr]
        top = spec.search.finalists.top  # type: ignore[union-attr]
        if top > space.distinct_configs():
            problems.append(Problem(source, "search.finalists.top", f"{top} finalists, but the search "
                                    f"tries only {space.distinct_configs()} configs; set "
                                    f"search.finalists.top to at most {space.distinct_configs()} "
                                    f"(0 turns the finalists off)", top))
    sch = spec.search.scheduler if spec else _part(Scheduler, search_raw.get("scheduler", {}))
    if base is not None and sch is not None and sch.kind == "asha":
        problems += _scheduler_problems(sch, base.schedule.trained_epochs, source)
    res = spec.search.resources if spec else _part(Resources, search_raw.get("resources", {}))
    g = res.gpu if res is not None else 0
    if g > 0 and abs(1 / g - round(1 / g)) > 1e-6:
        problems.append(Problem(source, "search.resources.gpu", f"{g} does not divide one GPU; use "
                                f"1/k (1, 0.5, 0.25, 0.2, ...) so trials pack evenly"))
    if problems:
        problems = attribute(problems, origins, parent_too=("search.params.",))
        header = "invalid search space"
        if any(p.origin for p in problems):
            header += f" ({source} with command-line overrides)"
        raise ConfigError(problems=problems, header=header)
    assert space is not None
    return space


def _scheduler_problems(sch: Scheduler, budget: int, source: str) -> list[Problem]:
    if sch.rungs is None:
        if sch.grace_period >= budget:
            return [Problem(source, "search.scheduler.grace_period",
                            f"{sch.grace_period} is not below the budget of {budget} epochs "
                            f"(base.schedule.budget), so ASHA could never stop a trial; lower "
                            f"grace_period or use scheduler kind: none")]
        return []
    late = [r for r in sch.rungs if r >= budget]
    if late:
        return [Problem(source, "search.scheduler.rungs",
                        f"rung epochs must be below the budget of {budget} epochs "
                        f"(base.schedule.budget), but {late} are not: a trial that reaches the budget "
                        f"is finished, so no cut can happen there; drop them or raise the budget",
                        sch.rungs)]
    return []


def corners(dist: Any) -> list[Any]:
    """The values that bound what a distribution gives: every grid/choice value, a range's ends."""
    if isinstance(dist, (Grid, Choice)):
        return list(dist.values)
    return [dist.low, dist.high]


def grid_points(space: Space) -> list[dict[str, Any]]:
    """Every point of the grid dimensions (for plans and tests)."""
    grid = {k: d.values for k, d in space.params.items() if isinstance(d, Grid)}
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def describe(space: Space, gpus: float = 0, cpus: float | None = None, facts: Any = None,
             gpu: tuple[str, int] | None = None, models: Sequence[Any] = ()) -> str:
    """Human-readable plan of a search (`--dry-run`, `validate`).

    `facts` (data.DatasetFacts) adds the dataset and its resident memory per trial and per GPU,
    compared with `gpu` = (name, free bytes) when a GPU is visible (data.visible_gpu); `models`: the
    facts of its checked models (`preflight_model.ModelFacts`), one line each."""
    s = space.spec.search
    b = space.base
    method = METHOD_REGISTRY.get(b.method)
    lines = [f"search space {space.spec.name!r} ({space.source})",
             f"  base: {b.method} ({b.loss.semantics} semantics), model {model_label(b.model)}, "
             f"dataset {b.data.dataset}, budget {space.budget} of {b.schedule.epochs} epochs "
             f"(schedule mode {b.schedule.mode})",
             f"  method {b.method}: {method.summary}; uses loss fields "
             f"{', '.join(method.loss_fields) or '(none)'}"
             f"{'; needs a teacher checkpoint' if method.needs_teacher else ''}",
             *(f"  {f.plan_line()}" for f in models),
             "  parameters:"]
    for k, d in space.params.items():
        if isinstance(d, (Grid, Choice)):
            lines.append(f"    {k:<24} {d.kind:<10} {d.values}")
        else:
            lines.append(f"    {k:<24} {d.kind:<10} [{d.low}, {d.high}]")
    sch = s.scheduler
    if sch.kind == "asha":
        metric = sch.metric if sch.window == 1 else f"mean {sch.metric} of the last {sch.window} epochs"
        how = ("explicit" if sch.rungs is not None else
               f"geometric: grace {sch.grace_period} x {sch.reduction_factor:g}^k")
        sched = (f"ASHA on {metric} ({sch.mode}), rungs at epochs {sch.rung_epochs(space.budget)} "
                 f"({how}), reduction {sch.reduction_factor:g}, max_t {space.budget}, "
                 f"{'synchronous (each rung decided when complete)' if sch.synchronous else 'asynchronous'}")
    else:
        sched = "none (every trial runs the whole budget)"
    lines += [f"  searcher: {s.searcher.kind} (seed {s.searcher.seed}); trials: {space.num_trials()}",
              f"  scheduler: {sched}",
              f"  resources per trial: {s.resources.cpu:g} CPU, {s.resources.gpu:g} GPU"
              + (", packed: the trials of a GPU share one host process, one CUDA stream each"
                 if packs(space, s.resources.gpu if gpus else 0.0) else ""),
              f"  at most {space.num_trials() * space.budget} trial-epochs without early stopping"]
    lines += _finalists_plan(space)
    conc = concurrency(space, gpus, cpus)
    if conc:
        lines.append(f"  concurrent trials: {conc} ({'GPUs' if gpus else 'CPUs'}: "
                     f"{gpus if gpus else cpus:g})")
    if facts is not None:
        lines.append(f"  dataset: {facts.summary()}")
        lines.append(f"  resident dataset: {dataset_memory(space, gpus, facts, gpu)[0]}")
    return "\n".join(lines)


def _finalists_plan(space: Space) -> list[str]:
    f = space.spec.search.finalists
    if not f.enabled:
        return ["  finalists: off (search.finalists.top or .seeds is 0): rank 1 is one seed's result"]
    b = space.base
    eps = b.loss.eps
    n = space.finalist_trials()
    seeds = fresh_seeds(b.seed, f.seeds)
    lines = [f"  finalists: the best {min(f.top, space.distinct_configs())} configs and the baselines "
             f"ce, lsr (eps {eps:g}) trained again for {space.budget} epochs on seeds {seeds} (the "
             f"search's is {b.seed}); {n} trials, {n * space.budget} more trial-epochs"]
    if METHOD_REGISTRY.get(b.method).needs_teacher:
        lines.append("    (a seed equal to the teacher checkpoint's seed is replaced by the next free one)")
    if f.seeds < MIN_SEEDS:
        lines.append(f"    note: {f.seeds} seed(s) give no confidence interval ({MIN_SEEDS} or more do)")
    grid = space.num_trials()
    if n * 2 >= grid:  # the replays (README, "How the winner is chosen"): a stage this large costs more
        halving = (f" (with the halving before it, the two stay under half a full grid from about "
                   f"{5 * n} configs)" if space.spec.search.scheduler.kind == "asha" else "")
        lines.append(f"    note: {n} finalist trials for {grid} search trials: the stage alone costs "
                     f"{100 * n / grid:.0f}% of a full grid's trial-epochs{halving}; "
                     f"search.finalists.top: 1 trains {3 * f.seeds} trials, top: 0 none")
    return lines


def dataset_copies(space: Space, gpus: float) -> int:
    """Copies of the resident dataset one GPU holds: one per host process when its trials are
    packed (they share it), else one per trial on that GPU."""
    share = space.spec.search.resources.gpu
    if not gpus or share <= 0 or packs(space, share):
        return 1
    return int(round(1 / share))


def dataset_memory(space: Space, gpus: float, facts: Any, gpu: tuple[str, int] | None
                   ) -> tuple[str, bool]:
    """(plan line, fits) of the dataset's resident memory: on each GPU, or per trial on the CPU."""
    from .userdata import human_bytes, memory_plan

    if not gpus:
        return f"{human_bytes(facts.resident_bytes)} per trial, in host memory (CPU trials)", True
    copies = dataset_copies(space, gpus)
    line, fits = memory_plan(facts.resident_bytes, copies, gpu)
    how = ("the trials of a GPU share one copy (packed)" if copies == 1 and
           space.spec.search.resources.gpu < 1 else f"{copies} trial(s) per GPU, one copy each")
    return f"{line}; {how}", fits


def packs(space: Space, gpu_share: float) -> bool:
    """Whether the trials of a GPU share one host process (`search.resources.pack`; default: when
    trials share a GPU)."""
    pack = space.spec.search.resources.pack
    return bool(pack) if pack is not None else 0 < gpu_share < 1


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
