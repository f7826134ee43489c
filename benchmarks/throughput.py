"""Training throughput of one trial and of trials packed on one GPU, side by side with a baseline.

Modes (same model, batch, loss, in one run, in this order; warm-up excluded, median of --repeats):
  classic   PIL images + torchvision transforms in DataLoader workers, fp32 (the usual CIFAR recipe)
  eager     ours: uint8 data resident on the device, crop/flip on the device, bf16 autocast on CUDA,
            channels_last on CUDA, fused SGD, loss parts summed on the device (no per-step sync)
  graph     ours + the whole training step captured in a CUDA graph (the trainer's default on CUDA)
  packedK   K processes of `graph` (or `eager` on CPU) sharing one device, as Ray's fractional GPUs
            run them (resources.gpu = 1/K); figure = all images / common wall time
  batch512  `graph` with batch 512 (a bigger batch instead of more trials)

Examples:
  python benchmarks/throughput.py --model resnet18 --batch 128 --packed 4         # on a GPU
  python benchmarks/throughput.py --small                                          # CPU smoke
It prints a table and writes JSON (default benchmarks/results/throughput-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from tfkd_search import losses  # noqa: E402
from tfkd_search.batches import Batches  # noqa: E402
from tfkd_search.data import DatasetInfo  # noqa: E402
from tfkd_search.models import build_model  # noqa: E402
from tfkd_search.trainer import StepRunner  # noqa: E402

MEAN, STD = (0.50708, 0.48655, 0.44092), (0.26733, 0.25644, 0.27615)


def make_data(n: int, classes: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def loss_fn(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None) -> losses.LossParts:
    return losses.tfkd_reg_loss(z, y, tau=4.0, alpha=0.5, a=0.9)


def time_loop(step, batches_iter, steps: int, warmup: int, repeats: int, batch: int,
              device: torch.device) -> list[float]:
    """images/s of `repeats` timings of `steps` steps each, after `warmup` steps."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step(*next(batches_iter))
    sync()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step(*next(batches_iter))
        sync()
        rates.append(steps * batch / (time.perf_counter() - t0))
    return rates


def endless(batches: Batches):
    epoch = 0
    while True:
        yield from batches.epoch(torch.Generator().manual_seed(epoch))
        epoch += 1


def setup_ours(args: argparse.Namespace, device: torch.device, graphs: bool, batch: int,
               seed: int = 0):
    """The trainer's own pieces: device-resident Batches and a StepRunner (graphs on CUDA)."""
    torch.manual_seed(seed)
    cuda = device.type == "cuda"
    info = DatasetInfo("bench", args.classes, 3, args.size, MEAN, STD, 4, True)
    x, y = make_data(args.images, args.classes, args.size)
    model = build_model(args.model, args.classes, 3).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                          **({"fused": True} if cuda else {"foreach": True}))
    runner = StepRunner(model, None, opt, loss_fn, device, bf16=cuda, graphs=graphs)
    batches = Batches(x, y, batch_size=batch, device=device, info=info, train=True,
                      channels_last=cuda, drop_last=True)
    return runner, endless(batches)


def run_ours(args: argparse.Namespace, device: torch.device, graphs: bool, batch: int) -> dict:
    runner, it = setup_ours(args, device, graphs, batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates = time_loop(lambda xb, yb: runner(xb, yb, 0.1), it, args.steps, args.warmup,
                      args.repeats, batch, device)
    loss = (runner.sums[0] / max(1, args.images)).item()
    return {"rates": rates, "finite": bool(loss == loss), **_memory(device)}


def _memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"mem_allocated_mib": None, "mem_reserved_mib": None}
    return {"mem_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "mem_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20}


class _PilDataset(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int) -> None:
        import torchvision.transforms as T

        self.x = x.permute(0, 2, 3, 1).numpy()
        self.y = y.tolist()
        self.tf = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.tf(Image.fromarray(self.x[i])), self.y[i]


def run_classic(args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    x, y = make_data(args.images, args.classes, args.size)
    loader = torch.utils.data.DataLoader(
        _PilDataset(x, y, args.size), batch_size=args.batch, shuffle=True, drop_last=True,
        num_workers=args.workers, pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0)
    model = build_model(args.model, args.classes, 3).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def batches():
        while True:
            for xb, yb in loader:
                yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

    def step(xb, yb):
        parts = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates = time_loop(step, batches(), args.steps, args.warmup, args.repeats, args.batch, device)
    return {"rates": rates, **_memory(device)}


def run_streams(args: argparse.Namespace, device: torch.device, k: int) -> dict:
    """K trials in ONE process, each with its own model, optimizer and CUDA graph, replayed on its
    own CUDA stream so that the GPU can overlap their kernels (separate processes only time-slice)."""
    runners, iters, streams = [], [], []
    torch.cuda.reset_peak_memory_stats(device)
    for i in range(k):
        runner, it = setup_ours(args, device, graphs=True, batch=args.batch, seed=i)
        runners.append(runner)
        iters.append(it)
        streams.append(torch.cuda.Stream(device))

    def step_all() -> None:
        for r, it, s in zip(runners, iters, streams):
            with torch.cuda.stream(s):
                r(*next(it), 0.1)

    for _ in range(max(args.warmup, 5)):
        step_all()
    torch.cuda.synchronize()
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step_all()
        torch.cuda.synchronize()
        rates.append(k * args.steps * args.batch / (time.perf_counter() - t0))
    mem = _memory(device)
    return {"rates": rates, "mem_allocated_mib": mem["mem_allocated_mib"] / k,
            "mem_reserved_mib": mem["mem_reserved_mib"] / k}


def run_packed(args: argparse.Namespace, k: int, mode: str) -> dict:
    """K worker processes of `mode`, started together; throughput over their common window."""
    ready = Path(os.environ.get("TMPDIR", "/tmp")) / f"tfkd-bench-{os.getpid()}-{k}"
    ready.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--worker", mode, "--ready-dir", str(ready), "--workers-total",
           str(k), *_passthrough(args)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(k)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    start = min(o["start"] for o in outs)
    end = max(o["end"] for o in outs)
    images = sum(o["images"] for o in outs)
    return {"rates": [images / (end - start)], "per_process": [o["rate"] for o in outs],
            "mem_allocated_mib": max((o["mem_allocated_mib"] or 0) for o in outs) or None,
            "mem_reserved_mib": max((o["mem_reserved_mib"] or 0) for o in outs) or None}


def _passthrough(args: argparse.Namespace) -> list[str]:
    return ["--model", args.model, "--classes", str(args.classes), "--batch", str(args.batch),
            "--images", str(args.images), "--size", str(args.size), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--device", args.device]


def worker(args: argparse.Namespace) -> None:
    device = resolve(args.device)
    torch.set_num_threads(1)
    graphs = args.worker == "graph"

    # warm up fully, then wait until every worker is ready so that the timed windows overlap
    runner, it = setup_ours(args, device, graphs, args.batch)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(max(args.warmup, 5)):
        runner(*next(it), 0.1)
    sync()
    (Path(args.ready_dir) / str(os.getpid())).touch()
    while len(list(Path(args.ready_dir).iterdir())) < args.workers_total:
        time.sleep(0.01)
    steps = args.steps * 3
    start = time.time()
    for _ in range(steps):
        runner(*next(it), 0.1)
    sync()
    end = time.time()
    res = {"start": start, "end": end, "images": steps * args.batch,
           "rate": steps * args.batch / (end - start), **_memory(device)}
    print(json.dumps(res))


def resolve(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=10240, help="synthetic dataset size")
    p.add_argument("--steps", type=int, default=40, help="steps per timing")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the classic pipeline")
    p.add_argument("--packed", type=int, nargs="*", default=[4], help="K values for packed runs")
    p.add_argument("--streams", type=int, nargs="*", default=[], help="K values for in-process "
                   "multi-stream packing (CUDA only)")
    p.add_argument("--skip-classic-repeat", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--big-batch", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="output JSON path")
    p.add_argument("--small", action="store_true", help="CPU smoke settings (CI)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ready-dir", help=argparse.SUPPRESS)
    p.add_argument("--workers-total", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.small:
        args.model, args.classes, args.batch, args.images = "tiny_cnn", 10, 32, 512
        args.steps, args.warmup, args.repeats, args.workers = 4, 2, 2, 1
        args.packed, args.big_batch = [2], 64
    device = resolve(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device: {name}; torch {torch.__version__}; model {args.model}, {args.classes} classes, "
          f"batch {args.batch}, {args.size}x{args.size}, Tf-KD reg loss", flush=True)
    rows = []

    def add(label: str, res: dict) -> None:
        res["images_per_s"] = statistics.median(res["rates"])
        res["mode"] = label
        rows.append(res)
        print(f"  {label:<34} {res['images_per_s']:>10.0f} images/s", flush=True)

    add(f"classic (PIL+{args.workers} workers, fp32)", run_classic(args, device))
    add("ours eager", run_ours(args, device, graphs=False, batch=args.batch))
    if cuda:
        add("ours graph", run_ours(args, device, graphs=True, batch=args.batch))
    for k in args.packed:
        add(f"ours {'graph' if cuda else 'eager'} x{k} processes (sum)",
            run_packed(args, k, "graph" if cuda else "eager"))
    for k in (args.streams if cuda else []):
        add(f"ours graph x{k} streams, 1 process (sum)", run_streams(args, device, k))
    big = run_ours(args, device, graphs=cuda, batch=args.big_batch)
    add(f"ours {'graph' if cuda else 'eager'} batch {args.big_batch}", big)

    base = rows[0]["images_per_s"]
    for r in rows:
        r["vs_classic"] = r["images_per_s"] / base
    single = max(r["images_per_s"] for r in rows if r["mode"] in ("ours eager", "ours graph"))
    packed = max([r["images_per_s"] for r in rows
                  if "processes" in r["mode"] or "streams" in r["mode"]] or [0.0])
    targets = {"one_trial_2x_classic": single >= 2 * base,
               "packed_gpu_4x_classic": packed >= 4 * base}
    print(f"\n{'mode':<36}{'images/s':>10}{'vs classic':>12}{'GPU MiB/trial':>15}")
    for r in rows:
        mem = f"{r['mem_reserved_mib']:.0f}" if r.get("mem_reserved_mib") else "-"
        print(f"{r['mode']:<36}{r['images_per_s']:>10.0f}{r['vs_classic']:>11.2f}x{mem:>15}")
    print(f"targets (batch {args.batch}): one trial >= 2x classic: {targets['one_trial_2x_classic']}; "
          f"packed trials >= 4x classic: {targets['packed_gpu_4x_classic']}")
    out = Path(args.json) if args.json else (
        ROOT / "benchmarks" / "results" /
        f"throughput-{name.replace(' ', '_').replace('/', '_')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "torch": torch.__version__, "model": args.model,
                               "batch": args.batch, "classes": args.classes, "rows": rows,
                               "targets": targets, "argv": sys.argv[1:]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
