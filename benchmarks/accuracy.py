"""Standard accuracy of a run config at several precisions, side by side (issue #10, item 7).

    python benchmarks/accuracy.py benchmarks/acc_resnet18_cifar10.yaml --data-dir /tmp/c10 \
        --precisions fp32 bf16 --json benchmarks/results/accuracy-cifar10-resnet18-H200.json

The runs are the trainer's own (`tfkd_search.trainer`), one per precision, with the config's first seed.
On a GPU they are packed in this one process (`--pack`, default: all of them), each on its own CUDA
stream, as the search packs its trials; `--pack 0` trains them one after the other. Every epoch is
printed as it ends; the end is a table of stand-in test accuracy per precision, checked against
`--target` (the least accuracy) and `--agree` (the largest gap between precisions), and a JSON file.
The checks are reported, not enforced: the exit status is 0 whenever every run finished.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfkd_search.config import load_run_config  # noqa: E402
from tfkd_search.errors import TfkdError  # noqa: E402
from tfkd_search.overrides import parse_set  # noqa: E402

_PRINT = threading.Lock()


def _say(text: str) -> None:
    with _PRINT:
        print(text, flush=True)


def run_one(cfg: Any, host: Any, data: Any) -> dict[str, Any]:
    """Train `cfg` (on `host` when given); its epochs as printed rows, its test accuracy and timings."""
    from tfkd_search.trainer import train

    tag, rows = cfg.precision, []

    def report(ep: Any) -> None:
        m = dict(ep.metrics)
        rows.append({"epoch": ep.epoch, **m})
        val = f"  val {m['val_acc']:.4f}" if math.isfinite(m.get("val_acc", math.nan)) else ""
        _say(f"[{tag}] epoch {ep.epoch}/{ep.epochs}  loss {m.get('train_loss', math.nan):.4f}{val}  "
             f"lr {m.get('lr', math.nan):.4g}  {m.get('images_per_s', math.nan):,.0f} img/s")

    t0 = time.time()
    if host is not None:
        summary = host.train(f"accuracy-{tag}", cfg, report=report)
    else:
        summary = train(cfg, data=data, report=report).summary()
    seconds = time.time() - t0
    ips = [r["images_per_s"] for r in rows if math.isfinite(r.get("images_per_s", math.nan))]
    return {"precision": tag, "status": summary["status"], "test_acc": summary.get("test_acc"),
            "epochs": len(rows), "seconds": round(seconds, 1),
            "images_per_s": round(sorted(ips)[len(ips) // 2]) if ips else None, "history": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a run config YAML")
    p.add_argument("--data-dir", help="set data.data_dir")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--pack", type=int, default=None,
                   help="runs packed in this process (default: all on a GPU, 0 on the CPU)")
    p.add_argument("--target", type=float, default=0.885, help="least stand-in test accuracy")
    p.add_argument("--agree", type=float, default=0.003, help="largest accuracy gap between precisions")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    import torch

    overrides = parse_set(args.overrides)
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    cfgs = [load_run_config(args.config, {**overrides, "precision": prec}) for prec in args.precisions]
    on_gpu = torch.cuda.is_available() and cfgs[0].device in ("auto", "cuda")
    pack = args.pack if args.pack is not None else (len(cfgs) if on_gpu else 0)
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    _say(f"{cfgs[0].name}: {cfgs[0].model} with {cfgs[0].method}, {cfgs[0].schedule.trained_epochs} epochs, "
         f"seed {cfgs[0].seed}, precisions {args.precisions}, "
         f"{f'{pack} packed in one process' if pack else 'one after the other'} on {device}")
    from tfkd_search.trainer import load_run_data

    data = load_run_data(cfgs[0])  # a missing dataset fails here, in one message
    host = None
    if pack:
        from tfkd_search.packing import TrialHost

        host = TrialHost(cfgs[0].device, max_trials=pack)
        host.preload(cfgs[0], data)  # the packed runs share these splits
    t0 = time.time()
    try:
        with ThreadPoolExecutor(max_workers=max(1, pack)) as pool:
            results = list(pool.map(lambda c: run_one(c, host, data), cfgs))
    finally:
        if host is not None:
            host.stop()
    wall = time.time() - t0

    accs = {r["precision"]: r["test_acc"] for r in results}
    finished = all(a is not None for a in accs.values())
    gap = (max(accs.values()) - min(accs.values())) if finished and len(accs) > 1 else None
    checks = {"target": args.target, "agree": args.agree,
              "meets_target": {k: (a is not None and a >= args.target) for k, a in accs.items()},
              "gap": gap, "agrees": (gap <= args.agree) if gap is not None else None}
    print(f"\n{'precision':<10} {'test acc':>9} {'epochs':>7} {'seconds':>8} {'img/s':>8}")
    for r in results:
        acc = f"{100 * r['test_acc']:.2f}%" if r["test_acc"] is not None else "-"
        ips = f"{r['images_per_s']:,}" if r["images_per_s"] else "-"
        print(f"{r['precision']:<10} {acc:>9} {r['epochs']:>7} {r['seconds']:>8.0f} {ips:>8}")
    print(f"target >= {100 * args.target:.1f}%: "
          + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in checks["meets_target"].items())
          + (f"; gap {100 * gap:.2f} points (<= {100 * args.agree:.1f}): {'yes' if checks['agrees'] else 'NO'}"
             if gap is not None else ""))
    print(f"wall {wall:.0f} s on {device}")
    if args.json:
        out = {"config": args.config, "device": device, "packed": pack, "wall_s": round(wall, 1),
               "overrides": args.overrides, "runs": results, "checks": checks}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if finished else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TfkdError as err:
        raise SystemExit(f"accuracy.py: {err}") from None
