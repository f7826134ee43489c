"""Model checks before anything starts: every model a config names by reference imports, builds, and
maps a batch of the dataset's shape to `(N, num_classes)` logits in train and eval mode.

`tfkd-search validate`, `--dry-run`, the search (before Ray starts) and `train` (before a run folder
or MLflow run exists) call `check_models` / `check_space_models`; every failure is a `ConfigError`
naming the file, the key and the reference, so the CLI exits 2 with nothing started.

The forward pass runs on PyTorch's meta device (shapes only: no memory, no arithmetic, milliseconds
even for large models); a model that cannot run there (e.g. it calls `.item()`) is built and run on
the CPU instead, at batch 2. Parameters and forward FLOPs per image (one image, eval mode, counted by
`torch.utils.flop_counter.FlopCounterMode`: 2 per multiply-add of convolutions and matrix products)
are reported in the plan and logged to MLflow.

Zoo models are known to work: a search or `train` does not check them (their path stays as fast as
before); the dry-run plan shows their size too (`zoo=True`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import TEACHER_METHODS, DataConfig, RunConfig
from .overrides import attribute, problems_header
from .errors import ConfigError, Problem
from .modelref import ModelRef, parse_model_ref

BATCH = 2  # train-mode BatchNorm needs more than one value per channel


@dataclass(frozen=True)
class DataShape:
    """What a model must fit: the dataset's class count and image shape."""

    num_classes: int
    channels: int
    height: int
    width: int

    def text(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}, {self.num_classes} classes"


def dataset_shape(data: DataConfig) -> DataShape:
    """The class count and image shape of the dataset `data` names, without loading it
    (`data.describe_dataset`, which checks an imagefolder/npz dataset from its listing and headers).

    The one place the model checks learn a dataset's shape."""
    from .data import describe_dataset

    return shape_of(describe_dataset(data))


def shape_of(facts: Any) -> DataShape:
    """The shape part of a dataset's facts (`data.DatasetFacts`)."""
    return DataShape(facts.num_classes, facts.channels, facts.height, facts.width)


@dataclass(frozen=True)
class ModelFacts:
    """A checked model: its role ('model' or 'teacher.model'), reference, size and cost."""

    role: str
    reference: str
    params: int
    flops: int | None  # forward FLOPs per image; None when the counter could not run
    device: str  # where the forward pass was checked: "meta" or "cpu"
    note: str = ""

    def plan_line(self) -> str:
        flops = f"{_si(self.flops)}FLOPs per image" if self.flops is not None else "FLOPs n/a"
        note = f"; {self.note}" if self.note else ""
        return f"{self.role} {self.reference}: {self.params:,} parameters, {flops}{note}"

    def mlflow_params(self) -> dict[str, Any]:
        key = "teacher" if self.role.startswith("teacher") else "model"
        return {f"{key}_reference": self.reference, f"{key}_params": self.params,
                f"{key}_flops_per_image": self.flops if self.flops is not None else "n/a"}


def check_models(cfg: RunConfig, source: str = "config", prefix: str = "", *, zoo: bool = False,
                 origins: Mapping[str, str] | None = None, shape: DataShape | None = None
                 ) -> list[ModelFacts]:
    """Check the student and (for kd/tfkd_self) a teacher.model reference of `cfg`; raises one
    ConfigError listing every model that fails. Zoo models are skipped unless `zoo`. `origins`: the
    `--set` overrides by path (override_labels): a model one of them changed is blamed on it."""
    roles: list[tuple[str, Any]] = [("model", cfg.model)]
    if cfg.method in TEACHER_METHODS and cfg.teacher is not None and cfg.teacher.model is not None:
        roles.append(("teacher.model", cfg.teacher.model))
    refs = [(role, parse_model_ref(value)) for role, value in roles]  # valid: the config was validated
    refs = [(role, ref) for role, ref in refs if zoo or not ref.is_zoo]
    if not refs:  # zoo models only: no torch import, validation stays fast
        return []
    shape = shape or dataset_shape(cfg.data)
    facts: list[ModelFacts] = []
    problems: list[Problem] = []
    for role, ref in refs:
        try:
            facts.append(check_model(ref, shape, role))
        except ConfigError as err:
            problems.append(Problem(source, role, str(err), ref.label()).under(prefix.rstrip(".")))
    if problems:
        problems = attribute(problems, origins or {}, parent_too=("",))  # e.g. --set model.width=0
        raise ConfigError(problems=problems,
                          header=problems_header("a model does not work", source, problems))
    return facts


def check_space_models(space: Any, *, zoo: bool = False, shape: DataShape | None = None
                       ) -> list[ModelFacts]:
    """`check_models` of a search space's base config and of every value its search parameters give
    a model reference (`model`, `model.<argument>`: grid/choice values, range ends). `shape`: the
    dataset's, when the caller has described it already."""
    from .spaces import corners

    facts = check_models(space.base, space.source, "base.", zoo=zoo, origins=space.origins,
                         shape=shape)
    for key, dist in space.params.items():
        if key != "model" and not key.startswith("model."):
            continue
        for value in corners(dist):
            cfg = space.trial_config({key: value})
            try:
                check_models(cfg, space.source, "base.", zoo=zoo, shape=shape)
            except ConfigError as err:
                raise ConfigError(problems=[Problem(
                    p.source, f"search.params.{key}", f"value {value!r} gives a model that does not "
                    f"work: {p.detail()}") for p in err.problems], header="a model does not work"
                ) from None
    return facts


class _NeedsValues(Exception):
    """The user's code failed on the meta device; `error` is what to report if the CPU fails too."""

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error


def check_model(ref: ModelRef, shape: DataShape, role: str = "model") -> ModelFacts:
    """Import and build `ref` for `shape`, run a forward pass in train and eval mode and count its
    parameters and FLOPs; ConfigError says what failed and what to change."""
    from .models.user import resolve_reference

    fn, kwargs = ((None, {}) if ref.is_zoo else
                  resolve_reference(ref, shape.num_classes, shape.channels))
    try:
        return _check_on(ref, fn, kwargs, shape, role, "meta")
    except _NeedsValues as on_meta:
        try:
            facts = _check_on(ref, fn, kwargs, shape, role, "cpu")
        except _NeedsValues as on_cpu:
            raise on_cpu.error from None
        note = (f"checked on the CPU: it needs real values ({_first_line(on_meta.error.__cause__)}),"
                f" which may also stop CUDA-graph capture")
        return ModelFacts(facts.role, facts.reference, facts.params, facts.flops, "cpu", note)


def _check_on(ref: ModelRef, fn: Any, kwargs: dict[str, Any], shape: DataShape, role: str,
              device: str) -> ModelFacts:
    """The checks on one device; a failure of the user's code raises _NeedsValues."""
    import torch

    from .models import build_model
    from .models.user import call_reference

    with torch.random.fork_rng(devices=[]), torch.device(device):
        if fn is None:
            model = build_model(ref.name, shape.num_classes, shape.channels)
        else:
            try:
                model = call_reference(ref, fn, kwargs)
            except ConfigError as err:
                if err.__cause__ is None:  # not an exception of the user's code: the same anywhere
                    raise
                raise _NeedsValues(err) from None
        x = torch.randn(BATCH, shape.channels, shape.height, shape.width)
        for mode in ("train", "eval"):
            model.train(mode == "train")
            try:
                out = model(x)
            except Exception as exc:  # noqa: BLE001 - the user's forward: any error is input
                error = ConfigError(_forward_failed(ref, shape, mode, exc))
                error.__cause__ = exc
                raise _NeedsValues(error) from None
            _check_output(ref, shape, mode, out)
        params = sum(p.numel() for p in model.parameters())
        flops = _flops(model, x[:1])
    return ModelFacts(role, ref.label(), params, flops, device)


def _check_output(ref: ModelRef, shape: DataShape, mode: str, out: Any) -> None:
    import torch

    want = f"one ({BATCH}, {shape.num_classes}) tensor of logits"
    where = f"{ref.label()} in {mode} mode"
    if isinstance(out, (tuple, list)):
        raise ConfigError(f"{where} returns a {type(out).__name__} of {len(out)} outputs; the trainer "
                          f"needs {want}: return only the logits (auxiliary heads, e.g. GoogLeNet's, "
                          f"must be off or dropped in train mode too)")
    if isinstance(out, Mapping):
        raise ConfigError(f"{where} returns a dict (keys {', '.join(map(repr, list(out)[:5]))}); the "
                          f"trainer needs {want}: return the logits tensor itself")
    if not isinstance(out, torch.Tensor):
        hint = " (e.g. its .logits)" if hasattr(out, "logits") else ""
        raise ConfigError(f"{where} returns a {type(out).__name__}; the trainer needs {want}{hint}")
    if out.dim() != 2 or out.shape[0] != BATCH:
        raise ConfigError(f"{where} returns shape {tuple(out.shape)} for a batch of {BATCH} images of "
                          f"{shape.channels}x{shape.height}x{shape.width}; the trainer needs {want}")
    if out.shape[1] != shape.num_classes:
        raise ConfigError(f"{where} returns {out.shape[1]} outputs per image but the dataset has "
                          f"{shape.num_classes} classes; build the classifier head from the "
                          f"num_classes argument tfkd-search passes")
    if not out.is_floating_point():
        raise ConfigError(f"{where} returns {out.dtype} values; the trainer needs float logits")


def _forward_failed(ref: ModelRef, shape: DataShape, mode: str, exc: BaseException) -> str:
    text = _first_line(exc)
    hint = "fix the model's forward or its keyword arguments"
    if "channels" in text and "expected input" in text:
        hint = (f"the dataset's images have {shape.channels} channel(s): build the model's first "
                f"layer for them (a keyword argument such as in_channels/in_chans beside _target_)")
    elif "shapes cannot be multiplied" in text or "Kernel size can't be greater" in text \
            or "image height" in text.lower() or "image size" in text.lower():
        hint = (f"the model expects another image size than the dataset's {shape.height}x"
                f"{shape.width} (use adaptive pooling, or the model's image-size argument)")
    return (f"a forward pass of {ref.label()} in {mode} mode on a batch of {BATCH} images of "
            f"{shape.text()} raised {type(exc).__name__}: {text}; {hint}")


def _flops(model: Any, x: Any) -> int | None:
    """Forward FLOPs of one image in eval mode, or None when the counter fails on this model."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - a size figure is a bonus; the model was checked above
        return None


def _si(n: float) -> str:
    """1.11e9 -> '1.11 G', 4930 -> '4.93 k', 12 -> '12 '."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {prefix}"
    return f"{n:g} "


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]

