"""The search driver: Ray Tune trials of `train()`, ASHA early stopping, Optuna, MLflow, export.

This is the only module that imports Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import config_to_dict, flatten, with_overrides
from .errors import ConfigError, TfkdError
from .io import atomic_write_json, ensure_writable_dir
from .spaces import Choice, Grid, IntRange, LogUniform, Space, Uniform, concurrency
from .tracking import Tracker, check_reachable, default_tracking_uri, git_revision, package_versions

Printer = Callable[[str], None]
STATE_FILE = "search.json"
# Worst value reported for a diverged trial so that schedulers and searchers move away from it.
WORST = {"max": 0.0, "min": 1e9}


@dataclass
class SearchOutcome:
    run_dir: Path
    trials: Any  # pandas DataFrame, one row per trial
    exported: list[Path]
    mlflow_uri: str
    parent_run_id: str


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a hard dependency, but say so clearly
        raise TfkdError("Ray Tune is not installed: pip install 'ray[tune]'") from None
    return ray


# ------------------------------------------------------------------------------------------------
# Search-space conversion


def to_tune(dist: Any) -> Any:
    """One of our distributions as a Ray Tune domain. Our `int` is inclusive on both ends."""
    from ray import tune

    match dist:
        case Grid(values=v):
            return tune.grid_search(list(v))
        case Choice(values=v):
            return tune.choice(list(v))
        case Uniform(low=lo, high=hi):
            return tune.uniform(lo, hi)
        case LogUniform(low=lo, high=hi):
            return tune.loguniform(lo, hi)
        case IntRange(low=lo, high=hi):
            return tune.randint(lo, hi + 1)  # Tune's randint excludes its upper bound
    raise TypeError(f"unknown distribution {dist!r}")


# ------------------------------------------------------------------------------------------------
# The trial (runs in a Ray worker process)


def run_trial(params: dict[str, Any], *, base: dict[str, Any], metric: str, mode: str,
              cpus: float, source: str) -> None:
    """Ray Tune function trainable: one trial = one `train()` with the searched values applied."""
    import torch
    from ray import tune

    from .config import build_run_config
    from .trainer import EpochReport, train

    cfg = build_run_config(with_overrides(base, params), source=source, prefix="base")
    cfg = cfg.model_copy(update={"threads": cfg.threads or max(1, int(cpus))})
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=True)

    def report(ep: EpochReport) -> None:
        m = {k: float(v) for k, v in ep.metrics.items()}
        m["epoch"] = ep.epoch
        m["diverged"] = 1.0 if ep.status == "diverged" else 0.0
        if ep.status == "diverged":
            # A diverged trial is a bad region, not a crash: report the worst score so ASHA stops
            # it and the searcher learns to avoid the region; the search goes on.
            m[metric] = WORST[mode]
            tune.report(m)
            return
        with tempfile.TemporaryDirectory(prefix="tfkd-ckpt-") as tmp:
            torch.save(ep.make_checkpoint(), Path(tmp) / "state.pt")
            tune.report(m, checkpoint=tune.Checkpoint.from_directory(tmp))

    train(cfg, report=report, resume=state or False)


RUNGS_FILE = "asha_rungs.json"


def make_asha(*, rungs_file: Path | None, **kwargs: Any) -> Any:
    """ASHA whose rung records survive a driver crash.

    Ray restores the scheduler from the pickle taken when the experiment started, so its rung
    records are empty after `Tuner.restore` (ray-project/ray#30838): resumed trials would then be
    compared against nothing. This ASHA writes its records to `rungs_file` (atomically) whenever they
    change and reads them back the first time it sees a trial after a restore.
    """
    from ray.tune.schedulers import ASHAScheduler

    class ResumableASHA(ASHAScheduler):
        def __init__(self, rungs_file: Path | None, **kw: Any) -> None:
            super().__init__(**kw)
            self._rungs_file = str(rungs_file) if rungs_file else None
            self._rungs_loaded = False

        def _load_rungs(self) -> None:
            self._rungs_loaded = True
            if not self._rungs_file or not Path(self._rungs_file).exists():
                return
            saved = json.loads(Path(self._rungs_file).read_text())
            for bracket, rungs in zip(self._brackets, saved):
                for (milestone, recorded), (m2, values) in zip(bracket._rungs, rungs):
                    if float(milestone) == float(m2):
                        for trial_id, value in values.items():
                            recorded.setdefault(trial_id, value)

        def _save_rungs(self) -> None:
            if self._rungs_file:
                atomic_write_json(self._rungs_file, [
                    [[m, {k: float(v) for k, v in rec.items()}] for m, rec in b._rungs]
                    for b in self._brackets])

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            if not self._rungs_loaded:
                self._load_rungs()
            super().on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if not self._rungs_loaded:
                self._load_rungs()
            if trial.trial_id not in self._trial_info:  # restored trial: one bracket is enough
                self._trial_info[trial.trial_id] = self._brackets[0]
            before = [len(r) for b in self._brackets for _, r in b._rungs]
            action = super().on_trial_result(tune_controller, trial, result)
            if before != [len(r) for b in self._brackets for _, r in b._rungs]:
                self._save_rungs()
            return action

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            if trial.trial_id not in self._trial_info:
                self._trial_info[trial.trial_id] = self._brackets[0]
            super().on_trial_complete(tune_controller, trial, result)
            self._save_rungs()

        def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
            self._trial_info.pop(trial.trial_id, None)

    return ResumableASHA(rungs_file, **kwargs)


# ------------------------------------------------------------------------------------------------
# Driver-side callback: progress lines and MLflow child runs


def _make_callback(tracking: dict[str, Any], params: list[str], budget: int, metric: str,
                   mode: str, total: int, printer: Printer) -> Any:
    from ray.tune import Callback

    class SearchCallback(Callback):
        """Logs every trial to MLflow (from the driver: one writer) and prints progress."""

        def __init__(self) -> None:
            self.tracking = dict(tracking)
            self._tracker: Tracker | None = None
            self._best: dict[str, float] = {}
            self._started = 0
            self.printer = printer

        def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; clients don't pickle
            return {"tracking": self.tracking, "_best": self._best, "_started": self._started}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)
            self._tracker = None
            self.printer = print

        @property
        def tracker(self) -> Tracker:
            if self._tracker is None:
                t = Tracker(self.tracking["uri"], self.tracking["experiment"])
                t.parent_id = self.tracking["parent_id"]
                self._tracker = t
            return self._tracker

        def _params(self, trial: Any) -> dict[str, Any]:
            return {k: trial.config.get(k) for k in params}

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._started += 1
            p = self._params(trial)
            self.tracker.child(trial.trial_id, f"trial-{trial.trial_id}", params=p,
                               tags={"tfkd.trial_id": trial.trial_id})
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in p.items())
            self.printer(f"[{_now()}] trial {trial.trial_id} started ({shown})")

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                            **info: Any) -> None:
            run_id = self.tracker.child(trial.trial_id, f"trial-{trial.trial_id}")
            epoch = int(result.get("epoch", result.get("training_iteration", 0)))
            self.tracker.log_epoch(run_id, result, epoch)
            value = float(result.get(metric, float("nan")))
            if value == value:
                prev = self._best.get(trial.trial_id)
                better = prev is None or (value > prev if mode == "max" else value < prev)
                if better:
                    self._best[trial.trial_id] = value
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
            self.printer(f"[{_now()}] trial {trial.trial_id} epoch {epoch}/{budget} {metric} "
                         f"{value:.4f}  (trials done {done}/{total}, best {self._overall():.4f})")

        def _overall(self) -> float:
            vals = list(self._best.values())
            if not vals:
                return float("nan")
            return max(vals) if mode == "max" else min(vals)

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            last = trial.last_result or {}
            outcome = _outcome(last, None, budget)
            self.tracker.end_child(trial.trial_id, outcome,
                                   {"tfkd.epochs": last.get("epoch")})
            self.printer(f"[{_now()}] trial {trial.trial_id} {outcome.replace('_', ' ')} after "
                         f"{last.get('epoch', 0)} epochs")

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            msg = _error_text(trial)
            self.tracker.end_child(trial.trial_id, "errored", {"tfkd.error": _error_tag(msg)})
            self.printer(f"[{_now()}] trial {trial.trial_id} errored: {msg.splitlines()[-1][:200]}")

    return SearchCallback()


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        if path and Path(path).exists():
            return Path(path).read_text(errors="replace").strip()
    except OSError:
        pass
    return str(getattr(trial, "error_msg", None) or "unknown error")


def _error_tag(text: str, limit: int = 4000) -> str:
    """The exception line first, then the end of the traceback (an MLflow tag has a size limit and
    the exception is the last line of the traceback)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    head = (lines[-1] if lines else "unknown error")[:1000]
    return head + "\n\n" + text.strip()[-(limit - len(head) - 2):]


def _outcome(last: dict[str, Any], error: Any, budget: int) -> str:
    if error is not None:
        return "errored"
    if float(last.get("diverged", 0.0) or 0.0) > 0:
        return "diverged"
    if int(last.get("epoch", 0) or 0) >= budget:
        return "completed"
    return "stopped_early"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _now() -> str:
    return time.strftime("%H:%M:%S")


# ------------------------------------------------------------------------------------------------
# Run folder bookkeeping


def _space_digest(space: Space) -> str:
    body = json.dumps({"base": space.base_dict(), "search": space.spec.search.model_dump(mode="json")},
                      sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _is_uri(path: str) -> bool:
    return "://" in path


def is_object_store(storage: str) -> bool:
    return _is_uri(storage) and not storage.startswith("file://")


def local_results_root() -> Path:
    """Where our own result files go when --storage is an object store (mirrored there at the end)."""
    return Path(os.environ.get("TFKD_RESULTS_DIR", "tfkd_runs")).expanduser().resolve()


def join_uri(uri: str, name: str) -> str:
    """uri/name, keeping a query string (s3://b/p?endpoint_override=... -> s3://b/p/name?...)."""
    base, sep, query = uri.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def upload_results(run_dir: Path, uri: str) -> None:
    """Copy the local results folder (trials.parquet, best/, report/, ...) to `uri` (s3://, gs://)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(run_dir), path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def prepare_run_dir(space: Space, storage: str, name: str, resume: bool) -> tuple[str, Path,
                                                                                     dict[str, Any]]:
    """Check the run folder for a new or resumed search; returns (Ray's storage, run dir, state).

    The run dir is always a local folder: the storage folder itself, or for an object store a local
    results folder (./tfkd_runs/NAME, or $TFKD_RESULTS_DIR/NAME) that is uploaded at the end while
    Ray keeps its experiment state and checkpoints in the bucket.
    """
    if is_object_store(storage):
        root, ray_storage = local_results_root(), storage.rstrip("/")
    else:
        root = Path(storage.removeprefix("file://")).expanduser().resolve()
        ray_storage = str(root)
    run_dir = root / name
    state_path = run_dir / STATE_FILE
    if resume:
        if not state_path.exists():
            raise ConfigError(f"--resume: no search to resume in {run_dir} (no {STATE_FILE}); check "
                              f"--storage and --name, or drop --resume to start a new search")
        state = json.loads(state_path.read_text())
        if state.get("space_digest") != _space_digest(space):
            raise ConfigError(
                f"--resume: {run_dir} was made by another search space ({state.get('space_file')}, "
                f"digest {state.get('space_digest')}) than {space.source}; resume with the same "
                f"space and --set values, or pick a new --name")
        return ray_storage, run_dir, state
    if state_path.exists() or (run_dir / "tuner.pkl").exists():
        raise ConfigError(f"{run_dir} already holds a search; pass --resume to continue it or "
                          f"--name NEW to start another")
    try:
        ensure_writable_dir(run_dir)
    except OSError as exc:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise ConfigError(f"--storage {storage}: cannot write the run folder {run_dir} "
                          f"({exc.strerror or exc}); pass a writable --storage") from None
    return ray_storage, run_dir, {"key": f"{name}-{uuid.uuid4().hex[:8]}"}


# Filesystems that are certainly private to one machine (anything else may be shared: nfs, cifs,
# lustre, gpfs, ceph, fuse mounts such as s3fs/gcsfuse, ...).
_LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "ramfs", "overlay",
             "vfat", "exfat", "ntfs", "ntfs3", "squashfs"}


def _probe_marker(path: str, token: str) -> bool:
    """Runs on one node: does it see the marker file the driver wrote?"""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def _fs_type(path: Path) -> str | None:
    """The filesystem type of the mount holding `path` (Linux), None when unknown."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    best, fstype = "", None
    for mnt, typ in mounts:
        mnt = mnt.replace("\\040", " ")
        if (path.as_posix() == mnt or path.as_posix().startswith(mnt.rstrip("/") + "/")) \
                and len(mnt) >= len(best):
            best, fstype = mnt, typ
    return fstype


def storage_verdict(storage: str, seen: dict[str, bool | None], *, trials_elsewhere: bool = False,
                    fs_type: str | None = None) -> str | None:
    """Why the local path `storage` cannot serve a multi-node search, or None when it can.

    `seen` maps each alive node (a label) to whether a task on it saw the driver's marker file (None:
    no answer in time). `trials_elsewhere`: the driver's node is the only one so far and cannot run
    trials itself (an autoscaling cluster whose head has no CPUs/GPUs), so trials will run on nodes
    that do not exist yet; then a path on a local disk type (`fs_type`) cannot be right.
    """
    blind = sorted(node for node, ok in seen.items() if ok is False)
    fix = ("pass a folder shared by every node at the same path (an NFS mount, e.g. --storage "
           "/mnt/shared/tfkd_runs) or an object store (--storage s3://bucket/prefix or "
           "gs://bucket/prefix, with --mlflow-uri)")
    if blind:
        return (f"--storage {storage}: is local to the head node (the driver's node): the Ray "
                f"nodes {', '.join(blind)} cannot see files written there, and every trial writes "
                f"its checkpoints to --storage from the node it runs on; {fix}")
    if trials_elsewhere and fs_type in _LOCAL_FS:
        return (f"--storage {storage}: is on a local {fs_type} disk of the head node, which runs no "
                f"trials (no CPUs or GPUs), so the worker nodes the autoscaler adds cannot see it; "
                f"{fix}")
    return None


def check_shared_storage(ray: Any, storage_dir: Path, printer: Printer,
                         timeout: float = 120.0) -> None:
    """Raise ConfigError if a node of the cluster cannot see `storage_dir` (the run folder).

    Writes a marker file there and runs a tiny task pinned to each alive node that reads it back. On
    one machine with several Ray nodes the folder is shared, so the check passes."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    res = (nodes[0].get("Resources") or {}) if nodes else {}
    trials_elsewhere = (len(nodes) == 1 and nodes[0]["NodeID"] == here
                        and not res.get("CPU") and not res.get("GPU"))
    if len(nodes) < 2 and not trials_elsewhere:
        return
    token = uuid.uuid4().hex
    marker = storage_dir / f".tfkd-storage-check-{token[:8]}"
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe_marker)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(marker), token): n for n in nodes}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        seen: dict[str, bool | None] = {}
        for ref, n in refs.items():
            label = f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})"
            try:
                seen[label] = bool(ray.get(ref)) if ref in ready else None
            except ray.exceptions.RayError:  # a node that died meanwhile: no verdict from it
                seen[label] = None
        for ref in pending:
            ray.cancel(ref, force=True)
    finally:
        marker.unlink(missing_ok=True)
    silent = [k for k, v in seen.items() if v is None]
    if silent:
        printer(f"note: could not check --storage on the Ray nodes {', '.join(silent)}")
    why = storage_verdict(str(storage_dir.parent), seen, trials_elsewhere=trials_elsewhere,
                          fs_type=_fs_type(storage_dir) if trials_elsewhere else None)
    if why:
        raise ConfigError(why)
    if len(seen) > 1 and all(seen.values()):
        printer(f"--storage {storage_dir.parent}: visible from all {len(seen)} Ray nodes")


def preflight(address: str | None, gpus: float, mlflow_uri: str | None = None) -> None:
    """Checks that need neither Ray nor a run folder, so a bad flag fails in a second and leaves
    nothing behind: the GPU count of this machine, the Ray address, the MLflow server."""
    if address:
        check_address(address)
    else:
        check_local_gpus(gpus)
    if mlflow_uri:
        check_reachable(mlflow_uri)


def check_local_gpus(gpus: float) -> None:
    if gpus:
        import torch

        have = torch.cuda.device_count()
        if gpus > have:
            raise ConfigError(f"--gpus {gpus:g}: this machine has {have} CUDA GPUs; pass --gpus {have} "
                              f"or fewer (0 = CPU only), or --address to use a Ray cluster")


def check_address(address: str, timeout: float = 3.0) -> None:
    """TCP pre-check of a Ray cluster address: Ray itself retries an unreachable GCS for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address {address}: expected HOST:PORT of the Ray head (e.g. "
                          f"10.0.0.5:6379), ray://HOST:10001 or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise TfkdError(f"--address {address}: no Ray cluster answers at {host}:{port} "
                        f"({exc.strerror or exc}); start one there with 'ray start --head --port "
                        f"{port}', check the address and firewall, or drop --address to run a local "
                        f"embedded Ray") from None


def _ray_log_level() -> int:
    """Ray's own INFO lines (and its token-auth notice) only with --debug: our progress lines say it."""
    import logging

    return logging.INFO if os.environ.get("TFKD_DEBUG") else logging.ERROR


def init_ray(address: str | None, gpus: float, printer: Printer,
             storage_dir: Path | None = None) -> Any:
    """Start an embedded local Ray (never attaching to a stale one) or join `address`.

    On a cluster, `storage_dir` (the local run folder, if --storage is a path) must be visible from
    every node: trials write their checkpoints there from the node they run on."""
    ray = _import_ray()
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")  # gpu:0 trials see no GPU
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if ray.is_initialized():
        return ray
    if address:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=_ray_log_level())
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.AuthenticationError) as exc:
            raise TfkdError(f"--address {address}: cannot connect to a Ray cluster there "
                            f"({str(exc).splitlines()[0][:200]}); check that 'ray start --head' runs, "
                            f"the address, and that RAY_AUTH_MODE (token or disabled) and the token "
                            f"(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) match the "
                            f"cluster's; or drop --address for a local embedded Ray") from None
        have = ray.cluster_resources().get("GPU", 0)
        wait = float(os.environ.get("TFKD_GPU_WAIT_S") or 0)
        if gpus > have and wait > 0:  # an autoscaling cluster: ask for the GPU nodes, then wait
            from ray.autoscaler.sdk import request_resources

            printer(f"waiting up to {wait:g} s for {gpus:g} GPUs (the cluster has {have:g} now)")
            request_resources(bundles=[{"GPU": 1}] * math.ceil(gpus))
            end = time.time() + wait
            while have < gpus and time.time() < end:
                time.sleep(min(5.0, max(0.1, end - time.time())))
                have = ray.cluster_resources().get("GPU", 0)
            request_resources(bundles=[])  # from here on, queued trials keep the nodes
        if gpus > have:
            ray.shutdown()
            raise ConfigError(f"--gpus {gpus:g}: the Ray cluster at {address} has {have:g} GPUs; pass "
                              f"--gpus {have:g} or fewer (0 = CPU only)"
                              + ("" if wait else ", or set TFKD_GPU_WAIT_S=SECONDS to wait for an "
                                 "autoscaler to add GPU nodes"))
        if storage_dir is not None:
            try:
                check_shared_storage(ray, storage_dir, printer)
            except ConfigError:
                ray.shutdown()
                raise
        return ray
    check_local_gpus(gpus)
    # An embedded instance serves this machine only: with this switch Ray takes 127.0.0.1 as the
    # node address and binds its servers to loopback instead of every interface. Ray reads it when
    # it is first imported (run_search sets it before that); if Ray was imported earlier, set the
    # constant it was read into.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] in ("0", "false", "False"):
        try:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
        except (ImportError, AttributeError):  # pragma: no cover - a Ray without the switch
            pass
    tmp = os.environ.get("TFKD_RAY_TMPDIR")
    kwargs: dict[str, Any] = dict(address="local", num_cpus=os.cpu_count(), num_gpus=int(gpus),
                                  include_dashboard=False, log_to_driver=False,
                                  _node_ip_address="127.0.0.1")
    if tmp:
        kwargs["_temp_dir"] = tmp
    ray.init(**kwargs, logging_level=_ray_log_level())
    printer(f"started a local Ray instance ({os.cpu_count()} CPUs, {int(gpus)} GPUs)")
    return ray


def run_search(space: Space, *, gpus: float = 0, address: str | None = None,
               storage: str = "./tfkd_runs", name: str | None = None, resume: bool = False,
               mlflow_uri: str | None = None, printer: Printer = print) -> SearchOutcome:
    """Run (or resume) a search and export its best configs."""
    preflight(address, gpus, mlflow_uri)
    if not address:  # embedded Ray on loopback only: must be set before Ray is imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from .export import export_best, write_results

    name = name or space.spec.name
    s = space.spec.search
    if gpus == 0 and s.resources.gpu > 0:
        printer(f"note: --gpus 0, so trials run on the CPU (the space asks {s.resources.gpu:g} GPU "
                f"each)")
    gpu_share = s.resources.gpu if gpus > 0 else 0.0
    storage_root, run_dir, state = prepare_run_dir(space, storage, name, resume)
    object_store = is_object_store(storage)
    created_dir = not resume
    try:
        # all MLflow logging happens here on the driver, so a local SQLite store works on clusters too
        uri = mlflow_uri or state.get("mlflow_uri") or default_tracking_uri(run_dir.parent)
        check_reachable(uri)
        ray = init_ray(address, gpus, printer,  # first: no MLflow run if it fails
                       storage_dir=None if object_store else run_dir)
        tracker = Tracker(uri, name)
        parent_id = tracker.start_parent(state["key"], f"search-{name}",
                                         tags={"tfkd.space": space.spec.name})
    except BaseException:
        if created_dir and run_dir.is_dir() and not any(p.name != "mlflow.db"
                                                        for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    metric, mode = s.scheduler.metric, s.scheduler.mode
    cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    conc = concurrency(space, gpus, cpus)
    base = _resolve_paths(space.base_dict())
    if gpu_share == 0:
        base["device"] = "cpu"
    state.update({"space_file": space.source, "space_digest": _space_digest(space),
                  "name": name, "mlflow_uri": uri, "parent_run_id": parent_id,
                  "created": state.get("created", time.time()), "base": base})
    atomic_write_json(run_dir / STATE_FILE, state)
    shutil.copyfile(space.source, run_dir / "space.yaml")
    tracker.log_params(parent_id, {"space": space.spec.name, "searcher": s.searcher.kind,
                                   "scheduler": s.scheduler.kind, "num_trials": space.num_trials(),
                                   "budget_epochs": space.budget, "gpus": gpus,
                                   **{f"base.{k}": v for k, v in flatten(base).items()}})
    tracker.set_tags(parent_id, {"tfkd.git": git_revision() or "none",
                                 "tfkd.versions": json.dumps(package_versions()),
                                 "tfkd.cluster": json.dumps(ray.cluster_resources())})
    tracker.log_artifact(parent_id, space.source)
    orphans = tracker.close_orphans() if resume else 0
    if orphans:
        printer(f"closed {orphans} MLflow runs left RUNNING by the interrupted driver")

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base, metric=metric, mode=mode,
                             cpus=s.resources.cpu, source=space.source),
        {"cpu": s.resources.cpu, "gpu": gpu_share})
    callback = _make_callback({"uri": uri, "experiment": name, "parent_id": parent_id},
                              list(space.params), space.budget, metric, mode, space.num_trials(),
                              printer)
    exp_path = join_uri(storage_root, name) if object_store else run_dir.as_posix()
    printer(f"search {name!r}: {space.num_trials()} trials of up to {space.budget} epochs, "
            f"{conc or 'unlimited'} at a time; results in {exp_path}")
    printer(f"MLflow: {uri} (experiment {name!r}); open with: mlflow ui --backend-store-uri {uri}")
    t0 = time.time()
    if resume:
        tuner = Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=False,
                              restart_errored=False)
    else:
        if s.searcher.kind == "optuna":
            searcher: Any = OptunaSearch(seed=s.searcher.seed, metric=metric, mode=mode)
            if conc:
                searcher = ConcurrencyLimiter(searcher, max_concurrent=conc)
        else:
            searcher = BasicVariantGenerator(random_state=s.searcher.seed,
                                             max_concurrent=conc or 0)
        scheduler = (make_asha(time_attr="epoch", max_t=space.budget,
                               grace_period=s.scheduler.grace_period,
                               reduction_factor=s.scheduler.reduction_factor,
                               rungs_file=run_dir / RUNGS_FILE)
                     if s.scheduler.kind == "asha" else None)
        tuner = Tuner(
            trainable,
            param_space={k: to_tune(d) for k, d in space.params.items()},
            tune_config=TuneConfig(metric=metric, mode=mode, search_alg=searcher,
                                   scheduler=scheduler, num_samples=s.num_samples,
                                   trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
                                   reuse_actors=True),  # torch imports once per actor, not per trial
            run_config=RunConfig(
                name=name, storage_path=storage_root, verbose=0, callbacks=[callback],
                failure_config=FailureConfig(max_failures=s.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2)))
    try:
        results = tuner.fit()
    except KeyboardInterrupt:
        printer(f"interrupted: finished trials are saved; continue with --resume --name {name}")
        tracker.finish(parent_id, "KILLED")
        raise
    wall = time.time() - t0
    trials = write_results(results, space, run_dir, budget=space.budget, metric=metric, mode=mode)
    tracker.close_orphans()
    exported: list[Path] = []
    try:
        exported = export_best(run_dir, top=space.spec.export.top_k)
    except TfkdError as err:  # the trials are saved; a bad export block must not lose them
        printer(f"warning: export failed: {err}; fix the space's export block and run "
                f"'tfkd-search export {run_dir}'")
    for p in exported:
        tracker.log_artifact(parent_id, p, "best")
    tracker.log_artifact(parent_id, run_dir / "trials.parquet")
    step = "written"
    try:  # the report is a bonus: it must never make a finished search fail
        from .report import report_files, write_report

        index = write_report(run_dir, log_mlflow=False, warn=lambda m: printer(f"warning: {m}"))
        step = "logged to MLflow"
        for p in report_files(index):
            tracker.log_artifact(parent_id, p, "report")
        printer(f"report: {index}")
    except Exception as err:  # noqa: BLE001
        printer(f"warning: the report could not be {step} ({type(err).__name__}: {err}); the "
                f"search is saved, retry with 'tfkd-search report {run_dir}'")
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    best = _best_row(trials, metric, mode)
    summary = {"wall_seconds": wall, "trials": len(trials),
               **{f"trials_{k}": v for k, v in counts.items()}}
    if best is not None:
        summary["best_val_acc"] = float(best["best_val_acc"])
        tracker.log_params(parent_id, {f"best.{k}": best[k] for k in space.params})
        tracker.set_tags(parent_id, {"tfkd.best_trial": best["trial_id"],
                                     "tfkd.export": str(run_dir / "best")})
    tracker.log_metrics(parent_id, summary)
    tracker.finish(parent_id, "FINISHED")
    if object_store:
        try:
            upload_results(run_dir, exp_path)
            printer(f"results copied to {exp_path} (local copy: {run_dir})")
        except Exception as err:  # noqa: BLE001 - the local copy is complete; say how to retry
            printer(f"warning: could not copy the results to {exp_path} ({type(err).__name__}: "
                    f"{err}); they are complete in {run_dir}")
    printer(_summary_text(trials, space, exported, wall))
    return SearchOutcome(run_dir=run_dir, trials=trials, exported=exported,
                         mlflow_uri=uri, parent_run_id=parent_id)


def _best_row(trials: Any, metric: str, mode: str) -> Any:
    ok = trials[trials["status"].isin(["completed", "stopped_early"])] if len(trials) else trials
    if not len(ok):
        return None
    completed = ok[ok["status"] == "completed"]
    pool = completed if len(completed) else ok
    return pool.sort_values("best_val_acc", ascending=False).iloc[0]


def _summary_text(trials: Any, space: Space, exported: list[Path], wall: float) -> str:
    lines = [f"search finished in {wall:.0f} s: " + ", ".join(
        f"{n} {k.replace('_', ' ')}" for k, n in trials["status"].value_counts().items())]
    cols = ["trial_id", "status", "epochs", "best_val_acc", *space.params]
    top = trials.sort_values("best_val_acc", ascending=False).head(5)[cols]
    lines.append(top.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if exported:
        lines.append("exported configs for full runs:")
        lines += [f"  {p}" for p in exported]
        lines.append(f"next: tfkd-search train --config {exported[0]} --seeds 3")
    return "\n".join(lines)


def _resolve_paths(base: dict[str, Any]) -> dict[str, Any]:
    """Relative paths are relative to where the user runs the command, not to a trial's folder."""
    data = base.setdefault("data", {})
    data["data_dir"] = os.path.abspath(data.get("data_dir") or "data")
    teacher = base.get("teacher")
    if teacher and teacher.get("checkpoint") and not _is_uri(teacher["checkpoint"]):
        teacher["checkpoint"] = os.path.abspath(teacher["checkpoint"])
    return base


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


__all__ = ["run_search", "run_trial", "to_tune", "init_ray", "SearchOutcome"]


def _train_remote(cfg_dict: dict[str, Any], run_dir: str, resume: bool) -> Any:
    from .config import build_run_config
    from .trainer import train

    return train(build_run_config(cfg_dict), run_dir=run_dir, resume=resume)


def train_parallel(cfgs: dict[int, Any], out: Path, *, gpus: float, resume: bool,
                   printer: Printer) -> list[Any]:
    """Final runs of several seeds in parallel, one Ray task per seed with one GPU each."""
    ray = init_ray(None, gpus, printer)
    task = ray.remote(num_gpus=1, num_cpus=1)(_train_remote)
    refs = {seed: task.remote(config_to_dict(cfg), str(out / f"seed{seed}"), resume)
            for seed, cfg in cfgs.items()}
    results = []
    for seed, ref in refs.items():
        res = ray.get(ref)
        printer(f"seed {seed}: {res.status}, best val_acc {res.best_val_acc:.4f}, "
                f"test_acc {res.test_acc if res.test_acc is not None else 'n/a'}")
        results.append(res)
    return results
