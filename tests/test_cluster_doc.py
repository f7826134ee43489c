"""docs/cluster.md's local try-out, run verbatim: the ```bash blocks after `<!-- local-tryout -->` start a head
(no CPUs) and two 1-CPU workers with `ray start` on this machine, token auth on, and submit the quickstart with
`ray job submit`. The test runs them in one `bash -euo pipefail`, with a fresh HOME (the doc's `~/.ray/auth_token`
and `~/tfkd-tryout` land there) in a copy of the repository's tracked files, then checks the job, the run folder,
that both workers ran trials and the head none, and that the job API is bound to 127.0.0.1 only.

The doc's last step, `ray stop` (after `<!-- local-tryout-stop -->`), is not run: it ends every Ray process of the
user on the machine, found by name, including Ray instances of other tests running meanwhile. The test ends the
processes of its own try-out by PID instead (those whose command line names its HOME, and their children)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from _proc import kill_tree, ray_processes

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cluster.md"
BIN = Path(sys.executable).parent
TIMEOUT_S = 900  # the whole try-out: about 3 minutes on 2 idle cores, far more on busy ones


def doc_blocks(marker: str) -> list[str]:
    text = DOC.read_text()
    return re.findall(rf"<!-- {re.escape(marker)} -->\s*```bash\n(.*?)```", text, flags=re.S)


def commands(script: str) -> list[str]:
    """The script's commands, continuation lines joined and comments dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", script)
    return [re.sub(r"\s+#.*$", "", ln).strip() for ln in joined.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def flag(cmd: str, name: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(name)}[ =](\S+)", cmd)
    return m.group(1) if m else None


def ray_starts(script: str) -> list[str]:
    return [c for c in commands(script) if c.startswith("ray start")]


def node_ports(cmd: str) -> set[int]:
    """Every port a `ray start` command names, worker port range included."""
    ports = {int(v) for v in re.findall(r"--[a-z-]*port[ =](\d+)", cmd)}
    lo, hi = flag(cmd, "--min-worker-port"), flag(cmd, "--max-worker-port")
    if lo and hi:
        ports |= set(range(int(lo), int(hi) + 1))
    return ports


# ------------------------------------------------------------------------------------------------
# The document itself: quick checks that need no Ray


def test_tryout_blocks_are_a_consistent_local_cluster():
    blocks = doc_blocks("local-tryout")
    assert len(blocks) >= 3, "docs/cluster.md: the local try-out blocks (<!-- local-tryout -->) are missing"
    script = "\n".join(blocks)
    cmds = commands(script)
    assert cmds[0] == "export RAY_AUTH_MODE=token"  # token auth for every command that follows
    starts = ray_starts(script)
    heads = [c for c in starts if " --head" in c]
    workers = [c for c in starts if " --head" not in c]
    assert len(heads) == 1 and len(workers) == 2, starts
    head = heads[0]
    assert flag(head, "--num-cpus") == "0" and flag(head, "--dashboard-host") == "127.0.0.1"
    assert flag(head, "--include-dashboard") == "true"
    gcs, dash = flag(head, "--port"), flag(head, "--dashboard-port")
    for w in workers:
        assert flag(w, "--address") == f"127.0.0.1:{gcs}" and flag(w, "--num-cpus") == "1"
    # no two nodes share a port (the cause of "Agent port ... failed to bind"), nor a temp dir
    for i, a in enumerate(starts):
        assert flag(a, "--dashboard-agent-listen-port") and flag(a, "--min-worker-port"), a
        for b in starts[i + 1:]:
            assert not node_ports(a) & node_ports(b), (a, b, sorted(node_ports(a) & node_ports(b)))
    assert len({flag(c, "--temp-dir") for c in starts}) == 3
    (submit,) = [c for c in cmds if c.startswith("ray job submit")]
    assert flag(submit, "--address") == f"http://127.0.0.1:{dash}"
    assert "-- tfkd-search --space search_spaces/quickstart.yaml --address auto --storage" in submit
    assert doc_blocks("local-tryout-stop") == ["ray stop\n"]


# ------------------------------------------------------------------------------------------------
# The try-out, run as written


_STATE = """
import json, sys
from ray.util.state import list_actors, list_nodes
addr = sys.argv[1]
nodes = list_nodes(address=addr, detail=True, limit=100)
actors = list_actors(address=addr, detail=True, limit=10000)
print(json.dumps({"nodes": [{"id": n.node_id, "head": n.is_head_node, "state": n.state, "ip": n.node_ip}
                            for n in nodes],
                  "pids": {str(a.pid): a.node_id for a in actors if a.pid}}))
"""


def _port_busy(port: int) -> bool:
    """Something listens on it (sockets in TIME_WAIT from an earlier run do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _copy_tracked_files(dest: Path) -> None:
    """The repository as a fresh clone has it: `--working-dir .` uploads this copy."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                           timeout=60).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _trial_pids(run_dir: Path) -> set[str]:
    pids = set()
    for f in run_dir.glob("trial_*/result.json"):
        for line in f.read_text().splitlines():
            try:
                pids.add(str(json.loads(line)["pid"]))
            except (json.JSONDecodeError, KeyError):
                pass
    return pids


@pytest.fixture
def tryout_home():
    """A fresh, short HOME (Ray's socket paths under ~/tfkd-tryout must stay below 107 bytes); on the way out,
    every process whose command line names it is killed by PID, and the folder goes."""
    home = Path(tempfile.mkdtemp(prefix="td", dir="/tmp"))
    try:
        yield home
    finally:
        leftovers = ray_processes(str(home)) - {os.getpid()}
        kill_tree(leftovers)
        still = ray_processes(str(home)) - {os.getpid()}
        shutil.rmtree(home, ignore_errors=True)
        assert not still, f"processes of the try-out survived: {sorted(still)}"


@pytest.mark.ray
@pytest.mark.slow
def test_local_tryout_runs_as_written(tryout_home):
    blocks = doc_blocks("local-tryout")
    script = "\n".join(blocks)
    starts = ray_starts(script)
    busy = sorted(p for c in starts for p in node_ports(c) if _port_busy(p))
    if busy:
        pytest.skip(f"ports of the docs/cluster.md try-out are in use here: {busy[:10]}")
    head = next(c for c in starts if " --head" in c)
    dash = int(flag(head, "--dashboard-port"))
    api = f"http://127.0.0.1:{dash}"

    repo = tryout_home / "repo"
    repo.mkdir()
    _copy_tracked_files(repo)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "TFKD_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(HOME=str(tryout_home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    log_path = tryout_home / "tryout.log"
    t0 = time.time()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=repo, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    elapsed = time.time() - t0
    out = log_path.read_text(errors="replace")
    print(f"try-out: rc {rc} after {elapsed:.0f} s")
    assert rc == 0, f"the try-out exited with {rc} after {elapsed:.0f} s:\n{out[-6000:]}"
    assert re.search(r"Job 'raysubmit_\w+' succeeded", out), out[-4000:]
    assert "visible from all 3 Ray nodes" in out, out[-4000:]  # the multi-node storage check ran

    run_dir = tryout_home / "tfkd-tryout" / "runs" / "quickstart"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 12 and trials["trial_id"].is_unique, trials  # the quickstart's 3 x 2 x 2 grid
    assert set(trials["status"]) <= {"completed", "stopped_early"}, trials[["trial_id", "status", "error"]]
    assert (trials["epochs"] <= 4).all() and (trials["epochs"] == 4).any()  # the doc's --set took effect
    assert (run_dir / "best" / "rank1.yaml").is_file() and (run_dir / "report" / "index.html").is_file()
    assert "wall_seconds" in out  # the doc's results step printed trials.parquet (the job's table has no such column)

    # where the trials ran: every trial's pid belongs to an actor on a worker, and both workers had some
    res = subprocess.run([str(BIN / "python"), "-c", _STATE, api], env={**env, "RAY_AUTH_MODE": "token"},
                         capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads(res.stdout.strip().splitlines()[-1])
    alive = [n for n in state["nodes"] if n["state"] == "ALIVE"]
    heads = {n["id"] for n in alive if n["head"]}
    workers = {n["id"] for n in alive if not n["head"]}
    assert len(heads) == 1 and len(workers) == 2, state["nodes"]
    pids = _trial_pids(run_dir)
    assert pids, "no trial results with a pid"
    placed = {state["pids"].get(p) for p in pids}
    assert placed == workers, (placed, workers, heads)

    # the job API answers on 127.0.0.1 only, not on the address Ray registered the nodes under
    assert _reachable("127.0.0.1", dash)
    node_ip = alive[0]["ip"]
    if not node_ip.startswith("127."):
        assert not _reachable(node_ip, dash), f"the dashboard answers on {node_ip}:{dash}"
