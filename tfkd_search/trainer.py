"""The Tf-KD trainer: `train(cfg) -> TrainResult`, a function usable from Python, the CLI and Ray Tune.

It never reads argv or the environment, never imports Ray or MLflow and writes no files: everything
observable goes out through the `report` callback (which may write a run folder: `runs.RunWriter`) and
the return value.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .config import RunConfig, config_to_dict
from .batches import Batches
from .data import DataSplits, load_splits
from .errors import CheckpointError, EnvironmentProblem
from .io import CHECKPOINT_FORMAT, load_weights
from .modelref import model_label, same_architecture
from .models import build_model
from .registry import METHOD_REGISTRY
from .stats import pack_correct

METRICS = ("train_loss", "train_ce", "train_kl", "val_acc", "val_loss", "lr", "epoch_seconds",
           "images_per_s")


@dataclass(frozen=True)
class EpochReport:
    """What the trainer tells its caller after every epoch."""

    epoch: int  # epochs completed so far (1-based)
    epochs: int  # epochs this run will train
    metrics: Mapping[str, float]
    status: str  # "running" | "completed" | "diverged"
    make_checkpoint: Callable[[], dict[str, Any]]  # builds the checkpoint dict only when called
    # set on the first report after the step fell back from its CUDA graph to eager: why
    eager_reason: str | None = None
    # on the last epoch's report: which validation images the model got right (stats.pack_correct)
    val_correct: str | None = None


@dataclass
class TrainResult:
    status: str  # "completed" | "diverged"
    epochs: int
    best_val_acc: float
    last_val_acc: float
    test_acc: float | None
    test_loss: float | None
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    run_dir: str | None = None
    eager_reason: str | None = None  # why the step ran eagerly although CUDA graphs were on
    val_correct: str | None = None  # the last epoch's per-image validation results (stats.pack_correct)
    test_correct: str | None = None  # the same on the test split, when it was evaluated

    def summary(self) -> dict[str, Any]:
        """The result as strict JSON values: a missing number is None, never NaN or -1."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "history":
                continue
            if isinstance(v, float) and (not math.isfinite(v) or (k.endswith("_acc") and v < 0)):
                v = None
            out[k] = v
        return out


Reporter = Callable[[EpochReport], None]
StepHook = Callable[[int, int], None]  # (step done, steps in the epoch), called after every step
Event = tuple[int, int] | EpochReport  # what `training()` yields


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EnvironmentProblem("device: 'cuda' was asked for but no CUDA GPU is visible; use device: auto "
                          "or cpu (--set device=cpu)")
    return torch.device(name)


def lr_at(cfg: RunConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate of a step: linear warm-up per step, then step decay at the milestones.

    The paper's recipe: base = 0.1 * batch/128, 1 warm-up epoch, x0.2 at 60/120/160 of 200 epochs.
    `schedule.mode: scale` shrinks the milestones to the trained budget instead of truncating.
    """
    s = cfg.schedule
    base = cfg.optim.lr * cfg.optim.batch_size / cfg.optim.lr_batch
    if epoch < s.warmup_epochs:
        return base * (epoch * steps_per_epoch + step + 1) / (s.warmup_epochs * steps_per_epoch)
    milestones = s.milestones
    if s.mode == "scale":
        milestones = tuple(max(1, round(m * s.trained_epochs / s.epochs)) for m in milestones)
    return base * s.gamma ** sum(epoch >= m for m in milestones)


def load_run_data(cfg: RunConfig) -> DataSplits:
    """The splits `cfg.data` describes (the one place a run's data is loaded from its config)."""
    d = cfg.data
    return load_splits(d.dataset, d.data_dir, val_fraction=d.val_fraction, split_seed=d.split_seed,
                       with_test=cfg.evaluate_test, download=d.download,
                       synthetic_size=d.synthetic_size, image_size=d.image_size,
                       num_classes=d.num_classes, cache_dir=d.cache_dir)


def load_teacher(cfg: RunConfig, in_channels: int, device: torch.device,
                 num_classes: int | None = None) -> nn.Module:
    """Build the teacher from its weights; eval mode, no gradients.

    `teacher.checkpoint` is a tfkd-search checkpoint (which names its architecture) or a plain
    state_dict file (then `teacher.model` names the architecture; for tfkd_self it defaults to the
    student's `model`). `num_classes`: the dataset's, when the caller has it (else `cfg.num_classes`,
    which reads an imagefolder/npz dataset's listing)."""
    assert cfg.teacher is not None
    classes = cfg.num_classes if num_classes is None else num_classes
    path = cfg.teacher.checkpoint
    weights, state = load_weights(path, "teacher checkpoint")
    arch = cfg.teacher.model if cfg.teacher.model is not None else (
        state.get("model_name") if state is not None else
        cfg.model if METHOD_REGISTRY.get(cfg.method).same_architecture else None)
    if arch is None:
        raise CheckpointError(f"teacher checkpoint {path}: holds plain weights (a state_dict), which do "
                              f"not say what architecture they belong to; set teacher.model (a zoo name "
                              f"or a reference such as {{_target_: 'mynets:build'}})")
    if state is not None:
        _check_teacher_checkpoint(cfg, state, in_channels, classes)
    if cfg.method == "tfkd_self" and not same_architecture(arch, cfg.model):
        raise CheckpointError(f"teacher checkpoint {path}: holds a {model_label(arch)!r} but tfkd_self "
                              f"needs the student's own architecture {model_label(cfg.model)!r}; use "
                              f"method: kd for another architecture")
    model = build_model(arch, classes, in_channels)
    misfit = weights_misfit(model, weights)
    if misfit:
        raise CheckpointError(f"teacher checkpoint {path}: its weights do not fit "
                              f"{model_label(arch)!r} ({misfit}); set teacher.model to the "
                              f"architecture they were trained as (with the same keyword arguments)")
    model.load_state_dict(weights)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _check_teacher_checkpoint(cfg: RunConfig, state: Mapping[str, Any], in_channels: int,
                              classes: int) -> None:
    """A tfkd-search checkpoint says what it holds: the architecture, classes and channels must fit."""
    assert cfg.teacher is not None
    path, held = cfg.teacher.checkpoint, state.get("model_name")
    if cfg.teacher.model is not None and held and not same_architecture(held, cfg.teacher.model):
        raise CheckpointError(f"teacher checkpoint {path}: holds a {model_label(held)!r} but "
                              f"teacher.model is {model_label(cfg.teacher.model)!r}; set teacher.model: "
                              f"{model_label(held)} or leave it out (it is read from the checkpoint)")
    if state.get("num_classes") != classes:
        raise CheckpointError(f"teacher checkpoint {path}: trained for {state.get('num_classes')} "
                              f"classes but {cfg.data.dataset} has {classes}; use a teacher "
                              f"trained on the same dataset")
    if state.get("in_channels", in_channels) != in_channels:
        raise CheckpointError(f"teacher checkpoint {path}: trained on {state.get('in_channels')}-channel "
                              f"images ({state.get('dataset')}) but {cfg.data.dataset} has {in_channels}; "
                              f"use a teacher trained on the same dataset")


def weights_misfit(model: nn.Module, weights: Mapping[str, torch.Tensor], shown: int = 3) -> str:
    """Why `weights` do not load into `model` (the first missing and unexpected keys, the first shape
    mismatches), or '' when they fit exactly."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in weights and tuple(weights[k].shape) != tuple(v.shape)]

    def some(keys: list[str], quote: bool = True) -> str:
        head = ", ".join(repr(k) if quote else k for k in keys[:shown])
        return head + (f" and {len(keys) - shown} more" if len(keys) > shown else "")

    parts = ([f"missing keys: {some(missing)}"] if missing else []) + (
        [f"unexpected keys: {some(unexpected)}"] if unexpected else []) + (
        [f"shapes differ (file vs model): {some(shapes, quote=False)}"] if shapes else [])
    return "; ".join(parts)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, autocast: Any,
             per_example: list[torch.Tensor] | None = None) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy over a fixed-order pass; one host sync at the end.
    `per_example`: a list that receives each batch's right/wrong vector, in the pass's order."""
    model.eval()
    correct = torch.zeros((), device=batches.device)
    loss_sum = torch.zeros((), device=batches.device)
    for x, y in batches.epoch(None):
        with autocast():
            z = model(x)
        z = z.float()
        hit = z.argmax(1) == y
        correct += hit.sum()
        loss_sum += F.cross_entropy(z, y, reduction="sum")
        if per_example is not None:
            per_example.append(hit)
    n = max(batches.num_samples, 1)
    return correct.item() / n, loss_sum.item() / n


def evaluate_per_image(model: nn.Module, batches: Batches, autocast: Any
                       ) -> tuple[float, float, str | None]:
    """`evaluate`, and which images the model got right (`stats.pack_correct`; None for no images)."""
    hits: list[torch.Tensor] = []
    acc, loss = evaluate(model, batches, autocast, hits)
    return acc, loss, pack_correct(torch.cat(hits).tolist()) if hits else None


class StepRunner:
    """One optimisation step: student (and teacher) forward, loss, backward, SGD update.

    A batch-128 step of a CIFAR ResNet is bound by kernel launches, not arithmetic. On CUDA the whole
    step is therefore captured once in a CUDA graph (after three warm-up steps on a side stream, as
    PyTorch's whole-network capture requires) and replayed for every full batch: one launch instead
    of hundreds. The learning rate lives in a device tensor that the fused SGD kernel reads, so the
    schedule changes it without re-capturing. A batch of another shape (the last, partial one) runs
    eagerly on the same parameters and optimizer state. Loss parts are summed on the device; the
    caller reads them once per epoch (no host sync per step).

    A model that cannot be captured (a host sync such as `.item()` or a data-dependent branch in its
    forward, an unsupported op) does not fail its run: the capture error is kept in `eager_reason`
    and every step from then on runs eagerly (`_capture_or_eager`).
    """

    WARMUP = 3

    def __init__(self, model: nn.Module, teacher: nn.Module | None, opt: torch.optim.Optimizer,
                 loss_fn: Callable[..., losses.LossParts], device: torch.device, bf16: bool,
                 graphs: bool) -> None:
        self.model, self.teacher, self.opt, self.loss_fn = model, teacher, opt, loss_fn
        self.device, self.bf16, self.graphs = device, bf16, graphs
        self.sums = torch.zeros(3, device=device)
        self.graph: Any = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.warm = 0
        self.eager_reason: str | None = None  # set when a capture failed and the steps went eager
        if graphs:
            lr0 = float(opt.param_groups[0]["lr"])
            self.lr = torch.tensor(lr0, device=device)
            for g in opt.param_groups:
                g["lr"] = self.lr

    def autocast(self) -> Any:
        if not self.bf16:
            return contextlib.nullcontext()
        # the autocast weight cache must be off inside a captured graph (PyTorch CUDA graph docs)
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              cache_enabled=not self.graphs)

    def _body(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.autocast():
            z = self.model(x)
            t = self.teacher(x) if self.teacher is not None else None
        parts = self.loss_fn(z, y, t)
        parts.total.backward()
        self.opt.step()
        self.sums += torch.stack([parts.total, parts.ce, parts.kl]).detach() * y.shape[0]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        if not self.graphs:
            for g in self.opt.param_groups:
                g["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            self._body(x, y)
            return
        self.lr.fill_(lr)
        if self.graph is not None and self.static is not None and x.shape == self.static[0].shape:
            self.static[0].copy_(x)
            self.static[1].copy_(y)
            self.graph.replay()
            return
        if self.graph is None and self.warm >= self.WARMUP and x.shape[0] > 1:
            self._capture_or_eager(x, y, lr)
            return
        with self._side_stream():
            self.opt.zero_grad(set_to_none=True)
            self._body(x, y)
        self.warm += 1

    @contextlib.contextmanager
    def _side_stream(self) -> Any:
        """Warm-up steps run on a side stream, as whole-network capture requires (CUDA only)."""
        if self.device.type != "cuda":
            yield
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _capture_or_eager(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        """Capture the step (and run it for this batch); if the model cannot be captured, keep the
        reason, drop the graph and run this and every later step eagerly."""
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        try:
            self._capture(x, y)
        except Exception as exc:  # noqa: BLE001 - any capture failure: the run goes on eagerly
            if stream is not None:  # a failed capture can leave its capture stream current
                torch.cuda.set_stream(stream)
                torch.cuda.synchronize(self.device)  # a poisoned context raises here: the run fails
            self.graph, self.static, self.graphs = None, None, False
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            self.eager_reason = (f"the training step could not be captured in a CUDA graph "
                                 f"({type(exc).__name__}: {first}); running eagerly (cuda_graphs: "
                                 f"false skips the attempt)")
            self(x, y, lr)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.static = (x.clone(), y.clone())
        self.opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._body(*self.static)
        self.graph = graph
        graph.replay()  # capturing records the step without running it: run it for this batch


def wants_channels_last(setting: bool | None, use_cuda: bool, model: nn.Module) -> bool:
    """`channels_last` (null = auto): it speeds up convolutions and is defined for 4-D tensors only,
    so auto means CUDA and a model with 4-D (convolution) weights; a model without them (an MLP, a
    transformer on patches) keeps the plain layout."""
    if setting is not None:
        return setting
    return use_cuda and any(p.dim() == 4 for p in model.parameters())


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One generator per (seed, epoch): shuffling and augmentation are identical after a resume.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train(cfg: RunConfig, *, data: DataSplits | None = None, report: Reporter | None = None,
          resume: Mapping[str, Any] | None = None, on_step: StepHook | None = None) -> TrainResult:
    """Train one student as `cfg` describes.

    Args:
        cfg: the validated run config.
        data: pre-loaded splits (default: loaded from `cfg.data`).
        report: called after every epoch with an `EpochReport` (its `make_checkpoint()` builds the
            checkpoint dict only when called).
        resume: a checkpoint dict to continue from (`io.load_checkpoint`).
        on_step: called after every optimisation step with (step, steps per epoch), for progress.

    A NaN/inf training loss ends the run with status "diverged" (reported, not raised).
    """
    run = training(cfg, data=data, resume=resume)
    while True:
        try:
            event = next(run)
        except StopIteration as end:
            return end.value
        if isinstance(event, EpochReport):
            if report is not None:
                report(event)
        elif on_step is not None:
            on_step(*event)


def training(cfg: RunConfig, *, data: DataSplits | None = None,
             resume: Mapping[str, Any] | None = None) -> Generator[Event, None, TrainResult]:
    """`train()` as a generator that yields after every optimisation step and every epoch.

    It yields `(step, steps per epoch)` after each step and an `EpochReport` after each epoch, and
    returns the `TrainResult`. `train()` drives it alone; `packing.TrialHost` interleaves several of
    them step by step on one GPU, each on its own CUDA stream (see there). All setup happens at the
    first `next()`, so a host builds every trial on its own thread.
    """
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    use_cuda = device.type == "cuda"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and use_cuda)
    if data is None:
        data = load_run_data(cfg)
    info = data.info
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, info.num_classes, info.in_channels).to(device)
    channels_last = wants_channels_last(cfg.channels_last, use_cuda, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    teacher = (load_teacher(cfg, info.in_channels, device, info.num_classes)
               if METHOD_REGISTRY.get(cfg.method).needs_teacher else None)
    if teacher is not None and channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov,
                          **({"fused": True} if use_cuda else {"foreach": True}))
    if use_cuda:
        torch.backends.cudnn.benchmark = True
    loss_fn = losses.loss_fn_for(cfg)

    common = dict(device=device, info=info, channels_last=channels_last)
    train_b = Batches(data.train_x, data.train_y, batch_size=cfg.optim.batch_size, train=True,
                      crop_padding=cfg.data.crop_padding, flip=cfg.data.flip,
                      rotation=cfg.data.rotation, **common)
    eval_bs = max(256, cfg.optim.batch_size)
    val_b = (Batches(data.val_x, data.val_y, batch_size=eval_bs, train=False, **common)
             if data.val_x is not None and len(data.val_x) else None)
    test_b = (Batches(data.test_x, data.test_y, batch_size=eval_bs, train=False, **common)
              if cfg.evaluate_test and data.test_x is not None else None)

    def autocast() -> Any:
        if bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    history: list[dict[str, float]] = []
    start_epoch, best_val = 0, float("nan")
    state_in = resume
    if state_in is not None:
        _check_resumable(state_in, cfg, info.num_classes)
        model.load_state_dict(state_in["model"])
        opt.load_state_dict(state_in["optimizer"])
        torch.set_rng_state(state_in["rng"])
        if use_cuda and state_in.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state_in["cuda_rng"])
        start_epoch = int(state_in["epoch"])
        best_val = float(state_in.get("best_val_acc", float("nan")))
        best_val = float("nan") if best_val < 0 else best_val  # checkpoints of older versions
        history = [dict(h) for h in state_in.get("history", [])]

    epochs = cfg.schedule.trained_epochs
    steps = len(train_b)
    status = "completed" if start_epoch >= epochs else "running"
    val_correct: str | None = None

    def make_checkpoint(epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "model_name": cfg.model, "num_classes": info.num_classes,
            "in_channels": info.in_channels, "dataset": info.name, "config": config_to_dict(cfg),
            "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if use_cuda else None,
            "best_val_acc": best_val, "history": [dict(h) for h in history],
        }

    graphs = cfg.cuda_graphs if cfg.cuda_graphs is not None else use_cuda
    if graphs and not use_cuda:
        raise EnvironmentProblem("cuda_graphs: true needs a CUDA device; set cuda_graphs: null or false")
    runner = StepRunner(model, teacher, opt, loss_fn, device, bf16, graphs)
    told = False  # whether an epoch report said why the step went eager
    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        runner.sums.zero_()
        gen = _epoch_generator(cfg.seed, epoch)
        lr = 0.0
        for step, (x, y) in enumerate(train_b.epoch(gen)):
            lr = lr_at(cfg, epoch, step, steps)
            runner(x, y, lr)
            yield step + 1, steps
        sums = runner.sums
        tr = (sums / max(train_b.num_samples, 1)).tolist()  # the epoch's one host sync
        train_s = time.perf_counter() - t0
        diverged = not all(math.isfinite(v) for v in tr)
        if diverged:
            val_acc, val_loss = 0.0, float("nan")
        elif val_b is not None and epoch + 1 == epochs:  # which images it got right: the answer's intervals
            val_acc, val_loss, val_correct = evaluate_per_image(model, val_b, autocast)
        elif val_b is not None:
            val_acc, val_loss = evaluate(model, val_b, autocast)
        else:
            val_acc, val_loss = float("nan"), float("nan")
        row = {"epoch": float(epoch + 1), "train_loss": tr[0], "train_ce": tr[1], "train_kl": tr[2],
               "val_acc": val_acc, "val_loss": val_loss, "lr": lr,
               "epoch_seconds": time.perf_counter() - t0,
               "images_per_s": train_b.num_samples / max(train_s, 1e-9)}
        history.append(row)
        if not diverged and not math.isnan(val_acc):
            best_val = val_acc if math.isnan(best_val) else max(best_val, val_acc)
        status = "diverged" if diverged else ("completed" if epoch + 1 == epochs else "running")
        done = epoch + 1
        news = runner.eager_reason if runner.eager_reason and not told else None
        told = told or news is not None
        yield EpochReport(epoch=done, epochs=epochs, metrics=row, status=status,
                          make_checkpoint=lambda d=done: make_checkpoint(d), eager_reason=news,
                          val_correct=val_correct)
        if diverged:
            break

    test_acc = test_loss = test_correct = None
    if test_b is not None and status == "completed":
        test_acc, test_loss, test_correct = evaluate_per_image(model, test_b, autocast)
    last_val = history[-1]["val_acc"] if history else float("nan")
    result = TrainResult(status=status, epochs=len(history), best_val_acc=best_val,
                         last_val_acc=last_val, test_acc=test_acc, test_loss=test_loss,
                         seconds=time.perf_counter() - t_start, history=history,
                         eager_reason=runner.eager_reason, val_correct=val_correct,
                         test_correct=test_correct)
    return result


def _check_resumable(state: Mapping[str, Any], cfg: RunConfig, num_classes: int) -> None:
    if state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise CheckpointError("resume checkpoint: not a tfkd-search checkpoint")
    if state.get("model_name") != cfg.model or state.get("num_classes") != num_classes or (
            state.get("dataset") not in (None, cfg.data.dataset)):
        raise CheckpointError(
            f"resume checkpoint holds a {model_label(state.get('model_name'))!r} trained on "
            f"{state.get('dataset')} ({state.get('num_classes')} classes), but this run is a "
            f"{model_label(cfg.model)!r} on "
            f"{cfg.data.dataset} ({num_classes}); use a fresh run folder")
