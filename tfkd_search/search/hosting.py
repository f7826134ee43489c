"""Packed trials under Ray: one `packing.TrialHost` actor per GPU, found through a registry actor.

The trials keep their Ray resources (a 1/k GPU share, CPUs), so Tune still places at most k of them
on a GPU and the scheduler, searcher, tracker and `--resume` see ordinary trials. What changes is where
the tensors live: a trial's worker does not touch the GPU; it asks the host actor of its node and GPU
to train its config and relays the host's epoch reports (and checkpoints) to Tune. The host runs all
its trials in one process, each on its own CUDA stream (see `tfkd_search.packing`).

Lifetimes: the driver owns the registry and the registry owns the hosts, so they end with the search
(the driver kills the registry at the end; Ray ends owned actors with their owner). A host drops the
trial of a worker that died (Tune stopped or paused the trial), checked every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping
from typing import Any

REAP_EVERY_S = 5.0


class HostActor:
    """A `TrialHost` as a threaded Ray actor; each call is served on its own thread."""

    def __init__(self, slot: str, max_trials: int) -> None:
        from ..packing import TrialHost

        self.host = TrialHost(device_for_slot(slot), max_trials=max_trials)
        threading.Thread(target=self._reap, name="tfkd-host-reaper", daemon=True).start()

    def open(self, key: str, cfg: Any, resume: Mapping[str, Any] | None, rungs: Collection[int],
             checkpoint_every: int, owner: Any) -> str:
        self.host.open(key, cfg, resume=resume, rungs=rungs, checkpoint_every=checkpoint_every,
                       owner=owner)
        return str(self.host.device)

    def next(self, key: str) -> Any:
        return self.host.next(key)

    def close(self, key: str) -> None:
        self.host.close(key)

    def opened(self) -> int:
        return self.host.opened

    def _reap(self) -> None:
        """Drop the trials whose worker died: nobody will ask for their next epoch."""
        import ray

        while True:
            time.sleep(REAP_EVERY_S)
            for key, owner in self.host.owners().items():
                if owner is None:
                    continue
                ref = owner.__ray_ready__.remote()
                ready, _ = ray.wait([ref], timeout=2.0)
                if not ready:
                    continue  # busy (it is waiting on us): alive
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError:
                    self.host.close(key)


class HostRegistry:
    """The host actor of each (node, device), made on first request (a Ray actor owned by the driver)."""

    def __init__(self, max_trials: int) -> None:
        self.max_trials = max_trials
        self.hosts: dict[tuple[str, str], Any] = {}
        self.lock = threading.Lock()

    def host(self, node_id: str, slot: str, dead: str | None = None) -> Any:
        """The host of (node, slot); `dead`: the actor id of a host a trial found dead (made anew)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with self.lock:
            held = self.hosts.get((node_id, slot))
            if held is not None and dead is not None and held._actor_id.hex() == dead:
                del self.hosts[(node_id, slot)]
            if (node_id, slot) not in self.hosts:
                # No Ray resources: the trials' GPU shares already reserve the GPU. 2.60 leaves
                # CUDA_VISIBLE_DEVICES alone for an actor without GPUs, so it sees the node's GPUs.
                actor = ray.remote(HostActor).options(
                    num_cpus=0, num_gpus=0, max_concurrency=4 * self.max_trials + 8,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
                self.hosts[(node_id, slot)] = actor.remote(slot, self.max_trials)
            return self.hosts[(node_id, slot)]

    def summary(self) -> str:
        """One line for the driver: how many hosts served how many trial starts."""
        import ray

        with self.lock:
            hosts = list(self.hosts.values())
        starts = sum(ray.get([h.opened.remote() for h in hosts])) if hosts else 0
        return (f"packing: {len(hosts)} host process{'es' if len(hosts) != 1 else ''} served "
                f"{starts} trial starts")


def start_registry(max_trials: int) -> Any:
    """The search's host registry (on the driver's node; it uses no resources)."""
    import ray

    actor = ray.remote(HostRegistry).options(num_cpus=0, max_concurrency=64)
    return actor.remote(max_trials)


def stop_registry(registry: Any, printer: Any) -> None:
    import ray

    try:
        printer(ray.get(registry.summary.remote(), timeout=30))
    except Exception as err:  # noqa: BLE001 - a summary line must not fail a finished search
        printer(f"packing: no host summary ({type(err).__name__})")
    ray.kill(registry)  # its hosts go with it (owned actors share their owner's fate)


def slot_of_this_worker() -> str:
    """Which host a trial uses on its node: its first assigned GPU's Ray id, or "cpu"."""
    import ray

    ids = [str(i) for i in ray.get_gpu_ids()]
    return ids[0] if ids else "cpu"


def device_for_slot(slot: str) -> str:
    """The torch device of a host for Ray GPU id `slot`, in the host's own process.

    Ray names a GPU by its id among the GPUs its node was started with (CUDA_VISIBLE_DEVICES of the
    node, inherited by the host), which is not always the CUDA ordinal the host sees."""
    import os

    if slot == "cpu":
        return "cpu"
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return f"cuda:{visible.index(slot) if slot in visible else int(slot)}"


def hosted_train(registry: Any, key: str, cfg: Any, *, resume: Mapping[str, Any] | None,
                 rungs: Collection[int], checkpoint_every: int, report: Any,
                 oom_error: Any) -> None:
    """Train `cfg` on this worker's host, passing every epoch to `report` like `trainer.train` does.

    `oom_error(detail)` builds the exception raised when the host ran out of memory for this trial."""
    import ray

    from ..packing import relay

    ctx = ray.get_runtime_context()
    node, slot, owner = ctx.get_node_id(), slot_of_this_worker(), ctx.current_actor
    host = ray.get(registry.host.remote(node, slot))
    try:
        ray.get(host.open.remote(key, cfg, resume, list(rungs), checkpoint_every, owner))
    except ray.exceptions.RayActorError:  # the host died (a crash takes all its trials): a new one
        host = ray.get(registry.host.remote(node, slot, host._actor_id.hex()))
        ray.get(host.open.remote(key, cfg, resume, list(rungs), checkpoint_every, owner))
    try:
        relay(lambda: ray.get(host.next.remote(key)), report, oom_error)
    finally:
        try:
            host.close.remote(key)
        except Exception:  # noqa: BLE001 - the host is gone: nothing to close
            pass
