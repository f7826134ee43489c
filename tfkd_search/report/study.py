"""In-memory Optuna studies built from a run's trials, for Optuna's plots and importance evaluators.

Parameter importances are computed at one fidelity (issue 13, point 10): mixing the accuracy of a trial
ASHA stopped after 2 epochs with that of one that trained 8 would credit the parameters with the
difference the epochs make. The study for importances therefore holds, for every trial that reached
one epoch E, the run's ranking metric at E (windowed as the ranking does); E is the highest epoch that
enough trials reached.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..runfolder import windowed
from .data import Param, RunData, is_num

MIN_TRIALS = 4  # trials an importance estimate needs at least (more with more parameters)


@contextmanager
def quiet_optuna() -> Iterator[Any]:
    """Optuna without its ExperimentalWarning (the matplotlib plots are 'experimental') and without
    its INFO lines ("A new study created in memory ...")."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(verbosity)


def distribution(param: Param, observed: Sequence[Any]) -> Any:
    """An Optuna distribution from the parameter's kind, widened to cover the observed values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = param.kind
    nums = [v for v in observed if is_num(v)]
    numeric = len(nums) == len(observed) and bool(nums)
    if kind in ("uniform", "loguniform") and numeric:
        lo = min([*(x for x in (param.low,) if x is not None), *map(float, nums)])
        hi = max([*(x for x in (param.high,) if x is not None), *map(float, nums)])
        if hi <= lo:
            return CategoricalDistribution(sorted(set(nums)))
        return FloatDistribution(lo, hi, log=kind == "loguniform" and lo > 0)
    if kind == "int" and numeric and all(float(v).is_integer() for v in nums):
        lo = int(min([*(x for x in (param.low,) if x is not None), *nums]))
        hi = int(max([*(x for x in (param.high,) if x is not None), *nums]))
        return IntDistribution(lo, hi)
    if kind in ("grid", "choice") or not numeric:
        choices: list[Any] = []
        for v in [*param.values, *observed]:
            v = v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
            if v not in choices:
                choices.append(v)
        return CategoricalDistribution(choices)
    lo, hi = min(nums), max(nums)
    if hi <= lo:
        return CategoricalDistribution([lo])
    if all(isinstance(v, int) for v in nums):
        return IntDistribution(int(lo), int(hi))
    return FloatDistribution(float(lo), float(hi))


def build_study(data: RunData, rows: Any, values: Sequence[float], params: Sequence[str]) -> Any:
    """An in-memory study, one COMPLETE trial per row (in trial order), valued by `values`."""
    from optuna.distributions import CategoricalDistribution

    with quiet_optuna() as optuna:
        dists = {p: distribution(data.params.get(p, Param(p)), list(rows[p])) for p in params}
        study = optuna.create_study(
            direction="maximize" if data.ranking.mode == "max" else "minimize",
            study_name=f"{data.name}-report")
        study.set_metric_names([data.metric])
        trials = []
        for (_, row), value in zip(rows.iterrows(), values):
            ps = {}
            for p in params:
                v = row[p]
                if isinstance(dists[p], CategoricalDistribution) and v not in dists[p].choices:
                    v = str(v)
                ps[p] = v
            trials.append(optuna.trial.create_trial(
                params=ps, distributions=dists, value=float(value),
                user_attrs={"trial_id": str(row["trial_id"]), "status": str(row["status"])}))
        study.add_trials(trials)
    return study


def finished_study(data: RunData) -> tuple[Any, list[str], Any]:
    """(study of the finished trials valued by their score, the parameters, the rows) or Nones.

    The score is the ranking's value: a stopped-early trial's comes from the epochs it trained."""
    ok = data.finished()
    params = [p for p in data.params if p in ok and ok[p].notna().any()]
    if not len(ok) or not params:
        return None, params, ok
    ok = ok.dropna(subset=params)
    if not len(ok):
        return None, params, ok
    ok = ok.sort_values("trial_index", kind="mergesort")
    return build_study(data, ok, list(ok["score"]), params), params, ok


@dataclass
class Importance:
    values: dict[str, float] | None          # parameter -> importance (sums to 1), None: not computed
    note: str                                 # how they were computed, or why not
    fixed: list[str] = field(default_factory=list)  # left out: one value only
    epoch: int | None = None                  # the fidelity: the epoch the metric was taken at
    trials: int = 0                           # trials in the study
    evaluator: str = ""                       # "fANOVA" or "mean decrease in impurity"
    study: Any = None                         # the in-memory study (for Optuna's plot)


def fidelity(data: RunData, n_params: int) -> tuple[int | None, Any, int]:
    """(epoch E, per-trial metric at E windowed as the ranking does, trials wanted).

    E is the highest epoch that at least `max(MIN_TRIALS, n_params + 2)` trials reached without
    diverging; when fewer trials than that exist, the highest epoch with the most trials (>= 2)."""
    import pandas as pd

    want = max(MIN_TRIALS, n_params + 2)
    metric = data.metric
    h = data.history
    h = h[(h["diverged"].fillna(0) == 0) & pd.to_numeric(h[metric], errors="coerce").notna()] \
        if len(h) and metric in h else h.iloc[0:0]
    if not len(h):
        return None, {}, want
    reach = h.groupby("epoch")["trial_id"].nunique()
    enough = reach[reach >= want]
    if len(enough):
        epoch = int(enough.index.max())
    else:
        most = int(reach.max())
        if most < 2:
            return None, {}, want
        epoch = int(reach[reach == most].index.max())
    at = set(h.loc[h["epoch"] == epoch, "trial_id"])
    scores = {}
    for tid, g in h[h["trial_id"].isin(at) & (h["epoch"] <= epoch)].groupby("trial_id"):
        scores[tid] = windowed(list(g.sort_values("epoch")[metric].astype(float)), data.ranking.window)
    return epoch, {k: v for k, v in scores.items() if math.isfinite(v)}, want


def metric_at(data: RunData, epoch: int) -> str:
    w = data.ranking.window
    return (f"{data.metric} at epoch {epoch}" if w <= 1
            else f"mean {data.metric} over epochs {max(1, epoch - w + 1)}-{epoch}")


def param_importances(data: RunData) -> Importance:
    """Importances of the searched parameters for the ranking metric at one fidelity."""
    t = data.trials
    params = [p for p in data.params if p in t and t[p].notna().any()]
    if not params:
        return Importance(None, "No searched parameter values are recorded for the trials of this run.")
    epoch, scores, want = fidelity(data, len(params))
    rows = t[t["trial_id"].isin(list(scores))].dropna(subset=params) if epoch else t.iloc[0:0]
    if epoch is None or len(rows) < 2:
        return Importance(None, f"Parameter importance needs at least 2 trials that reached the same "
                                f"epoch with their parameter values recorded; this run has {len(rows)}.")
    rows = rows.sort_values("trial_index", kind="mergesort")
    values = [scores[tid] for tid in rows["trial_id"]]
    varying = [p for p in params if rows[p].nunique() > 1]
    fixed = [p for p in params if p not in varying]
    where = f"{metric_at(data, epoch)} of the {len(rows)} trials that reached epoch {epoch}"
    base = Importance(None, "", fixed, epoch, len(rows))
    if not varying:
        base.note = (f"Every searched parameter took a single value among the {where}, so there is "
                     f"nothing to attribute the differences to.")
        return base
    if len(set(values)) < 2:
        base.note = (f"All {len(rows)} trials that reached epoch {epoch} scored the same "
                     f"{data.metric} there, so no parameter made a difference that can be measured.")
        return base
    study = build_study(data, rows, values, varying)
    result, how = _evaluate(study, varying)
    if not result:
        base.note = f"Optuna could not compute importances for this run ({how or 'no result'})."
        return base
    few = (f" Fewer than the {want} trials wanted for {len(params)} parameters reached any epoch, so "
           f"this uses the epoch most trials reached." if len(rows) < want else
           f" Epoch {epoch} is the highest that at least {want} trials reached (the number wanted "
           f"for {len(params)} parameters).")
    note = (f"Optuna's {how} importance evaluator on the {where} (one fidelity: trials that trained "
            f"longer count with their value at epoch {epoch}).{few}")
    if len(varying) == 1:
        note += f" Only {varying[0]} varied, so it carries all the importance by construction."
    return Importance({k: float(v) for k, v in result.items()}, note, fixed, epoch, len(rows), how,
                      study)


def _evaluate(study: Any, params: list[str]) -> tuple[dict[str, float] | None, str]:
    """fANOVA first, mean decrease in impurity second."""
    from optuna.importance import (FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator,
                                   get_param_importances)

    how = ""
    with quiet_optuna():
        for label, evaluator in (("fANOVA", FanovaImportanceEvaluator(seed=0)),
                                 ("mean decrease in impurity",
                                  MeanDecreaseImpurityImportanceEvaluator(seed=0))):
            try:
                result = get_param_importances(study, evaluator=evaluator, params=params)
            except Exception as exc:  # noqa: BLE001 - try the next evaluator, then give a note
                how = f"{type(exc).__name__}: {exc}"
                continue
            if result and all(math.isfinite(v) for v in result.values()):
                return dict(result), label
    return None, how


__all__ = ["Importance", "build_study", "distribution", "fidelity", "finished_study", "metric_at",
           "param_importances", "quiet_optuna"]
