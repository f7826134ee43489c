"""What early stopping saves and what synchronous rungs cost: a full grid without early stopping, the
same grid with synchronous successive halving (the default) and with asynchronous ASHA (digits, CPU).

Prints wall time, trial-epochs spent, the exported winner and its score, plus Ray's overhead per
trial (time a trial's actor spends outside training epochs, and scheduling time).
  python benchmarks/search_efficiency.py            # the quickstart grid (12 trials x 12 epochs)
  python benchmarks/search_efficiency.py --small    # CI smoke: 4 trials x 3 epochs
Writes JSON (default benchmarks/results/search_efficiency-cpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from tfkd_search.runfolder import RunFolder  # noqa: E402
from tfkd_search.search import RayOptions, init_ray, run_search, shutdown  # noqa: E402
from tfkd_search.spaces import load_space  # noqa: E402


VARIANTS = {  # label -> scheduler overrides
    "full grid": {"search.scheduler.kind": "none"},
    "sync halving": {"search.scheduler.kind": "asha", "search.scheduler.synchronous": True},
    "async ASHA": {"search.scheduler.kind": "asha", "search.scheduler.synchronous": False},
}


def one(space_path: Path, label: str, storage: Path, overrides: dict) -> dict:
    space = load_space(space_path, {**overrides, **VARIANTS[label]})
    t0 = time.time()
    name = "eff-" + label.replace(" ", "-")
    out = run_search(space, storage=str(storage), name=name, printer=lambda m: None)
    wall = time.time() - t0
    t = out.trials
    hist = pd.read_parquet(out.run_dir / "history.parquet")
    train_s = hist.groupby("trial_id")["epoch_seconds"].sum()
    per_trial = t.set_index("trial_id")["wall_seconds"]
    actor_overhead = float((per_trial - train_s.reindex(per_trial.index).fillna(0)).mean())
    conc = min(len(t), max(1, int((os.cpu_count() or 1) // space.spec.search.resources.cpu)))
    folder = RunFolder(out.run_dir)
    best = folder.ranking().best(t)
    return {"search": label, "wall_s": wall, "trials": len(t),
            "trial_epochs": int(t["epochs"].sum()), "best_val_acc": float(t["best_val_acc"].max()),
            "winner": {k: getattr(best[k], "item", lambda: best[k])() for k in space.params},
            "winner_score": float(best["score"]),
            "stopped_early": int((t["status"] == "stopped_early").sum()),
            "actor_overhead_s_per_trial": actor_overhead,
            "scheduling_overhead_s_per_trial": max(0.0, wall * conc / len(t) - per_trial.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "search_spaces" / "quickstart.yaml"))
    p.add_argument("--small", action="store_true")
    p.add_argument("--json")
    args = p.parse_args()
    overrides = {}
    if args.small:
        overrides = {"search.params": {"loss.tau": {"kind": "grid", "values": [1.0, 4.0]},
                                       "loss.alpha": {"kind": "grid", "values": [0.3, 0.9]}},
                     "schedule.epochs": 3, "schedule.milestones": [2],
                     "search.scheduler.grace_period": 1}
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfkd-eff-") as tmp:
        try:
            init_ray(RayOptions(), 0, lambda m: None)  # start Ray first: not a per-trial cost
            for label in VARIANTS:
                rows.append(one(Path(args.space), label, Path(tmp), overrides))
                print(f"  {label}: done in {rows[-1]['wall_s']:.1f} s", flush=True)
        finally:
            shutdown()
    full = rows[0]
    print(f"\n{'search':<16}{'wall s':>8}{'trial-epochs':>14}{'score':>8}{'stopped':>9}  winner")
    for r in rows:
        print(f"{r['search']:<16}{r['wall_s']:>8.1f}{r['trial_epochs']:>14}{r['winner_score']:>8.4f}"
              f"{r['stopped_early']:>9}  {r['winner']}")
    for r in rows[1:]:
        print(f"{r['search']}: {r['trial_epochs'] / full['trial_epochs']:.0%} of the trial-epochs, "
              f"{r['wall_s'] / full['wall_s']:.0%} of the wall time")
    print(f"Ray overhead per trial: {full['actor_overhead_s_per_trial']:.2f} s in the trial actor "
          f"outside training epochs (start-up, data, reporting), "
          f"{full['scheduling_overhead_s_per_trial']:.2f} s scheduling")
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / "search_efficiency-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "cpus": os.cpu_count(), "small": args.small}, indent=2,
                              default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
