"""Running on a Ray cluster: the launcher configs (Ray's own validation, no cloud calls), the
storage check, the CIFAR download lock, and a real multi-node Ray on 127.0.0.1 (a head and workers
started with `ray start`, token auth, a search submitted with `ray job submit`, a worker node killed
mid-search, a node that cannot see the storage folder)."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from _proc import kill_tree, ray_processes, wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
TFKD = str(BIN / "tfkd-search")


# ------------------------------------------------------------------------------------------------
# The launcher configs, through Ray's own config preparation and schema validation


def ray_validated(doc: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(doc)
    validate_config(cfg)
    return cfg


def onprem_doc() -> dict:
    text = (ROOT / "docs" / "cluster.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]
    local = [b for b in blocks if isinstance(b, dict) and b.get("provider", {}).get("type") == "local"]
    assert len(local) == 1, "docs/cluster.md should hold exactly one on-premises (local provider) YAML"
    return local[0]


def _ray_commands_use_token_auth(commands: list[str]) -> bool:
    ray_cmds = [c for c in commands if re.search(r"\bray (start|stop)\b", c)]
    return any("ray start" in c for c in ray_cmds) and all("RAY_AUTH_MODE=token" in c for c in ray_cmds)


def test_cluster_yaml_passes_ray_validation():
    cfg = ray_validated(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    assert cfg["provider"]["type"] == "aws"
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head runs no trials
    assert head["max_workers"] == 0
    (worker_type,) = [t for t in cfg["available_node_types"] if t != cfg["head_node_type"]]
    worker = cfg["available_node_types"][worker_type]
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1  # autoscaling GPU workers
    assert worker["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU instance family
    mounts = cfg["file_mounts"]
    for local in ("./pyproject.toml", "./README.md", "./tfkd_search", "./search_spaces"):
        assert local in mounts.values() and (ROOT / local).exists()
    assert mounts["~/.ray/auth_token"] == "~/.ray/auth_token"  # one token for every node
    # setup_commands are merged into both roles: every node installs the synced project
    for role in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install" in c and "-e ~/tfkd-search" in c for c in cfg[role]), role
    for role in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert _ray_commands_use_token_auth(cfg[role]), role
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert "mlflow server --host 127.0.0.1" in " ".join(head_start.split())


def test_cluster_yaml_marks_every_value_to_adapt():
    lines = (ROOT / "cluster.yaml").read_text().splitlines()

    def marked(pattern: str) -> None:
        hits = [ln for ln in lines if re.search(pattern, ln)]
        assert hits and all("ADAPT" in ln for ln in hits), (pattern, hits)

    for key in (r"^\s+region:", r"availability_zone:", r"InstanceType:", r"ImageId:", r"ssh_user:",
                r"^max_workers:", r"REPLACE-ACCOUNT-ID"):
        marked(key)
    text = "\n".join(lines)
    assert "ADAPT: keep ray== equal" in text and 'ray[default,tune]==' in text  # the pinned Ray
    # the storage choice: an NFS server or an S3 bucket, both flagged
    assert re.search(r"ADAPT: REPLACE-NFS-HOST", text) and "s3://BUCKET" in text


def test_onprem_snippet_passes_ray_validation():
    doc = onprem_doc()
    cfg = ray_validated(doc)
    (node_type,) = cfg["available_node_types"]
    assert node_type == "local.cluster.node"
    assert cfg["max_workers"] == len(doc["provider"]["worker_ips"])
    assert _ray_commands_use_token_auth(cfg["head_start_ray_commands"])
    assert _ray_commands_use_token_auth(cfg["worker_start_ray_commands"])
    assert "--num-cpus=0" in " ".join(cfg["head_start_ray_commands"])
    assert doc["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("-e ~/tfkd-search" in c for c in cfg["worker_setup_commands"])


def test_ray_validation_rejects_a_broken_config():
    """The validation above is real: a typo in a key fails it."""
    doc = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    doc["setup_command"] = doc.pop("setup_commands")
    with pytest.raises(Exception, match="setup_command"):
        ray_validated(doc)
    doc = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    doc["available_node_types"]["worker.gpu"]["min_worker"] = 1
    with pytest.raises(Exception, match="min_worker"):
        ray_validated(doc)


# ------------------------------------------------------------------------------------------------
# The shared-storage decision (the real multi-node path runs in the cluster tests below)


def test_storage_verdict_passes_when_every_node_sees_the_marker():
    from tfkd_search.search.cluster import storage_verdict

    assert storage_verdict("/mnt/nfs/runs", {"10.0.0.1 (aa)": True, "10.0.0.2 (bb)": True}) is None


def test_storage_verdict_names_the_blind_nodes_and_what_to_pass():
    from tfkd_search.search.cluster import storage_verdict

    why = storage_verdict("/home/u/runs", {"10.0.0.1 (aa)": True, "10.0.0.2 (bb)": False,
                                           "10.0.0.3 (cc)": False})
    assert why.startswith("--storage /home/u/runs: is local to the head node")
    assert "10.0.0.2 (bb), 10.0.0.3 (cc)" in why and "10.0.0.1" not in why
    assert "NFS" in why and "s3://bucket/prefix" in why and "gs://" in why


def test_storage_verdict_does_not_fail_on_nodes_that_did_not_answer():
    from tfkd_search.search.cluster import storage_verdict

    assert storage_verdict("/x", {"a": True, "b": None}) is None


def test_storage_verdict_on_an_autoscaling_cluster_with_only_a_trial_less_head():
    from tfkd_search.search.cluster import storage_verdict

    why = storage_verdict("/home/u/runs", {"head": True}, trials_elsewhere=True, fs_type="ext4")
    assert why and "local ext4 disk" in why and "s3://" in why
    for shared in ("nfs4", "lustre", "fuse.s3fs", None):  # shared or unknown: let it run
        assert storage_verdict("/mnt/x", {"head": True}, trials_elsewhere=True, fs_type=shared) is None
    assert storage_verdict("/home/u/runs", {"head": True}, fs_type="ext4") is None  # head trains too


def test_inputs_verdict_raises_the_nodes_error_and_counts_the_checked_nodes(tmp_path):
    """The data check on the nodes (`check_inputs_on_nodes`; the real path runs in the cluster tests
    below): what one node answers (`_probe_inputs`, run here as a node would run it) and the verdict
    over all the answers."""
    from tfkd_search.errors import CheckpointError, DataError
    from tfkd_search.search.cluster import _probe_inputs, inputs_verdict

    base = {**DIGITS, "data": {"dataset": "cifar10", "data_dir": str(tmp_path / "none")}}
    missing = _probe_inputs(base, "space.yaml")
    assert missing[0] == "DataError" and missing[1].startswith("space.yaml: base.data: CIFAR-10 folder")
    assert _probe_inputs(DIGITS, "space.yaml") == ("ok", "")
    teacher = {**DIGITS, "method": "kd", "teacher": {"checkpoint": str(tmp_path / "t.pt")}}
    assert _probe_inputs(teacher, "space.yaml")[0] == "CheckpointError"

    error, line = inputs_verdict({"10.0.0.1 (aa)": ("ok", ""), "10.0.0.2 (bb)": ("ok", "")}, 120)
    assert error is None and line == "dataset checked on 2 Ray nodes"
    error, line = inputs_verdict({"10.0.0.1 (aa)": ("ok", ""), "10.0.0.3 (cc)": None}, 120)
    assert error is None and line == ("dataset checked on 1 Ray node; no answer in 120 s from 10.0.0.3 (cc) "
                                      "(their trials check it when they start)")
    error, _ = inputs_verdict({"a (1)": missing, "b (2)": ("ok", ""), "c (3)": missing}, 120)
    assert isinstance(error, DataError) and str(error).startswith(missing[1])
    assert "on the Ray nodes a (1), c (3): every node that runs trials" in str(error)
    error, _ = inputs_verdict({"a (1)": ("CheckpointError", "t.pt: not a checkpoint")}, 120)
    assert isinstance(error, CheckpointError) and "on the Ray node a (1):" in str(error)
    error, _ = inputs_verdict({"a (1)": ("NoSuchError", "odd")}, 120)
    assert isinstance(error, DataError)


def test_fs_type_reads_the_mount_table():
    from tfkd_search.search.cluster import _fs_type

    if not Path("/proc/mounts").exists():
        pytest.skip("no /proc/mounts")
    assert _fs_type(Path("/proc/self")) == "proc"
    assert _fs_type(Path("/")) is not None


N1, N2 = "a1" * 28, "b2" * 28  # Ray node ids are hex


class FakeRay:
    """Just enough of `ray` for check_shared_storage: nodes, pinned tasks, wait/get/cancel."""

    class exceptions:  # noqa: N801 - mirrors ray.exceptions
        RayError = RuntimeError

    def __init__(self, nodes: dict[str, dict], blind: set[str] = frozenset(), driver: str = N1):
        self._nodes, self._blind, self._driver, self.probed = nodes, blind, driver, []

    def nodes(self) -> list[dict]:
        return [{"NodeID": nid, "Alive": True, "NodeManagerAddress": f"10.0.0.{i}", "Resources": res}
                for i, (nid, res) in enumerate(self._nodes.items(), 1)]

    def get_runtime_context(self):
        return type("Ctx", (), {"get_node_id": lambda _: self._driver})()

    def remote(self, **_):
        fake = self

        class Task:
            def __init__(self, fn, node=None):
                self.fn, self.node = fn, node

            def options(self, scheduling_strategy):
                return Task(self.fn, scheduling_strategy.node_id)

            def remote(self, *args):
                fake.probed.append(self.node)
                return ("ref", self.node, False if self.node in fake._blind else self.fn(*args))

        return lambda fn: Task(fn)

    def wait(self, refs, num_returns, timeout):
        return refs, []

    def get(self, ref):
        return ref[2]

    def cancel(self, ref, force):
        pass


def test_check_shared_storage_probes_every_node_and_cleans_up(tmp_path, monkeypatch):
    from tfkd_search.search import cluster as search
    from tfkd_search.errors import EnvironmentProblem

    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    said: list[str] = []
    two = {N1: {"CPU": 0.0}, N2: {"CPU": 4.0, "GPU": 1.0}}
    fake = FakeRay(two)
    search.check_shared_storage(fake, run_dir, said.append)
    assert sorted(fake.probed) == [N1, N2]
    assert said == [f"--storage {tmp_path / 'runs'}: visible from all 2 Ray nodes"]
    with pytest.raises(EnvironmentProblem, match=r"the Ray nodes 10\.0\.0\.2 \(b2b2b2b2\) cannot see"):
        search.check_shared_storage(FakeRay(two, blind={N2}), run_dir, said.append)
    assert not list(run_dir.iterdir())  # the marker is gone, pass or fail
    # one node that trains itself: nothing to check
    fake = FakeRay({N1: {"CPU": 8.0}})
    search.check_shared_storage(fake, run_dir, said.append)
    assert fake.probed == []
    # only a head without CPUs/GPUs yet (autoscaling): a local disk type is refused, a shared one is not
    monkeypatch.setattr(search, "_fs_type", lambda path: "ext4")
    with pytest.raises(EnvironmentProblem, match="local ext4 disk of the head node"):
        search.check_shared_storage(FakeRay({N1: {"CPU": 0.0}}), run_dir, said.append)
    monkeypatch.setattr(search, "_fs_type", lambda path: "nfs4")
    search.check_shared_storage(FakeRay({N1: {"CPU": 0.0}}), run_dir, said.append)
    assert not list(run_dir.iterdir())


# ------------------------------------------------------------------------------------------------
# One CIFAR download per node: trials that start together take turns on a file lock


def _load_with_download(root: str) -> None:
    from tfkd_search.data import load_splits

    load_splits("cifar10", Path(root), download=True, val_fraction=0.0)


def test_cifar_download_runs_once_when_processes_race(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    from _fakedata import make_fake_cifar10

    root, calls = tmp_path / "data", tmp_path / "calls.txt"

    def slow_download(url, download_root, filename=None, md5=None, **kw):
        with open(calls, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough that the other processes arrive meanwhile
        make_fake_cifar10(Path(download_root))

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", slow_download)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_load_with_download, args=(str(root),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(calls.read_text().splitlines()) == 1
    assert (root / ".tfkd-download.lock").exists()


# ------------------------------------------------------------------------------------------------
# A real cluster on this machine: a head (no CPUs) and worker nodes, each its own `ray start`


_STATE = """
import json, sys
from ray.util.state import list_actors, list_nodes
addr = sys.argv[1]
nodes = list_nodes(address=addr, detail=True, limit=1000)
name = {n.node_id: next((k[5:] for k in n.resources_total if k.startswith("node_")), "head")
        for n in nodes}
alive = {name[n.node_id]: n.node_id for n in nodes if n.state == "ALIVE"}
pids = {str(a.pid): name.get(a.node_id) for a in list_actors(address=addr, detail=True, limit=10000)
        if a.pid}
print(json.dumps({"alive": alive, "pids": pids}))
"""


class LocalCluster:
    """Ray nodes on 127.0.0.1, each a `ray start --block` in its own session, ports and temp dir."""

    made = 0

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="tc", dir="/tmp"))  # short: AF_UNIX paths
        token = self.base / "token"
        token.write_text(secrets.token_hex(32))
        env = dict(os.environ)
        for var in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "RAY_AUTH_TOKEN",
                    "TFKD_RAY_TMPDIR", "TFKD_GPU_WAIT_S"):
            env.pop(var, None)  # the first one set to 0 would stop `ray start --address`
        env.update({
            # token auth everywhere, one token (as cluster.yaml does with ~/.ray/auth_token)
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            # `ray job submit -- tfkd-search` resolves on the PATH of the head's processes
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
            # notice a killed node in seconds, not half a minute
            "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
            "RAY_health_check_failure_threshold": "5",
        })
        self.env = env
        self.gcs = self.dash = 0  # picked by start_head
        self._given: set[int] = set()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # worker ports of their own: another xdist worker's cluster, or this module's previous one
        # (the fixture can be set up twice in one worker) may still hold its range
        LocalCluster.made += 1
        self._worker_ports = 20000 + 500 * ((os.getpid() + 7 * LocalCluster.made) % 20)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    def _port(self) -> int:
        """A free port below Linux's ephemeral range (32768+), above every Ray worker range and the
        docs/cluster.md try-out's fixed ports (30101-30399, tests/test_cluster_doc.py).
        A port from _proc.free_port() is one the kernel may hand to any process binding port 0
        (Ray's own ports, the other xdist worker's searches) before this node binds it, and a GCS
        that finds its port taken exits only after about 40 s (the CI failure of stop 24)."""
        while True:
            port = random.randint(30400, 32767)
            if port in self._given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            self._given.add(port)
            return port

    def _node_args(self, name: str) -> list[str]:
        lo = self._worker_ports + 100 * len(self.procs)
        return ["--node-ip-address", "127.0.0.1", "--temp-dir", str(self.base / name),
                "--dashboard-agent-listen-port", str(self._port()),
                "--dashboard-agent-grpc-port", str(self._port()),
                "--metrics-export-port", str(self._port()),
                "--runtime-env-agent-port", str(self._port()),
                "--min-worker-port", str(lo), "--max-worker-port", str(lo + 99),
                "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", "--block"]

    def _popen(self, name: str, cmd: list[str]) -> None:
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 - closed by the OS at exit
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.base)

    def state(self) -> dict:
        res = subprocess.run([sys.executable, "-c", _STATE, self.address], env=self.env,
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            return {"alive": {}, "pids": {}, "error": res.stderr[-1000:]}
        return json.loads(res.stdout.strip().splitlines()[-1])

    def log_tail(self, name: str, chars: int = 3000) -> str:
        f = self.base / f"{name}.log"
        return f.read_bytes()[-chars:].decode(errors="replace") if f.exists() else "(no log)"

    def _start_node(self, name: str, cmd) -> None:
        """Start one node and wait until the cluster lists it ALIVE. A `ray start` that exits
        (a port of ours taken by another process before Ray bound it) is started
        again on fresh ports, at most three times; a failure shows the node's own log."""
        for attempt in range(3):
            self._popen(name, cmd())
            proc, last = self.procs[name], {}

            def up() -> bool:
                last.update(self.state())
                return name in last["alive"] or proc.poll() is not None

            try:
                wait_for(up, 120, interval=0.5, what=f"Ray node {name!r}")
            except AssertionError as e:
                raise AssertionError(f"{e}; the cluster state said {last.get('error', 'no error')!r}; "
                                     f"the node's log:\n{self.log_tail(name)}") from None
            if proc.poll() is None:
                return
            if attempt == 2:
                raise AssertionError(f"`ray start` of node {name!r} exited {proc.returncode} three "
                                     f"times; its log:\n{self.log_tail(name)}")
            kill_tree(ray_processes(f"{self.base / name}/") | ray_processes(f"--temp-dir {self.base / name}"))
            shutil.rmtree(self.base / name, ignore_errors=True)
            del self.procs[name]

    def start_head(self) -> None:
        def cmd() -> list[str]:
            self.gcs, self.dash = self._port(), self._port()
            return [RAY, "start", "--head", "--port", str(self.gcs), "--num-cpus", "0",
                    "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(self.dash),
                    "--ray-client-server-port", str(self._port()), *self._node_args("head")]

        self._start_node("head", cmd)

    def add_worker(self, name: str, prefix: list[str] | None = None) -> None:
        """One at a time: same-host workers started together fight over socket names."""
        self._start_node(name, lambda: [
            *(prefix or []), RAY, "start", "--address", self.address, "--num-cpus", "1",
            "--resources", json.dumps({f"node_{name}": 1}), *self._node_args(name)])

    def node_of_live_pid(self, pid: int) -> str | None:
        """The node whose raylet is an ancestor of `pid` (its command line holds the node's temp dir)."""
        try:
            for parent in psutil.Process(pid).parents():
                line = " ".join(parent.cmdline())
                for name in self.procs:
                    if f"{self.base / name}/" in line or f"--temp-dir {self.base / name} " in line:
                        return name
        except psutil.Error:
            return None
        return None

    def kill_node(self, name: str) -> None:
        """A crash: SIGKILL the node's whole process tree."""
        leader = self.procs[name]
        pids = {leader.pid} | {c.pid for c in psutil.Process(leader.pid).children(recursive=True)}
        pids |= ray_processes(f"{self.base / name}/") | ray_processes(f"--temp-dir {self.base / name}")
        kill_tree(pids - {os.getpid()})
        leader.wait(timeout=30)

    def stop_node(self, name: str) -> None:
        """A clean stop: SIGTERM to the `ray start --block` leader only."""
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "head"] + ["head"]:
            if name in self.procs:
                self.stop_node(name)
        leftovers = ray_processes(str(self.base)) - {os.getpid()}
        kill_tree(leftovers)
        shutil.rmtree(self.base, ignore_errors=True)

    def submit(self, workdir: Path, args: list[str], *, timeout: float = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{self.dash}",
                               "--working-dir", str(workdir), "--", *args], env=env or self.env,
                              cwd=workdir, capture_output=True, text=True, timeout=timeout)


# the tests of the module's cluster run on one xdist worker (`--dist loadgroup`): it is started once
ON_THE_CLUSTER = pytest.mark.xdist_group("test_cluster")


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster()
    try:
        c.start_head()
        c.add_worker("w1")
        c.add_worker("w2")
        yield c
    finally:
        c.stop()
    assert not ray_processes(str(c.base)) - {os.getpid()}, "processes of the test cluster survived"


def _space(workdir: Path, name: str, base: dict, taus: list[float], **search) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "base": base,
           "search": {"params": {"loss.tau": {"kind": "grid", "values": taus}},
                      "searcher": {"kind": "grid"}, "scheduler": {"kind": "none"},
                      "resources": {"cpu": 1, "gpu": 0}, "finalists": {"top": 0}, **search},
           "export": {"top_k": 1, "seeds": [0], "epochs": base["schedule"]["epochs"]}}
    (workdir / "space.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return workdir


DIGITS = {"model": "tiny_cnn", "method": "tfkd_reg", "data": {"dataset": "digits", "val_fraction": 0.2},
          "optim": {"lr": 0.1, "batch_size": 64},
          "schedule": {"epochs": 3, "milestones": [2], "warmup_epochs": 1}}


def _results(trial_dir: Path) -> list[dict]:
    f = trial_dir / "result.json"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return out


def _mlflow_children(storage: Path, experiment: str) -> tuple[object, list]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tfkd.role") == "search"]
    assert len(parents) == 1
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids


@pytest.mark.ray
@pytest.mark.slow
@ON_THE_CLUSTER
def test_job_submitted_search_runs_trials_on_every_worker(cluster, tmp_path):
    wd = _space(tmp_path / "job", "spread", DIGITS, [1.0, 2.0, 4.0, 8.0])
    storage = tmp_path / "runs"
    # `tfkd-search` resolves on the PATH of the head's processes, as on a cluster made by cluster.yaml
    res = cluster.submit(wd, ["tfkd-search", "--space", "space.yaml", "--address", "auto",
                              "--storage", str(storage), "--name", "spread"])
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "visible from all 3 Ray nodes" in out  # the storage check ran on the cluster and passed
    run_dir = storage / "spread"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and (trials["status"] == "completed").all() and (trials["epochs"] == 3).all()
    # every trial ran on a worker, and both workers ran trials (the head has no CPUs)
    placed = cluster.state()["pids"]
    nodes = {placed.get(str(r["pid"])) for d in run_dir.glob("trial_*") for r in _results(d)}
    assert nodes == {"w1", "w2"}, (nodes, placed)
    parent, kids = _mlflow_children(storage, "spread")
    assert parent.info.status == "FINISHED" and len(kids) == 4
    assert {k.info.status for k in kids} == {"FINISHED"}
    # token auth is on: a client with another token is turned away
    wrong = tmp_path / "wrong-token"
    wrong.write_text(secrets.token_hex(32))
    res = subprocess.run([RAY, "job", "list", "--address", f"http://127.0.0.1:{cluster.dash}"],
                         env={**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)}, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0, res.stdout[-1000:]


@pytest.mark.ray
@pytest.mark.slow
@ON_THE_CLUSTER
def test_worker_node_killed_mid_search_trials_continue_on_the_other(cluster, tmp_path):
    # slow enough epochs (~1 s) to kill a node in the middle of a trial
    base = {**DIGITS, "data": {"dataset": "synthetic", "synthetic_size": 12000, "val_fraction": 0.1},
            "schedule": {"epochs": 6, "milestones": [5], "warmup_epochs": 1}}
    wd = _space(tmp_path / "job", "nodekill", base, [1.0, 2.0, 4.0, 8.0], max_failures=3)
    storage = tmp_path / "runs"
    run_dir = storage / "nodekill"
    log = open(tmp_path / "job.log", "w")  # noqa: SIM115
    job = subprocess.Popen([RAY, "job", "submit", "--address", f"http://127.0.0.1:{cluster.dash}",
                            "--working-dir", str(wd), "--", "tfkd-search", "--space", "space.yaml",
                            "--address", "auto", "--storage", str(storage), "--name", "nodekill"],
                           env=cluster.env, cwd=wd, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    victim: dict = {}
    try:
        def a_trial_mid_way_on_w2() -> bool:
            for d in run_dir.glob("trial_*"):
                lines = _results(d)
                if lines and 2 <= lines[-1]["epoch"] <= 4 \
                        and cluster.node_of_live_pid(lines[-1]["pid"]) == "w2":
                    victim.update(dir=d, epoch=lines[-1]["epoch"])
                    return True
            return False

        wait_for(a_trial_mid_way_on_w2, 240, interval=0.2, what="a trial at epoch 2-4 on node w2")
        finished_before = {d.name: len(_results(d)) for d in run_dir.glob("trial_*")
                           if any(r["epoch"] == 6 for r in _results(d))}
        cluster.kill_node("w2")
        assert job.wait(timeout=300) == 0, (tmp_path / "job.log").read_text()[-4000:]
    finally:
        if job.poll() is None:
            job.kill()
        log.close()
    assert "succeeded" in (tmp_path / "job.log").read_text()
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert (trials["status"] == "completed").all() and (trials["epochs"] == 6).all(), trials
    for d in run_dir.glob("trial_*"):
        epochs = [r["epoch"] for r in _results(d)]
        assert epochs.count(1) == 1 and epochs[-1] == 6, (d.name, epochs)  # never restarted from 0
    for name, n in finished_before.items():  # completed trials were not run again
        assert len(_results(run_dir / name)) == n
    lines = _results(victim["dir"])
    restarts = [r for r in lines[1:] if r["iterations_since_restore"] == 1]
    assert restarts and 1 < restarts[0]["epoch"] <= victim["epoch"] + 1, lines
    placed = cluster.state()["pids"]
    assert placed.get(str(lines[-1]["pid"])) == "w1"  # resumed on the surviving node
    assert placed.get(str(lines[0]["pid"])) == "w2"
    parent, kids = _mlflow_children(storage, "nodekill")
    assert len(kids) == 4 and {k.info.status for k in kids} == {"FINISHED"}
    assert parent.info.status == "FINISHED"


@pytest.mark.ray
@pytest.mark.slow
@ON_THE_CLUSTER
def test_gpu_wait_from_the_job_entrypoint_then_a_clear_error(cluster, tmp_path):
    wd = _space(tmp_path / "job", "gpuwait", DIGITS, [1.0])
    res = cluster.submit(wd, ["tfkd-search", "--space", "space.yaml", "--gpus", "1", "--gpu-wait", "3",
                              "--address", "auto", "--storage", str(tmp_path / "runs")], timeout=180)
    out = res.stdout + res.stderr
    assert "waiting up to 3 s for 1 GPUs (the cluster has 0 now)" in out, out[-3000:]
    assert "--gpus 1: the Ray cluster at auto has 0 GPUs" in out
    assert res.returncode != 0 and "failed" in out


def _unshare_prefix() -> list[str] | None:
    """A command prefix that runs its command in a private mount namespace, or None."""
    if not shutil.which("unshare"):
        return None
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    with tempfile.TemporaryDirectory(prefix="ns", dir="/tmp") as d:
        ok = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs tmpfs {d}"],
                            capture_output=True, timeout=30).returncode == 0
    return prefix if ok else None


def _search_beside_a_blind_node(cluster, folder: Path, wd: Path, storage: Path, name: str
                                ) -> tuple[str, subprocess.CompletedProcess]:
    """A search joined with --address while a node of its own sees an empty private tmpfs at `folder`
    (like a machine without it): (that node's id, the finished search). Refused before training is a
    bounded wait (TimeoutExpired fails the test), not a clock check."""
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("needs unshare -m (a private mount namespace) for a node that cannot see a folder")
    cluster.add_worker("blind", prefix=[*prefix, "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"',
                                        str(folder)])
    try:
        blind_id = cluster.state()["alive"]["blind"]
        return blind_id, subprocess.run([TFKD, "--space", "space.yaml", "--address", cluster.address,
                                         "--storage", str(storage), "--name", name], env=cluster.env,
                                        cwd=wd, capture_output=True, text=True, timeout=120)
    finally:
        cluster.stop_node("blind")


@pytest.mark.ray
@pytest.mark.slow
@ON_THE_CLUSTER
def test_storage_a_node_cannot_see_is_refused_before_training(cluster, tmp_path):
    storage = tmp_path / "store"
    storage.mkdir()
    wd = _space(tmp_path / "job", "blindtest", DIGITS, [1.0])
    blind_id, res = _search_beside_a_blind_node(cluster, storage, wd, storage, "blindtest")
    err = res.stderr
    print(err[-1500:])
    assert res.returncode != 0, res.stdout[-2000:] + err[-2000:]
    assert f"--storage {storage.resolve()}: is local to the head node" in err, err[-3000:]
    assert blind_id[:8] in err and "s3://bucket/prefix" in err and "NFS" in err
    assert not (storage / "blindtest").exists()  # no run folder left behind
    assert not list(storage.rglob(".tfkd-storage-check-*"))


@pytest.mark.ray
@pytest.mark.slow
@ON_THE_CLUSTER
def test_a_dataset_missing_on_one_node_is_refused_before_anything_starts(cluster, tmp_path):
    """With --address the data is read on the nodes: one node whose data folder is empty (a private
    tmpfs over it, like a machine without the copy) fails the search before any folder, MLflow run or
    trial exists, naming the node, the dataset and the path (the check passing: the next test)."""
    from _fakedata import make_fake_cifar10

    data = tmp_path / "data"
    make_fake_cifar10(data)
    base = {**DIGITS, "data": {"dataset": "cifar10", "data_dir": str(data), "val_fraction": 0.2},
            "schedule": {"epochs": 1, "milestones": [], "warmup_epochs": 0}}
    wd = _space(tmp_path / "job", "nodata", base, [1.0])
    storage = tmp_path / "store"
    node_id, res = _search_beside_a_blind_node(cluster, data, wd, storage, "nodata")
    err = res.stderr
    assert res.returncode == 2, res.stdout[:2500] + err[-2000:]
    assert "Traceback" not in err and err.count("tfkd-search: error:") == 1, err[-3000:]
    assert "base.data: CIFAR-10 folder" in err and str(data) in err and node_id[:8] in err, err[-3000:]
    assert "every node that runs trials reads the data" in err
    assert not (storage / "nodata").exists()  # no run folder, so no MLflow store and no trial


@pytest.mark.ray
@pytest.mark.slow
@ON_THE_CLUSTER
def test_user_model_code_reaches_every_trial_on_the_cluster(cluster, tmp_path):
    """Bring-your-own model code on the cluster: the student's module sits in the current folder, the
    teacher's in a --code-dir outside it (on no worker's path unless shipped), the teacher's weights
    are a plain state_dict. First as a job submitted with --working-dir (the current folder travels
    as the job's working_dir, the code dir as py_modules merged with it), then joined directly with
    --address from the same folder (both shipped as py_modules)."""
    import importlib.util

    import torch

    user = ROOT / "tests" / "usermodels" / "byo_nets.py"
    code, wd = tmp_path / "code", tmp_path / "job"
    code.mkdir()
    wd.mkdir()
    shutil.copy(user, code / "dir_nets.py")
    shutil.copy(user, wd / "cwd_nets.py")
    spec = importlib.util.spec_from_file_location("byo_nets_for_weights", user)
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    teacher = tmp_path / "teacher.pt"
    torch.save({f"module.{k}": v for k, v in nets.build(10, width=4).state_dict().items()}, teacher)
    base = {**DIGITS, "method": "kd", "model": {"_target_": "cwd_nets:build", "width": 4},
            "teacher": {"checkpoint": str(teacher), "model": {"_target_": "dir_nets:build", "width": 4}},
            "schedule": {"epochs": 1, "milestones": [], "warmup_epochs": 0}}
    _space(wd, "byo", base, [1.0, 4.0])
    storage = tmp_path / "runs"
    job = cluster.submit(wd, ["tfkd-search", "--space", "space.yaml", "--address", "auto",
                              "--storage", str(storage), "--name", "byojob", "--code-dir", str(code)])
    direct = subprocess.run([TFKD, "--space", "space.yaml", "--address", cluster.address, "--storage",
                             str(storage), "--name", "byoaddr", "--code-dir", str(code)],
                            env=cluster.env, cwd=wd, capture_output=True, text=True, timeout=300)
    placed = cluster.state()["pids"]
    for name, res in (("byojob", job), ("byoaddr", direct)):
        out = res.stdout + res.stderr
        assert res.returncode == 0, (name, out[-4000:])
        # the data and the teacher (its model from the shipped code) checked on the trial nodes first
        assert re.search(r"dataset checked on [12] Ray node", out), (name, out[-4000:])
        trials = pd.read_parquet(storage / name / "trials.parquet")
        assert len(trials) == 2 and (trials["status"] == "completed").all(), (name, trials)
        nodes = {placed.get(str(r["pid"])) for d in (storage / name).glob("trial_*")
                 for r in _results(d)}
        assert nodes <= {"w1", "w2"} and nodes, (name, nodes)  # trained on the workers
        rank1 = yaml.safe_load((storage / name / "best" / "rank1.yaml").read_text())
        assert rank1["model"] == base["model"] and rank1["teacher"]["model"] == base["teacher"]["model"]
