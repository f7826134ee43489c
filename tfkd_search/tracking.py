"""MLflow tracking: one parent run per search, one nested child run per trial (or per final seed).

This is the only module that imports mlflow. All logging happens from the driver process, one writer,
which keeps SQLite stores safe and makes resumed searches reuse their runs instead of duplicating them
(runs are found again by their `tfkd.key` tag).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, EnvironmentProblem

LOGGED_METRICS = ("val_acc", "val_loss", "train_loss", "train_ce", "train_kl", "lr", "images_per_s",
                  "epoch_seconds")
# tag of a trial or seed run whose training step fell back from its CUDA graph to eager, with why
GRAPHS_TAG = "tfkd.cuda_graphs"
PACKAGES = ("tfkd-search", "torch", "torchvision", "ray", "optuna", "mlflow", "pandas", "pyarrow")


def default_tracking_uri(storage: str | os.PathLike[str]) -> str:
    """SQLite file in the storage folder (MLflow 3 refuses plain file stores)."""
    return f"sqlite:///{Path(storage).resolve() / 'mlflow.db'}"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts beside a SQLite store (<folder>/mlartifacts/<experiment>), not in ./mlruns of the
    current directory, MLflow's default; a tracking server decides for itself (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.parent.resolve() / "mlartifacts" / experiment).as_uri()


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (before any training) when an http(s) tracking server does not answer."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            raise EnvironmentProblem(f"--mlflow-uri {uri}: the MLflow tracking server does not answer "
                                     f"({exc.strerror or exc}); start it (mlflow server --host "
                                     f"127.0.0.1 --port {port}) or pass another --mlflow-uri") from None
    elif parsed.scheme == "sqlite":
        # sqlite:////abs/path.db -> /abs/path.db; sqlite:///rel.db -> rel.db (SQLAlchemy's rule)
        folder = Path(parsed.path[1:] if parsed.path.startswith("/") else parsed.path).parent
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise EnvironmentProblem(f"--mlflow-uri {uri}: cannot write the database into {folder} "
                                     f"({probe} is not a writable folder); pass "
                                     f"sqlite:////abs/writable/path/mlflow.db")
    elif parsed.scheme in ("", "file"):
        raise ConfigError(f"--mlflow-uri {uri}: MLflow 3 no longer supports plain file stores; use "
                          f"sqlite:////abs/path/mlflow.db or http://HOST:PORT")


UI_HOST, UI_PORT = "127.0.0.1", 5000


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri} --host {UI_HOST} --port {UI_PORT}"


def ui_base(uri: str) -> str:
    """The web address of the UI that shows `uri`'s runs: the server itself, or `mlflow ui`'s."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://{UI_HOST}:{UI_PORT}"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


def git_revision(cwd: str | os.PathLike[str] | None = None) -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def client(uri: str, debug: bool = False) -> Any:
    """An MlflowClient for `uri`, with MLflow's INFO lines off unless `debug`."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    from mlflow.tracking import MlflowClient

    if not debug:  # mlflow sets its own INFO level when imported
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


class Tracker:
    """Parent run plus child runs, all logged from the calling process."""

    def __init__(self, uri: str, experiment: str, debug: bool = False) -> None:
        self.uri = uri
        self.experiment = experiment
        self.client = client(uri, debug)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
            experiment, artifact_location=artifact_location(uri, experiment))
        self.parent_id: str | None = None
        self._children: dict[str, str] = {}
        self._last_step: dict[str, int] = {}

    # -- parent ---------------------------------------------------------------------------
    def start_parent(self, key: str, name: str, tags: Mapping[str, str] | None = None) -> str:
        """Create the parent run, or reopen the one with the same key (a resumed search)."""
        found = self._find(f"tags.`tfkd.key` = '{key}'")
        if found is not None:
            self.parent_id = found.info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=name,
                                         tags={"tfkd.key": key, "tfkd.role": "search", **(tags or {})})
            self.parent_id = run.info.run_id
        return self.parent_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        todo = [Param(str(k), str(v)[:6000]) for k, v in params.items() if str(k) not in existing]
        for i in range(0, len(todo), 100):
            self.client.log_batch(run_id, params=todo[i:i + 100])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def log_dataset(self, run_id: str, facts: Any) -> None:
        """The dataset a run trained on (data.DatasetFacts): class names and shape as params, its
        digest (file list + sizes + mtimes, or the npz bytes' hash) as the `tfkd.data_digest` tag."""
        self.log_params(run_id, {"dataset.num_classes": facts.num_classes,
                                 "dataset.class_names": json.dumps(list(facts.class_names)),
                                 "dataset.shape": f"{facts.channels}x{facts.height}x{facts.width}",
                                 "dataset.n_train": facts.n_train, "dataset.n_val": facts.n_val})
        self.set_tags(run_id, {"tfkd.data_digest": facts.digest or f"built-in {facts.dataset}"})

    def log_artifact(self, run_id: str, path: str | os.PathLike[str], subdir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), subdir)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items() if _finite(v)]
        if ms:
            self.client.log_batch(run_id, metrics=ms)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # -- children -------------------------------------------------------------------------
    def child(self, key: str, name: str, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, str] | None = None) -> str:
        """The child run for `key` under the parent: reused if it exists (no duplicates on resume)."""
        if key in self._children:
            return self._children[key]
        assert self.parent_id is not None
        found = self._find(f"tags.`tfkd.key` = '{key}'")
        if found is not None:
            run_id = found.info.run_id
            hist = self.client.get_metric_history(run_id, "val_acc")
            self._last_step[run_id] = max((m.step for m in hist), default=0)
            if found.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=name,
                tags={"mlflow.parentRunId": self.parent_id, "tfkd.key": key, "tfkd.role": "trial",
                      **(tags or {})})
            run_id = run.info.run_id
            self._last_step[run_id] = 0
        self._children[key] = run_id
        if params:
            self.log_params(run_id, params)
        return run_id

    def log_epoch(self, run_id: str, metrics: Mapping[str, Any], epoch: int) -> None:
        """Log one epoch's metrics, skipping epochs this run already has (resume after a crash)."""
        if epoch <= self._last_step.get(run_id, 0):
            return
        self.log_metrics(run_id, {k: metrics[k] for k in LOGGED_METRICS if k in metrics}, step=epoch)
        self._last_step[run_id] = epoch

    def end_child(self, key: str, outcome: str, extra: Mapping[str, Any] | None = None) -> None:
        run_id = self._children.get(key)
        if run_id is None:
            return
        tags = {"tfkd.status": outcome, **{k: v for k, v in (extra or {}).items() if v is not None}}
        self.set_tags(run_id, tags)
        self.finish(run_id, "FAILED" if outcome == "errored" else "FINISHED")

    def close_orphans(self) -> int:
        """Mark child runs still RUNNING (a crashed earlier driver) as KILLED; returns how many."""
        if self.parent_id is None:
            return 0
        n = 0
        for run in self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}' and "
                              f"attributes.status = 'RUNNING'", max_results=5000):
            if run.info.run_id not in self._children.values():
                self.client.set_terminated(run.info.run_id, "KILLED")
                n += 1
        return n

    def children(self) -> list[Any]:
        return self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
                                       max_results=5000)

    def run_url(self, run_id: str) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{run_id}"

    def ui_hints(self, run_id: str | None) -> list[str]:
        """Where to look in the MLflow UI: MLflow 3 opens an experiment on its GenAI overview, which
        shows none of the trials; the runs view and the parent run do."""
        base = ui_base(self.uri)
        lines = [] if self.uri.startswith(("http://", "https://")) else [
            f"open the UI: {ui_command(self.uri)} (its first start takes MLflow some seconds)"]
        lines.append(f"runs of this search: {base}/#/experiments/{self.experiment_id}/runs")
        if run_id:
            lines.append(f"parent run: {base}/{self.run_url(run_id)}")
        return lines

    def _find(self, filter_string: str) -> Any:
        runs = self.client.search_runs([self.experiment_id], filter_string=filter_string,
                                       max_results=1)
        return runs[0] if runs else None


def _finite(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))
