"""CUDA paths: bf16 + channels_last + CUDA-graph steps, no host sync per step. Skipped without a GPU."""

from __future__ import annotations

import copy

import pytest
import torch

from tfkd_search import losses
from tfkd_search.batches import Batches
from tfkd_search.data import load_splits
from tfkd_search.models import build_model
from tfkd_search.runs import run_one
from tfkd_search.trainer import StepRunner, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DEV = torch.device("cuda")


def _loss(z, y, t=None):
    return losses.tfkd_reg_loss(z, y, tau=4.0, alpha=0.5, a=0.9)


def _setup(graphs: bool, model: torch.nn.Module):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, fused=True)
    return StepRunner(model, None, opt, _loss, DEV, bf16=False, graphs=graphs), opt


def test_graph_steps_match_eager_steps() -> None:
    torch.manual_seed(0)
    base = build_model("tiny_resnet", 10, 3).to(DEV)
    a, b, c = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    ra, _ = _setup(False, a)
    rb, _ = _setup(True, b)
    rc, _ = _setup(False, c)  # eager, but skips the last step: the size of one step's change
    g = torch.Generator(device="cpu").manual_seed(1)
    xs = [torch.randn(64, 3, 16, 16, generator=g).to(DEV) for _ in range(8)]
    ys = [torch.randint(0, 10, (64,), generator=g).to(DEV) for _ in range(8)]
    for i, (x, y) in enumerate(zip(xs, ys)):
        lr = 0.05 * (i + 1) / 8  # the schedule changes lr between replays
        ra(x, y, lr)
        rb(x, y, lr)
        if i < 7:
            rc(x, y, lr)
    assert rb.graph is not None, "the step was never captured"
    with torch.no_grad():
        va = torch.cat([p.flatten() for p in a.parameters()])
        vb = torch.cat([p.flatten() for p in b.parameters()])
        vc = torch.cat([p.flatten() for p in c.parameters()])
        # cuDNN may pick other algorithms in the two modes: allow rounding-level differences,
        # far below what one missing (or doubled, or wrong-lr) step changes
        assert (va - vb).norm() < 0.05 * (va - vc).norm(), ((va - vb).norm(), (va - vc).norm())
    assert torch.allclose(ra.sums, rb.sums, rtol=1e-3)


def test_epoch_loop_has_no_host_sync_per_step() -> None:
    data = load_splits("synthetic", None, val_fraction=0.0, synthetic_size=2048)
    model = build_model("tiny_cnn", 10, 3).to(DEV).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    runner = StepRunner(model, None, opt, _loss, DEV, bf16=True, graphs=True)
    batches = Batches(data.train_x, data.train_y, batch_size=128, device=DEV, info=data.info,
                      train=True, rotation=15, channels_last=True)
    for x, y in batches.epoch(torch.Generator().manual_seed(0)):  # warm-up + capture
        runner(x, y, 0.1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in batches.epoch(torch.Generator().manual_seed(1)):
            runner(x, y, 0.05)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(runner.sums).all()


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv2", "shufflenetv2", "googlenet",
                                   "densenet121", "resnext29_8x64d", "resnet50"])
def test_every_zoo_model_trains_with_graphs_bf16_channels_last(make_cfg, model) -> None:
    cfg = make_cfg({"device": "cuda", "data.dataset": "synthetic", "data.synthetic_size": 512,
                    "optim.batch_size": 64, "schedule.epochs": 2, "schedule.milestones": [1],
                    "loss.tau": 4.0, "loss.alpha": 0.5, "loss.a": 0.9}, method="tfkd_reg",
                   model=model)
    res = train(cfg)
    assert res.status == "completed" and res.epochs == 2
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in res.history)


def test_kd_teacher_runs_inside_the_graph(make_cfg, tmp_path) -> None:
    common = {"device": "cuda", "data.dataset": "synthetic", "data.synthetic_size": 512,
              "optim.batch_size": 64, "schedule.epochs": 2, "schedule.milestones": [1]}
    t = run_one(make_cfg(common, model="tiny_resnet"), tmp_path / "teacher")
    assert t.status == "completed"
    cfg = make_cfg({**common, "teacher": {"checkpoint": str(tmp_path / "teacher" / "checkpoint.pt")},
                    "loss.tau": 4.0, "loss.alpha": 0.9}, method="kd", model="tiny_cnn")
    res = train(cfg)
    assert res.status == "completed" and res.history[-1]["train_kl"] > 0


def test_out_of_memory_is_an_error_that_says_what_to_change(make_cfg) -> None:
    """Forced on the GPU: a process allowed ~1% of the card, a ResNet18 at batch 4096."""
    from tfkd_search.search.trial import TrialOutOfMemory, train_explaining_oom

    cfg = make_cfg({"device": "cuda", "model": "resnet18", "optim.batch_size": 4096,
                    "data": {"dataset": "synthetic", "synthetic_size": 8192}, "cuda_graphs": False})
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(0.01, DEV)
    try:
        with pytest.raises(TrialOutOfMemory, match="trial\\(s\\) per GPU: use fewer trials per GPU"):
            train_explaining_oom(train, cfg, 0.25)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, DEV)
        torch.cuda.empty_cache()


def _drain(host, key: str) -> list:
    from tfkd_search.packing import HostedEpoch

    events = []
    while True:
        events.append(host.next(key, timeout=300))
        if not isinstance(events[-1], HostedEpoch):
            return events


def test_packed_trials_run_on_their_own_streams_and_match_their_unpacked_quality(make_cfg) -> None:
    """Three ResNet18 trials in one host (graphs, bf16, channels_last), each on its own CUDA stream:
    all complete, and each reaches the accuracy it reaches alone (cuDNN is not bitwise
    deterministic, so: within a few points on an easy synthetic task)."""
    from tfkd_search.packing import HostedEnd, TrialHost

    cfgs = [make_cfg({"device": "cuda", "model": "resnet18", "schedule.epochs": 3,
                      "schedule.milestones": [2], "seed": s,
                      "data": {"dataset": "synthetic", "synthetic_size": 4096}}) for s in range(3)]
    host = TrialHost("cuda")
    try:
        for i, c in enumerate(cfgs):
            host.open(f"t{i}", c)
        first = {f"t{i}": host.next(f"t{i}", timeout=300) for i in range(3)}
        streams = [t.stream for t in host._trials.values()]
        packed = {k: [ev, *_drain(host, k)] for k, ev in first.items()}
    finally:
        host.stop()
    assert len(streams) == 3 and all(isinstance(s, torch.cuda.Stream) for s in streams)
    assert len({s.cuda_stream for s in streams}) == 3  # three distinct CUDA streams
    for i, c in enumerate(cfgs):
        end = packed[f"t{i}"][-1]
        assert isinstance(end, HostedEnd) and end.summary["status"] == "completed", end
        alone = train(c)
        assert abs(end.summary["last_val_acc"] - alone.last_val_acc) < 0.05


def test_packed_out_of_memory_fails_one_trial_and_the_others_go_on(make_cfg) -> None:
    """Forced: the host's process may use ~1% of the card; a ResNet18 at batch 4096 cannot fit, a
    tiny_cnn beside it trains to the end, and the trial's error says what to change."""
    from tfkd_search.packing import HostedEnd, HostedError, TrialHost
    from tfkd_search.search.trial import oom_advice

    big = make_cfg({"device": "cuda", "model": "resnet18", "optim.batch_size": 4096,
                    "data": {"dataset": "synthetic", "synthetic_size": 8192}, "cuda_graphs": False})
    small = make_cfg({"device": "cuda", "schedule.epochs": 3, "schedule.milestones": [2]})
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(0.01, DEV)
    host = TrialHost("cuda")
    try:
        host.open("big", big)
        host.open("small", small)
        err = host.next("big", timeout=300)
        rest = _drain(host, "small")
    finally:
        host.stop()
        torch.cuda.set_per_process_memory_fraction(1.0, DEV)
        torch.cuda.empty_cache()
    assert isinstance(err, HostedError) and err.out_of_memory, err
    assert "fewer trials per GPU" in oom_advice(big, 0.25, err.message)
    assert isinstance(rest[-1], HostedEnd) and rest[-1].summary["status"] == "completed"


def test_a_model_that_breaks_capture_goes_on_eagerly_with_the_same_steps() -> None:
    """A user model with a host sync in its forward (`.item()` deciding a branch) cannot be captured:
    the runner keeps why, drops the graph and trains eagerly from that step on, the same steps as a
    plain eager runner (tests/usermodels/byo_nets.py `syncs`)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "usermodels"))
    import byo_nets

    torch.manual_seed(0)
    base = byo_nets.syncs(10, in_channels=3).to(DEV)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    ra, _ = _setup(False, a)
    rb, _ = _setup(True, b)
    g = torch.Generator(device="cpu").manual_seed(1)
    for i in range(8):
        x = torch.randn(64, 3, 16, 16, generator=g).to(DEV)
        y = torch.randint(0, 10, (64,), generator=g).to(DEV)
        ra(x, y, 0.05)
        rb(x, y, 0.05)
    assert rb.graph is None and not rb.graphs, "the capture should have failed"
    assert rb.eager_reason and "could not be captured in a CUDA graph" in rb.eager_reason
    torch.cuda.synchronize()  # the context survived the failed capture
    with torch.no_grad():
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.allclose(pa, pb, atol=1e-4), (pa - pb).abs().max()


def test_a_run_with_a_model_that_breaks_capture_completes_and_says_why(make_cfg) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "usermodels"))
    cfg = make_cfg({"model": {"_target_": "byo_nets:syncs", "in_channels": 3},
                    "data.dataset": "synthetic", "schedule.epochs": 2}, device="cuda", threads=None)
    reports = []
    result = train(cfg, report=reports.append)
    assert result.status == "completed", result
    assert result.eager_reason and "could not be captured" in result.eager_reason
    assert [r.eager_reason is not None for r in reports] == [True, False]


def test_the_search_driver_learns_the_free_memory_without_a_cuda_context() -> None:
    """The driver's memory plan asks nvidia-smi (or a short-lived process): the driver itself never
    initialises CUDA, so it holds none of the card while the trials run."""
    import subprocess
    import sys

    code = ("import torch; from tfkd_search.data import visible_gpu; g = visible_gpu(); "
            "print(g[0], g[1] > 0, torch.cuda.is_initialized(), sep='|')")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert got.returncode == 0, got.stderr[-2000:]
    name, free, initialised = got.stdout.strip().splitlines()[-1].split("|")
    assert name == torch.cuda.get_device_name() and free == "True" and initialised == "False"
