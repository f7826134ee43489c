"""Ray start-up and cluster checks: an embedded local Ray on loopback, or an existing cluster
(`--address`), its GPUs, and whether every node sees the storage folder.

Failures here are the environment's (exit code 3, `EnvironmentProblem`), except a malformed address
(the input, exit code 2).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EnvironmentProblem, TfkdError
from ..tracking import check_reachable

Printer = Callable[[str], None]


@dataclass(frozen=True)
class RayOptions:
    """How to reach or start Ray (CLI flags, never environment variables inside the library)."""

    address: str | None = None     # None: an embedded local Ray on 127.0.0.1
    gpu_wait: float = 0.0          # seconds to wait for an autoscaler to add GPU nodes
    temp_dir: str | None = None    # Ray's session folder of an embedded instance
    debug: bool = False            # Ray's own INFO lines
    py_modules: tuple[str, ...] = ()  # the user's model code for every worker (`usercode.py_modules`)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a hard dependency, but say so clearly
        raise TfkdError("Ray Tune is not installed: pip install 'ray[tune]'") from None
    return ray


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


def node_label(node: dict[str, Any]) -> str:
    return f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"


def on_every_node(ray: Any, nodes: list[dict[str, Any]], fn: Callable[..., Any], *args: Any,
                  timeout: float = 120.0) -> dict[str, Any]:
    """Run `fn(*args)` once on each of `nodes` (a tiny task pinned to the node, no CPU reserved, so a
    busy node answers too): {node label: its return value, or None where it did not answer within
    `timeout` or died meanwhile}."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(fn)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(*args): n for n in nodes}
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
    out: dict[str, Any] = {}
    for ref, n in refs.items():
        try:
            out[node_label(n)] = ray.get(ref) if ref in ready else None
        except ray.exceptions.RayError:  # a node that died meanwhile: no answer from it
            out[node_label(n)] = None
    for ref in pending:
        ray.cancel(ref, force=True)
    return out


def _probe_inputs(base: dict[str, Any], source: str) -> tuple[str, str]:
    """Runs on one node: the checks a local search makes before it starts (`runs.preflight` of the
    base config: dataset from its listing and headers, teacher checkpoint; nothing decoded) and the
    loader's file checks (`data.check_files`): ("ok", "") or (error class name, message)."""
    from ..config import build_run_config
    from ..data import check_files
    from ..runs import preflight

    try:
        cfg = build_run_config(base, source=source)
        preflight(cfg, source=source, prefix="base.", load=False, models=False)
        try:
            check_files(cfg.data, with_test=cfg.evaluate_test)
        except TfkdError as exc:
            raise type(exc)(f"{source}: base.data: {exc}") from None
    except TfkdError as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


def check_inputs_on_nodes(ray: Any, base: dict[str, Any], source: str, printer: Printer,
                          timeout: float = 120.0) -> None:
    """With --address the dataset and the teacher checkpoint are read on the nodes that run trials,
    not here: check them there, on every alive node that can run a trial (has CPUs or GPUs), before
    anything starts (`inputs_verdict`)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")
             and ((n.get("Resources") or {}).get("CPU") or (n.get("Resources") or {}).get("GPU"))]
    if not nodes:  # an autoscaling cluster whose trial nodes do not exist yet: they check themselves
        return
    got = on_every_node(ray, nodes, _probe_inputs, base, source, timeout=timeout)
    error, line = inputs_verdict(got, timeout)
    if error is not None:
        raise error
    printer(line)


def inputs_verdict(got: dict[str, Any], timeout: float) -> tuple[TfkdError | None, str]:
    """From each node's `_probe_inputs` answer (None: no answer in `timeout`): the error to raise (the
    first failure, as its own class, naming every node that failed the same way) or None, and the
    line to print."""
    from .. import errors

    failed = {k: tuple(v) for k, v in got.items() if v is not None and v[0] != "ok"}
    if failed:
        kind, message = next(iter(failed.values()))
        where = sorted(k for k, v in failed.items() if v == (kind, message))
        cls = getattr(errors, kind, None)
        cls = cls if isinstance(cls, type) and issubclass(cls, TfkdError) else errors.DataError
        return cls(f"{message} (on the Ray node{'s' * (len(where) > 1)} {', '.join(where)}: every node "
                   f"that runs trials reads the data and the teacher from this same path)"), ""
    silent = sorted(k for k, v in got.items() if v is None)
    checked = len(got) - len(silent)
    return None, (f"dataset checked on {checked} Ray node{'s' * (checked != 1)}"
                  + (f"; no answer in {timeout:g} s from {', '.join(silent)} (their trials check it "
                     f"when they start)" if silent else ""))


def check_shared_storage(ray: Any, storage_dir: Path, printer: Printer,
                         timeout: float = 120.0) -> None:
    """Raise EnvironmentProblem if a node of the cluster cannot see `storage_dir` (the run folder).

    Writes a marker file there and runs a tiny task pinned to each alive node that reads it back. On
    one machine with several Ray nodes the folder is shared, so the check passes."""
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
        seen = {k: None if v is None else bool(v)
                for k, v in on_every_node(ray, nodes, _probe_marker, str(marker), token,
                                          timeout=timeout).items()}
    finally:
        marker.unlink(missing_ok=True)
    silent = [k for k, v in seen.items() if v is None]
    if silent:
        printer(f"note: could not check --storage on the Ray nodes {', '.join(silent)}")
    why = storage_verdict(str(storage_dir.parent), seen, trials_elsewhere=trials_elsewhere,
                          fs_type=_fs_type(storage_dir) if trials_elsewhere else None)
    if why:
        raise EnvironmentProblem(why)
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
    """--gpus N on this machine: it must have N CUDA GPUs (checked before anything starts)."""
    if gpus:
        import torch

        have = torch.cuda.device_count()
        if gpus > have:
            fix = (f"pass --gpus {have} or fewer" if have else "pass --gpus 0 to run on the CPU")
            raise EnvironmentProblem(f"--gpus {gpus:g}: this machine has {have} CUDA GPUs; {fix}, or "
                                     f"--address to use a Ray cluster that has GPUs")


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
        raise EnvironmentProblem(f"--address {address}: no Ray cluster answers at {host}:{port} "
                                 f"({exc.strerror or exc}); start one there with 'ray start --head "
                                 f"--port {port}', check the address and firewall, or drop --address "
                                 f"to run a local embedded Ray") from None


def _log_level(opts: RayOptions) -> int:
    """Ray's own INFO lines (and its token-auth notice) only with --debug: our progress lines say it."""
    return logging.INFO if opts.debug else logging.ERROR


def init_ray(opts: RayOptions, gpus: float, printer: Printer, storage_dir: Path | None = None) -> Any:
    """Start an embedded local Ray (never attaching to a stale one) or join `address`.

    On a cluster, `storage_dir` (the local run folder, if --storage is a path) must be visible from
    every node: trials write their checkpoints there from the node they run on."""
    ray = _import_ray()
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")  # gpu:0 trials see no GPU
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")  # Tune's "may be a performance bottleneck"
    if ray.is_initialized():
        return ray
    address = opts.address
    # the user's model code reaches every worker as py_modules, which Ray merges with a submitted
    # job's working_dir (a second working_dir would be refused)
    code = {"runtime_env": {"py_modules": list(opts.py_modules)}} if opts.py_modules else {}
    if address:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=_log_level(opts), **code)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.AuthenticationError) as exc:
            raise EnvironmentProblem(
                f"--address {address}: cannot connect to a Ray cluster there "
                f"({str(exc).splitlines()[0][:200]}); check that 'ray start --head' runs, the address, "
                f"and that RAY_AUTH_MODE (token or disabled) and the token (~/.ray/auth_token, "
                f"RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) match the cluster's; or drop --address for a "
                f"local embedded Ray") from None
        have = ray.cluster_resources().get("GPU", 0)
        wait = opts.gpu_wait
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
            raise EnvironmentProblem(
                f"--gpus {gpus:g}: the Ray cluster at {address} has {have:g} GPUs; pass --gpus "
                f"{have:g} or fewer (0 = CPU only)"
                + ("" if wait else ", or pass --gpu-wait SECONDS to wait for an autoscaler to add GPU "
                   "nodes"))
        if storage_dir is not None:
            try:
                check_shared_storage(ray, storage_dir, printer)
            except EnvironmentProblem:
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
    tmp = opts.temp_dir
    kwargs: dict[str, Any] = dict(address="local", num_cpus=os.cpu_count(), num_gpus=int(gpus),
                                  include_dashboard=False, log_to_driver=False,
                                  _node_ip_address="127.0.0.1")
    if tmp:
        kwargs["_temp_dir"] = tmp
    ray.init(**kwargs, logging_level=_log_level(opts), **code)
    printer(f"started a local Ray instance ({os.cpu_count()} CPUs, {int(gpus)} GPUs)")
    return ray


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
