"""GPU throughput of the REAL search (`tfkd-search --space ... --gpus 1`, Ray Tune + MLflow), side by side
with the classic single-trial pipeline and a batch-512 run of benchmarks/throughput.py.

For each K in --packing (default 1 2 4 8) it writes a space of K grid trials with resources.gpu = 1/K
(ResNet18, CIFAR-100-shaped data, batch 128, no early stopping), packed into one host process per GPU
(search.resources.pack: true, each trial on its own CUDA stream), and for each K in --processes
(default 4) the same with one process per trial (pack: false); it runs the CLI as a subprocess and
reports, from the trials' own records (history.parquet, and Ray's per-trial result.json):
  images/s      sum over the K concurrent trials of each trial's median images_per_s (first epoch
                excluded when there are more); also wall_images_per_s: trial-epochs x training images / window
  GPU busy      mean `nvidia-smi utilization.gpu` (sampled every 200 ms) over the training window
  peak MiB      per trial process, from `nvidia-smi --query-compute-apps` (sampled every second)
  first epoch   seconds from the command's start to the first trial's first epoch report
  overhead      per epoch after the first: (wall time between a trial's consecutive epoch reports
                - epoch_seconds) / epoch_seconds, i.e. reporting + checkpointing + MLflow (median)
Epochs per trial are sized from a measured single-trial rate so that each search keeps the GPU busy
for about --minutes. Fake CIFAR-100 files are written unless --data-dir holds cifar-100-python/.

  python benchmarks/search_throughput.py --minutes 1                 # on a GPU host
  python benchmarks/search_throughput.py --smoke --json /tmp/s.json  # CPU smoke: tiny_cnn, 2 trials, --gpus 0
JSON: benchmarks/results/search_throughput-<gpu name>.json (or --json); a table is printed.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------
# GPU sampling (nvidia-smi; absent on a CPU machine: the figures are then null)

class GpuSampler:
    def __init__(self) -> None:
        self.util: list[tuple[float, float]] = []  # (time, percent)
        self.mem: dict[int, float] = {}  # pid -> peak MiB
        self._stop = threading.Event()
        self._procs: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []
        self.available = shutil.which("nvidia-smi") is not None

    def start(self) -> GpuSampler:
        if not self.available:
            return self
        p = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                              "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._procs.append(p)
        self._threads = [threading.Thread(target=self._read_util, args=(p,), daemon=True),
                         threading.Thread(target=self._poll_mem, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _read_util(self, p: subprocess.Popen) -> None:
        for line in p.stdout:
            try:
                self.util.append((time.time(), float(line.split(",")[0])))
            except ValueError:
                pass

    def _poll_mem(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                     timeout=10).stdout
                for line in out.splitlines():
                    pid, mib = (s.strip() for s in line.split(",")[:2])
                    self.mem[int(pid)] = max(self.mem.get(int(pid), 0.0), float(mib))
            except (ValueError, OSError, subprocess.SubprocessError):
                pass
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        for p in self._procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        for t in self._threads:
            t.join(5)

    def busy(self, t0: float, t1: float) -> float | None:
        xs = [u for t, u in self.util if t0 <= t <= t1]
        return statistics.fmean(xs) / 100 if xs else None


# ------------------------------------------------------------------------------------------------
# One search

def space_yaml(name: str, k: int, epochs: int, model: str, batch: int, gpu_share: float, cpu: float,
               pack: bool) -> str:
    taus = [float(1 + i) for i in range(k)]  # K distinct grid points = K trials
    return f"""# generated by benchmarks/search_throughput.py
name: {name}
description: search throughput, {k} trials per GPU
base:
  model: {model}
  method: tfkd_reg
  data: {{dataset: cifar100, val_fraction: 0.1}}
  loss: {{semantics: paper, tau: 4.0, alpha: 0.5, a: 0.9}}
  optim: {{lr: 0.1, batch_size: {batch}}}
  schedule: {{epochs: 200, budget: {epochs}}}
search:
  params:
    loss.tau: {{kind: grid, values: {json.dumps(taus)}}}
  searcher: {{kind: grid}}
  scheduler: {{kind: none}}
  resources: {{cpu: {cpu}, gpu: {gpu_share}, pack: {str(pack).lower()}}}
  max_failures: 0
export: {{top_k: 1, seeds: [0], epochs: {epochs}}}
"""


def _results(run_dir: Path) -> list[list[dict]]:
    """Ray's per-trial result.json (one JSON line per report), for timing between reports."""
    out = []
    for f in sorted(glob.glob(str(run_dir / "**" / "result.json"), recursive=True)):
        rows = []
        for line in Path(f).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
        if rows:
            out.append(rows)
    return out


def run_search(args: argparse.Namespace, k: int, epochs: int, work: Path, data_dir: Path,
               gpus: str, n_train: int, pack: bool) -> dict:
    name = f"thr-k{k}-{'packed' if pack else 'procs'}"
    share = 0.0 if gpus == "0" else round(1.0 / k, 6)
    space = work / f"{name}.yaml"
    space.write_text(space_yaml(name, k, epochs, args.model, args.batch, share, args.cpu_per_trial,
                                pack))
    storage = work / "runs"
    run_dir = storage / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "tfkd_search.cli", "--space", str(space), "--gpus", gpus,
           "--storage", str(storage), "--data-dir", str(data_dir)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), PYTHONUNBUFFERED="1")
    log = work / f"{name}.log"
    how = "packed in one process" if pack else "one process each"
    print(f"  search K={k}: {k} trials x {epochs} epochs, gpu {share} each, {how} ... ", end="",
          flush=True)
    sampler = GpuSampler().start()
    first_seen: list[float] = []

    def watch() -> None:  # the first result.json line of any trial = the first epoch report
        while not first_seen and proc.poll() is None:
            if _results(run_dir):
                first_seen.append(time.time())
                return
            time.sleep(0.2)

    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(work),
                                start_new_session=True)
        w = threading.Thread(target=watch, daemon=True)
        w.start()
        try:
            rc = proc.wait(timeout=args.search_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 15)
            rc = proc.wait()
    t_end = time.time()
    sampler.stop()
    w.join(1)
    res: dict = {"mode": f"search {k} trials/GPU, {'packed' if pack else 'processes'}",
                 "trials_per_gpu": k, "packed": pack, "gpu_share": share,
                 "epochs": epochs, "returncode": rc, "wall_s": t_end - t0, "log": str(log)}
    print(f"rc {rc}, {t_end - t0:.0f} s", flush=True)
    if rc != 0:
        res["error"] = log.read_text()[-2000:]
        print(res["error"], file=sys.stderr)
        return res

    import pandas as pd

    hist = pd.read_parquet(run_dir / "history.parquet")
    res["trials"] = int(hist["trial_id"].nunique())
    rates = []
    for _, h in hist.groupby("trial_id"):
        h = h.sort_values("epoch")
        steady = h.iloc[1:] if len(h) > 1 else h
        rates.append(float(steady["images_per_s"].median()))
    res["per_trial_images_per_s"] = rates
    res["images_per_s"] = sum(rates)  # the K trials run concurrently

    results = _results(run_dir)
    res["ray_result_json"] = bool(results)
    gaps, first, last = [], [], []
    for rows in results:
        rows = [r for r in rows if "epoch_seconds" in r]
        if not rows:
            continue
        first.append(rows[0]["timestamp"] - rows[0]["epoch_seconds"])  # the first epoch's start
        last.append(rows[-1]["timestamp"])
        for r in rows[1:]:  # the first report also holds the trial's start-up
            if r.get("time_this_iter_s") and r["epoch_seconds"] > 0:
                gaps.append((r["time_this_iter_s"] - r["epoch_seconds"]) / r["epoch_seconds"])
    res["overhead_fraction"] = statistics.median(gaps) if gaps else None
    res["overhead_fraction_max"] = max(gaps) if gaps else None
    res["first_epoch_s"] = (first_seen[0] - t0) if first_seen else (
        min(r[0]["timestamp"] for r in results) - t0 if results else None)
    window = (min(first), max(last)) if first else (t0, t_end)
    res["train_window_s"] = window[1] - window[0]
    if res["train_window_s"] >= 5 and first:  # approximate: n_train images per trial-epoch; Ray's
        # timestamps are whole seconds, so short windows give no figure
        res["wall_images_per_s"] = n_train * len(hist) / res["train_window_s"]
    res["gpu_busy"] = sampler.busy(*window) if sampler.available else None
    res["gpu_busy_whole_command"] = sampler.busy(t0, t_end) if sampler.available else None
    # nvidia-smi sees processes: a packed search is one host process for its K trials
    procs = sorted(sampler.mem.values(), reverse=True)
    res["peak_mib_per_trial"] = ([procs[0] / k] if pack else procs[:k]) if procs else None
    res["peak_mib"] = (procs[0] / k if pack else procs[0]) if procs else None
    return res


# ------------------------------------------------------------------------------------------------

def baseline(args: argparse.Namespace, device, small: bool) -> list[dict]:
    """The classic pipeline, ours (one trial) and batch 512, with throughput.py's own functions."""
    tp = _load("throughput")
    ns = argparse.Namespace(model=args.model, classes=100, batch=args.batch, size=32, images=10240,
                            steps=40, warmup=10, repeats=3, workers=min(8, os.cpu_count() or 1),
                            device=str(device))
    if small:
        ns.images, ns.steps, ns.warmup, ns.repeats, ns.workers = 512, 4, 2, 2, 1
    cuda = device.type == "cuda"
    rows = []
    for label, fn in ((f"classic (PIL+{ns.workers} workers, fp32)", lambda: tp.run_classic(ns, device)),
                      (f"ours {'graph' if cuda else 'eager'} 1 trial",
                       lambda: tp.run_ours(ns, device, graphs=cuda, batch=ns.batch)),
                      (f"ours {'graph' if cuda else 'eager'} batch {args.big_batch}",
                       lambda: tp.run_ours(ns, device, graphs=cuda, batch=args.big_batch))):
        r = fn()
        r["mode"], r["images_per_s"] = label, statistics.median(r["rates"])
        print(f"  {label:<40} {r['images_per_s']:>10.0f} images/s", flush=True)
        rows.append(r)
        if cuda:
            import torch

            torch.cuda.empty_cache()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=1.0, help="GPU-busy minutes per search (default 1)")
    p.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8],
                   help="trials per GPU, packed in one host process (search.resources.pack: true)")
    p.add_argument("--processes", type=int, nargs="*",
                   help="trials per GPU as one process each (pack: false), for comparison (default 4; "
                   "none with --smoke)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--big-batch", type=int, default=512)
    p.add_argument("--cpu-per-trial", type=float, default=1.0)
    p.add_argument("--epochs", type=int, help="epochs per trial (default: sized from --minutes)")
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--data-dir", help="folder with cifar-100-python/ (default: fake files in --work)")
    p.add_argument("--work", help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--search-timeout", type=float, default=600.0, help="seconds per search")
    p.add_argument("--no-baseline", action="store_true", help="skip the throughput.py rows")
    p.add_argument("--json", help="output JSON (default benchmarks/results/search_throughput-<gpu>.json)")
    p.add_argument("--smoke", action="store_true", help="CPU smoke: tiny_cnn, small fake data, 2 trials, "
                   "2 epochs, --gpus 0")
    args = p.parse_args()

    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    gpu_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    if args.smoke:
        args.model, args.batch, args.big_batch, args.packing = "tiny_cnn", 32, 64, [2]
        args.epochs = args.epochs or 2
    if args.processes is None:
        args.processes = [] if args.smoke else [4]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tfkd-search-thr-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    data_dir = Path(args.data_dir).resolve() if args.data_dir else work / "data"
    n_train_total = 50000
    if not (data_dir / "cifar-100-python" / "train").exists():
        n_train_total = 600 if args.smoke else 50000
        _load("make_fake_cifar").main(str(data_dir), n_train_total, 120 if args.smoke else 10000)
    print(f"device: {gpu_name}; torch {torch.__version__}; model {args.model}, batch {args.batch}, "
          f"packing {args.packing}, ~{args.minutes} min per search", flush=True)

    rows = [] if args.no_baseline else baseline(args, device, small=args.smoke or not cuda)
    single = next((r["images_per_s"] for r in rows if "1 trial" in r["mode"]), None)
    n_train = int(n_train_total * 0.9)
    searches = []
    plan = [(k, True) for k in args.packing] + [(k, False) for k in args.processes]
    out = Path(args.json) if args.json else (
        ROOT / "benchmarks" / "results" /
        f"search_throughput-{gpu_name.replace(' ', '_').replace('/', '_')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> bool:
        """Write the JSON so far (after the baseline and after every search: a run cut short by a
        time box keeps what it measured); ok once every planned search has finished."""
        base = rows[0]["images_per_s"] if rows else None
        for r in rows + searches:
            r["vs_classic"] = (r["images_per_s"] / base) if base and r.get("images_per_s") else None
        ok = all(s.get("returncode") == 0 for s in searches) and len(searches) == len(plan)
        out.write_text(json.dumps({"device": gpu_name, "torch": torch.__version__, "model": args.model,
                                   "batch": args.batch, "smoke": args.smoke, "ok": ok, "baseline": rows,
                                   "searches": searches, "planned": len(plan), "argv": sys.argv[1:]},
                                  indent=2, default=str))
        return ok

    save()
    for k, pack in plan:
        if args.epochs:
            epochs = args.epochs
        else:  # K trials share the GPU: assume their sum runs at about the single-trial rate
            rate = single or 5000.0
            epochs = int(min(args.max_epochs, max(2, math.ceil(args.minutes * 60 * rate / (k * n_train)))))
        searches.append(run_search(args, k, epochs, work, data_dir, "0" if not cuda else "1",
                                   n_train, pack))
        save()
        if searches[-1].get("returncode") != 0:
            break

    ok = save()
    table = rows + searches

    def fmt(v, spec, scale=1.0):
        return "-" if v is None else format(v * scale, spec)

    print(f"\n{'mode':<42}{'images/s':>10}{'vs classic':>11}{'GPU busy':>10}{'peak MiB':>10}"
          f"{'1st epoch s':>12}{'overhead':>10}")
    for r in table:
        mem = r.get("peak_mib") if "trials_per_gpu" in r else r.get("mem_reserved_mib")
        print(f"{r['mode']:<42}{fmt(r.get('images_per_s'), '.0f'):>10}"
              f"{fmt(r.get('vs_classic'), '.2f'):>10}x{fmt(r.get('gpu_busy'), '.0%'):>10}"
              f"{fmt(mem, '.0f'):>10}{fmt(r.get('first_epoch_s'), '.1f'):>12}"
              f"{fmt(r.get('overhead_fraction'), '.1%'):>10}")
    print("images/s of a search = sum of its concurrent trials' median per-epoch images/s (history.parquet); "
          "overhead = (time between epoch reports - epoch_seconds) / epoch_seconds, median")
    print(f"wrote {out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
