"""Record learning curves: every point of a grid, trained for the whole budget with several seeds.

    python benchmarks/curves.py benchmarks/curves_digits_tiny_cnn.yaml --seeds 3 --workers 2
    python benchmarks/curves.py search_spaces/quickstart.yaml --seeds 2 --workers 1 --out OUT.parquet
    python benchmarks/curves.py benchmarks/curves_cifar10_resnet18.yaml --data-dir D   # GPU: packed

SPEC is a search-space YAML (its base config and its grid params) or a curves YAML::

    space: ../search_spaces/quickstart.yaml     # relative to the curves YAML
    set: {schedule.epochs: 12, search.params: {...}}   # --set-style overrides of the space
    extra:                                      # more config groups, each trained like the grid
      - {name: ce, set: {method: ce}}           # a baseline: base overrides only
      - {name: official, set: {loss.semantics: official}, params: {loss.alpha: [0.1, 0.9]}}
    seeds: [0, 1]                               # default seeds (--seeds N overrides: 0..N-1)
    out: results/curves-digits-tiny_cnn.parquet  # relative to the curves YAML

No Ray. On a GPU (default `--pack 4`) the trials are packed in this one process on a
`tfkd_search.packing.TrialHost`, each on its own CUDA stream, as the search packs them; without packing
(`--pack 0`, the CPU default) they run `tfkd_search.trainer.train(cfg, data=splits, report=callback)` in
`--workers` processes (CPU: 1-2, `--threads 1`), each loading the data once. Every epoch is recorded
(val_acc, val_loss, lr, train loss parts) and the stand-in test accuracy at the end, in one parquet file (one row per config, seed and epoch) whose schema
metadata holds the base config, budget and groups. The file is rewritten after every trial, and a rerun
skips the (config, seed) pairs it already holds, so an interrupted recording continues.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfkd_search.config import (build_run_config, config_to_dict, get_path, read_yaml,  # noqa: E402
                                with_overrides)
from tfkd_search.overrides import parse_set  # noqa: E402

# Config keys recorded for every config (the identity of a curve), then any other searched path.
KEYS = ("method", "loss.semantics", "loss.tau", "loss.alpha", "loss.a", "loss.multiplier", "loss.eps")
EPOCH_METRICS = ("val_acc", "val_loss", "lr", "train_loss", "train_ce", "train_kl", "epoch_seconds")
# Keys that matter for each method (the rest of a baseline's loss block is unused).
RELEVANT = {"ce": (), "lsr": ("loss.semantics", "loss.eps"),
            "tfkd_reg": ("loss.semantics", "loss.tau", "loss.alpha", "loss.a", "loss.multiplier"),
            "kd": ("loss.semantics", "loss.tau", "loss.alpha", "loss.multiplier"),
            "tfkd_self": ("loss.semantics", "loss.tau", "loss.alpha", "loss.multiplier")}


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def config_id(group: str, values: dict[str, Any]) -> str:
    """Readable, stable id: 'paper:tau=4,alpha=0.7,a=0.99' (the group, then its grid values)."""
    inner = ",".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in values.items())
    return f"{group}:{inner}" if inner else group


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The configs to record: {'configs': [{id, group, cfg (dict), values}], 'meta': {...}};
    `overrides` (--set) apply after the curves YAML's own `set`."""
    from tfkd_search.spaces import Grid, grid_points, load_space

    path = Path(path)
    raw = read_yaml(path)
    if isinstance(raw, dict) and "space" in raw:
        spec = raw
        space_path = (path.parent / str(spec["space"])).resolve()
    else:
        spec, space_path = {}, path
    space = load_space(space_path, {**(spec.get("set") or {}), **(overrides or {})})
    base = space.base_dict()
    base["evaluate_test"] = True
    grid = {k: d for k, d in space.params.items()}
    bad = [k for k, d in grid.items() if not isinstance(d, Grid)]
    if bad:
        raise SystemExit(f"{space_path}: curves need kind: grid for every parameter, not {bad}")
    groups = [{"name": str(spec.get("grid_name", base["loss"]["semantics"] if base["method"] == "tfkd_reg"
                                    else base["method"])), "set": {}, "points": grid_points(space)}]
    for extra in spec.get("extra") or []:
        params = {k: list(v) for k, v in (extra.get("params") or {}).items()}
        keys = list(params)
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(params[k] for k in keys))]
        groups.append({"name": str(extra["name"]), "set": dict(extra.get("set") or {}), "points": points})
    configs, seen = [], set()
    for g in groups:
        for point in g["points"]:
            raw_cfg = with_overrides(base, {**g["set"], **point})
            cfg = build_run_config(raw_cfg, source=str(path), prefix="curve")
            cid = config_id(g["name"], point)
            if cid in seen:
                raise SystemExit(f"{path}: config id {cid!r} appears twice; give the groups distinct names")
            seen.add(cid)
            configs.append({"id": cid, "group": g["name"], "cfg": config_to_dict(cfg), "values": point})
    datas = {json.dumps(c["cfg"]["data"], sort_keys=True) for c in configs}
    if len(datas) != 1:
        raise SystemExit(f"{path}: every config must use the same data block (one load per worker)")
    extra_keys = sorted({k for c in configs for k in c["values"] if k not in KEYS})
    sched = base["schedule"]
    meta = {"spec": str(path), "space": str(space_path), "space_name": space.spec.name, "base": base,
            "budget": space.budget, "schedule": sched, "keys": [*KEYS, *extra_keys],
            "groups": [g["name"] for g in groups]}
    seeds = [int(s) for s in spec.get("seeds", [0, 1])]
    out = spec.get("out")
    return {"configs": configs, "meta": meta, "seeds": seeds,
            "out": (path.parent / out) if out else None}


# -- worker side -----------------------------------------------------------------------------------
_DATA: Any = None


def _init_worker(cfg_dict: dict[str, Any], threads: int | None) -> None:
    global _DATA
    import torch

    from tfkd_search.trainer import load_run_data

    if threads:
        torch.set_num_threads(threads)
    _DATA = load_run_data(build_run_config(cfg_dict, source="curves"))


def _record(cid: str, cfg_dict: dict[str, Any], seed: int, threads: int | None, run: Any) -> dict[str, Any]:
    """Train one (config, seed) with `run(cfg, report) -> (status, test_acc)`; every epoch recorded."""
    from tfkd_search.trainer import EpochReport

    cfg = build_run_config({**cfg_dict, "seed": seed, **({"threads": threads} if threads else {})},
                           source=cid)
    rows: list[dict[str, Any]] = []
    correct: list[str] = []

    def report(ep: EpochReport) -> None:
        rows.append({"epoch": ep.epoch, **{k: float(ep.metrics.get(k, math.nan)) for k in EPOCH_METRICS},
                     "diverged": 1.0 if ep.status == "diverged" else 0.0})
        if ep.val_correct:
            correct.append(ep.val_correct)

    t0 = time.time()
    status, test = run(cfg, report)
    return {"id": cid, "seed": seed, "rows": rows, "status": status,
            "test_acc": float(test) if test is not None else math.nan, "seconds": time.time() - t0,
            "val_correct": correct[-1] if correct else None}


def _train_one(cid: str, cfg_dict: dict[str, Any], seed: int, threads: int | None) -> dict[str, Any]:
    """A worker process's trial (the data loaded once per worker by `_init_worker`)."""
    from tfkd_search.trainer import train

    def run(cfg: Any, report: Any) -> tuple[str, float | None]:
        res = train(cfg, data=_DATA, report=report)
        return res.status, res.test_acc

    return _record(cid, cfg_dict, seed, threads, run)


def _train_packed(host: Any, cid: str, cfg_dict: dict[str, Any], seed: int,
                  threads: int | None) -> dict[str, Any]:
    """A trial packed on `host` (a `TrialHost` of this process), driven from a pool thread."""
    def run(cfg: Any, report: Any) -> tuple[str, float | None]:
        summary = host.train(f"{cid}#{seed}", cfg, report=report)
        return summary["status"], summary.get("test_acc")

    return _record(cid, cfg_dict, seed, threads, run)


# -- driver ----------------------------------------------------------------------------------------
def _frame(results: list[dict[str, Any]], by_id: dict[str, dict[str, Any]], keys: list[str]) -> Any:
    import pandas as pd

    recs = []
    for r in results:
        c = by_id[r["id"]]
        ident = {k: get_path(c["cfg"], k) for k in keys}
        last = max((row["epoch"] for row in r["rows"]), default=None)
        for row in r["rows"]:
            recs.append({"config_id": r["id"], "group": c["group"], **ident, "seed": r["seed"], **row,
                         "test_acc": r["test_acc"], "status": r["status"],
                         # the last epoch's per-image validation results (stats.pack_correct)
                         "val_correct": r.get("val_correct") if row["epoch"] == last else None})
    df = pd.DataFrame(recs)
    for k in keys:  # one type per column (parquet)
        if k in df and df[k].map(type).nunique() > 1:
            df[k] = pd.to_numeric(df[k], errors="ignore")
    return df


def write(df: Any, meta: dict[str, Any], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"tfkd_curves": json.dumps(meta).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.parquet")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out)


def read_curves(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(DataFrame, metadata) of a curves file."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"tfkd_curves", b"{}"))
    return table.to_pandas(), meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="a search-space YAML or a curves YAML")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the curves YAML's list, or 2)")
    p.add_argument("--workers", type=int, default=1,
                   help="trial processes when trials are not packed (CPU: 1-2)")
    p.add_argument("--pack", type=int, default=None,
                   help="trials packed in this one process, each on its own CUDA stream (the search's "
                        "packing; default 4 on a GPU, 0 = worker processes on the CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default 1 on the CPU, torch's default on a GPU)")
    p.add_argument("--out", help="parquet to write (default: the curves YAML's out, or "
                                 "benchmarks/results/curves-<space name>.parquet)")
    p.add_argument("--data-dir", help="set data.data_dir of every config")
    p.add_argument("--limit", type=int, help="record only the first N configs (smoke runs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the spec's `set` (e.g. --set schedule.budget=2 --set model.name=tiny_cnn)")
    args = p.parse_args(argv)

    spec = load_spec(args.spec, parse_set(args.overrides))
    configs, meta = spec["configs"], spec["meta"]
    if args.data_dir:
        for c in configs:
            c["cfg"]["data"]["data_dir"] = args.data_dir
    if args.limit:
        configs = configs[:args.limit]
    seeds = list(range(args.seeds)) if args.seeds else spec["seeds"]
    out = Path(args.out) if args.out else spec["out"] or (
        ROOT / "benchmarks" / "results" / f"curves-{meta['space_name']}.parquet")
    import torch

    on_gpu = torch.cuda.is_available() and configs[0]["cfg"]["device"] in ("auto", "cuda")
    pack = args.pack if args.pack is not None else (4 if on_gpu else 0)
    threads = args.threads or (None if on_gpu else 1)
    meta = {**meta, "seeds": seeds, "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
            "packed": pack}
    by_id = {c["id"]: c for c in configs}

    results: list[dict[str, Any]] = []
    if out.exists():  # resume: keep what is recorded, skip those (config, seed) pairs
        old, _ = read_curves(out)
        for (cid, seed), g in old.groupby(["config_id", "seed"]):
            if cid in by_id:
                g = g.sort_values("epoch")
                correct = g["val_correct"].iloc[-1] if "val_correct" in g else None
                results.append({"id": cid, "seed": int(seed), "test_acc": float(g["test_acc"].iloc[-1]),
                                "status": str(g["status"].iloc[-1]),
                                "val_correct": correct if isinstance(correct, str) else None,
                                "rows": g[["epoch", *EPOCH_METRICS, "diverged"]].to_dict("records")})
    done = {(r["id"], r["seed"]) for r in results}
    # config by config, all seeds of one together: a recording cut short still holds whole configs
    todo = [(c["id"], s) for c in configs for s in seeds if (c["id"], s) not in done]
    how = f"{pack} trials packed in one process" if pack else f"{args.workers} worker processes"
    print(f"{len(configs)} configs x {len(seeds)} seeds, budget {meta['budget']} epochs: "
          f"{len(todo)} trials to train ({len(done)} recorded), {how} on {meta['device']} -> {out}",
          flush=True)
    from tfkd_search.trainer import load_run_data

    first = build_run_config(configs[0]["cfg"], source=str(args.spec))
    data = load_run_data(first)  # a missing dataset fails here, in one message
    t0 = time.time()
    if not todo:  # all recorded (e.g. a file copied from a wider spec): keep just this spec's configs
        write(_frame(results, by_id, meta["keys"]), {**meta, "wall_s": 0.0}, out)
        print(f"nothing to train: {out} holds {len(results)} runs")
        return
    if pack:
        from concurrent.futures import ThreadPoolExecutor

        from tfkd_search.packing import TrialHost

        if threads:
            torch.set_num_threads(threads)
        host = TrialHost(first.device, max_trials=pack)
        host.preload(first, data)  # the packed trials share these splits
        pool: Any = ThreadPoolExecutor(max_workers=pack, thread_name_prefix="curves")
        submit = lambda cid, s: pool.submit(_train_packed, host, cid, by_id[cid]["cfg"], s, threads)  # noqa: E731
    else:  # each worker process loads its own copy
        import multiprocessing as mp

        host, data = None, None
        pool = ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=(configs[0]["cfg"], threads))
        submit = lambda cid, s: pool.submit(_train_one, cid, by_id[cid]["cfg"], s, threads)  # noqa: E731
    try:
        pending = {submit(cid, s) for cid, s in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                r = f.result()
                results.append(r)
                last = r["rows"][-1]["val_acc"] if r["rows"] else math.nan
                n = len(results) - len(done)
                print(f"[{n}/{len(todo)} {time.time() - t0:6.0f}s] {r['id']} seed {r['seed']}: "
                      f"{r['status']}, val {last:.4f}, test {r['test_acc']:.4f} ({r['seconds']:.1f}s)",
                      flush=True)
            write(_frame(results, by_id, meta["keys"]), {**meta, "wall_s": time.time() - t0}, out)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if host is not None:
            host.stop()
    print(f"done in {time.time() - t0:.0f}s: {out} ({out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    from tfkd_search.errors import TfkdError

    try:
        main()
    except TfkdError as err:  # a bad spec, --set or dataset: the message, no traceback
        raise SystemExit(f"curves.py: {err}") from None
