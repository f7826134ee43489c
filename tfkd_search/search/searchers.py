"""The space's searcher as a Tune search algorithm, with `search.max_concurrent` kept under synchronous rungs.

Ray's concurrency limits (`BasicVariantGenerator(max_concurrent=)`, `ConcurrencyLimiter`) count a trial as
live from its suggestion to its end. A trial paused at a synchronous rung is neither running nor ended, so
with those limits a cap smaller than the number of trials would stall the search: the paused trials wait
for the rung to complete, and the rung waits for trials the limit never lets start. The searchers here
count only the trials that are not waiting at a rung; the scheduler (`scheduler.make_scheduler`) tells
them which trials wait, after every decision, through `set_waiting`, and itself caps the trials it
resumes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from ..runfolder import Ranking
from ..spaces import Space
from .trial import SCORE


class _WaitingAware:
    """Mixin: `max_concurrent` = the cap plus the live trials that wait at a rung."""

    cap: int = 0
    waiting: frozenset[str] = frozenset()

    def set_waiting(self, trial_ids: Iterable[str]) -> None:
        self.waiting = frozenset(trial_ids)

    def _lift(self, live: set[str]) -> None:
        self.max_concurrent = self.cap + len(live & self.waiting)


class RungAwareVariants(_WaitingAware, BasicVariantGenerator):
    """Grid and random search, at most `cap` trials running (trials waiting at a rung not counted)."""

    def __init__(self, *, random_state: int | None, cap: int) -> None:
        super().__init__(random_state=random_state, max_concurrent=cap)
        self.cap = cap

    def next_trial(self) -> Any:
        self._lift(self._live_trials)
        return super().next_trial()


class RungAwareLimiter(_WaitingAware, ConcurrencyLimiter):
    """`ConcurrencyLimiter` for a model-based searcher (Optuna), counting as the variants above."""

    def __init__(self, searcher: Searcher, cap: int) -> None:
        super().__init__(searcher, max_concurrent=cap)
        self.cap = cap

    def suggest(self, trial_id: str) -> Any:
        self._lift(self.live_trials)
        return super().suggest(trial_id)


def make_searcher(space: Space, ranking: Ranking, max_concurrent: int | None, *,
                  rungs_wait: bool = False) -> Any:
    """The space's searcher (seeded: the same space suggests the same trials) as a Tune search algorithm,
    suggesting while fewer than `max_concurrent` trials run (None: no cap of its own). With `rungs_wait`
    (synchronous rungs) trials waiting at a rung are not counted (see the module docstring)."""
    s = space.spec.search
    if s.searcher.kind == "optuna":
        searcher: Any = OptunaSearch(seed=s.searcher.seed, metric=SCORE, mode=ranking.mode)
        if not max_concurrent:
            return searcher
        if rungs_wait:
            return RungAwareLimiter(searcher, max_concurrent)
        return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    if max_concurrent and rungs_wait:
        return RungAwareVariants(random_state=s.searcher.seed, cap=max_concurrent)
    return BasicVariantGenerator(random_state=s.searcher.seed, max_concurrent=max_concurrent or 0)


def tell_waiting(search_alg: Any, trial_ids: Iterable[str]) -> None:
    """Hand the trials waiting at a rung to the search algorithm, when it is one of the above (an
    Optuna limiter sits inside Tune's `SearchGenerator`, as `.searcher`)."""
    target = getattr(search_alg, "searcher", search_alg)
    if isinstance(target, _WaitingAware):
        target.set_waiting(trial_ids)
