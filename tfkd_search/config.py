"""Run configuration: typed, strict (unknown keys are errors), validated at the boundary.

A run config is plain YAML (loaded with `yaml.safe_load` only: nothing in a config can import or run
code). Every problem is reported at once, each line naming the file, the key path and the bad value.
"""

from __future__ import annotations

import copy
import os
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .registry import did_you_mean

# Static facts about the datasets, kept here so configs validate without importing torch;
# tests check they agree with tfkd_search.data.DATASETS.
NUM_CLASSES: dict[str, int] = {
    "cifar10": 10, "cifar100": 100, "tiny-imagenet": 200, "digits": 10, "synthetic": 10,
}
METHODS = ("ce", "lsr", "kd", "tfkd_self", "tfkd_reg")
TEACHER_METHODS = ("kd", "tfkd_self")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Strict):
    dataset: str = Field("digits", description="cifar10 | cifar100 | tiny-imagenet | digits | synthetic")
    data_dir: str | None = Field(None, description="folder holding the dataset (default ./data)")
    download: bool = Field(False, description="download CIFAR when missing (needs network)")
    val_fraction: float = Field(0.1, ge=0.0, le=0.5, description="share of train held out for val")
    split_seed: int = Field(0, description="seed of the train/val split (fixed across trials)")
    rotation: float = Field(0.0, ge=0.0, le=180.0, description="random rotation in degrees (15: official)")
    crop_padding: int | None = Field(None, ge=0, description="random-crop padding; null = dataset default")
    flip: bool | None = Field(None, description="random horizontal flip; null = dataset default")
    synthetic_size: int = Field(1024, ge=16, description="training images of the synthetic dataset")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in NUM_CLASSES:
            raise ValueError(f"unknown dataset {v!r}.{did_you_mean(v, NUM_CLASSES)} "
                             f"Available: {', '.join(NUM_CLASSES)}")
        return v


class LossConfig(Strict):
    semantics: Literal["paper", "official"] = Field(
        "paper", description="'paper': Eq. 9 with a true KL; 'official': the released code exactly")
    tau: float = Field(20.0, gt=0.0, description="temperature")
    alpha: float = Field(0.1, ge=0.0, le=1.0, description="weight of the KL term")
    a: float = Field(0.99, gt=0.0, le=1.0, description="manual teacher's true-class probability")
    multiplier: float = Field(1.0, gt=0.0, description="extra factor on the KL term")
    eps: float = Field(0.1, ge=0.0, lt=1.0, description="label-smoothing weight (lsr)")


class TeacherConfig(Strict):
    checkpoint: str = Field(description="path to a tfkd-search checkpoint (.pt) of the teacher")
    model: str | None = Field(None, description="teacher architecture; default: read from checkpoint")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        return None if v is None else _check_model_name(v)


class OptimConfig(Strict):
    lr: float = Field(0.1, gt=0.0, description="learning rate per `lr_batch` examples")
    lr_batch: int = Field(128, ge=1, description="effective lr = lr * batch_size / lr_batch")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    batch_size: int = Field(128, ge=1)


class ScheduleConfig(Strict):
    epochs: int = Field(200, ge=1, description="length of the full schedule the milestones refer to")
    budget: int | None = Field(None, ge=1, description="epochs actually trained (null = epochs)")
    mode: Literal["truncate", "scale"] = Field(
        "truncate", description="truncate: stop early in the full schedule (the paper's 70-epoch "
        "search); scale: shrink the milestones to the budget")
    warmup_epochs: int = Field(1, ge=0, description="linear per-step warm-up")
    milestones: tuple[int, ...] = Field((60, 120, 160), description="lr drops, in epochs of `epochs`")
    gamma: float = Field(0.2, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _coherent(self) -> ScheduleConfig:
        if self.budget is not None and self.budget > self.epochs:
            raise ValueError(f"budget ({self.budget}) cannot exceed epochs ({self.epochs})")
        if list(self.milestones) != sorted(self.milestones) or any(
                m < 1 or m >= self.epochs for m in self.milestones):
            raise ValueError(f"milestones must be increasing and inside (0, epochs={self.epochs}), "
                             f"got {list(self.milestones)}")
        return self

    @property
    def trained_epochs(self) -> int:
        return self.budget if self.budget is not None else self.epochs


class RunConfig(Strict):
    name: str = Field("run", description="label for logs and MLflow")
    seed: int = Field(0, description="seed of init, shuffling and augmentation")
    seeds: tuple[int, ...] | None = Field(None, description="seeds of final runs (train --seeds)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on CUDA")
    channels_last: bool | None = Field(None, description="null: on for CUDA")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (null: torch default)")
    cuda_graphs: bool | None = Field(None, description="capture the training step in a CUDA graph "
                                     "(null: on for CUDA)")
    model: str = Field("tiny_cnn", description="student architecture")
    method: str = Field("ce", description="ce | lsr | kd | tfkd_self | tfkd_reg")
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    teacher: TeacherConfig | None = None
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    evaluate_test: bool = Field(False, description="evaluate the test set (final runs only)")
    checkpoint_every: int = Field(1, ge=1, description="write a checkpoint every N epochs")
    keep_checkpoints: tuple[int, ...] = Field((), description="epochs whose checkpoints are kept")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}.{did_you_mean(v, METHODS)} "
                             f"Available: {', '.join(METHODS)}")
        return v

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return _check_model_name(v)

    @model_validator(mode="after")
    def _coherent(self) -> RunConfig:
        c = NUM_CLASSES[self.data.dataset]
        problems = []
        if self.method == "tfkd_reg" and not self.loss.a > 1.0 / c:
            problems.append(f"loss.a must be in (1/C, 1] = ({1.0 / c:.4g}, 1] for {self.data.dataset} "
                            f"(C={c}), got {self.loss.a}")
        if self.method in TEACHER_METHODS and self.teacher is None:
            problems.append(f"method {self.method!r} needs a teacher: add 'teacher: {{checkpoint: "
                            f"PATH}}' (a checkpoint written by 'tfkd-search train')")
        if (self.method == "tfkd_self" and self.teacher is not None
                and self.teacher.model not in (None, self.model)):
            problems.append(f"tfkd_self distils from the same architecture: teacher.model is "
                            f"{self.teacher.model!r} but model is {self.model!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.data.dataset]


def _check_model_name(v: str) -> str:
    from .models import model_names  # lazy: torch is only needed once a model name is checked

    names = model_names()
    if v not in names:
        raise ValueError(f"unknown model {v!r}.{did_you_mean(v, names)} Available: {', '.join(names)}")
    return v


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error formatting


def format_validation_error(source: str, err: ValidationError, prefix: str = "",
                            root: Any = None) -> list[str]:
    """One line per problem: '<source>: <key.path>: <message> (got <value>)'.

    `root` is the model validated (default RunConfig); unknown keys get a close-match hint from the
    fields of the model at their location.
    """
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        where = ".".join(x for x in (prefix, loc) if x) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + _key_hint(e["loc"], root or RunConfig)
        elif e["type"] == "missing":
            msg = "required key is missing; add it"
        elif e["type"] in ("literal_error", "union_tag_invalid"):
            ctx = e.get("ctx") or {}
            expected = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ctx.get("expected", ""))))
            bad = ctx.get("tag", e.get("input"))
            hint = did_you_mean(str(bad), expected)
            msg = msg.rstrip(".") + "." + hint if hint else msg
        got = ""
        if e["type"] not in ("extra_forbidden", "missing") and not isinstance(e.get("input"), dict):
            got = f" (got {e.get('input')!r})"
        lines.append(f"{source}: {where}: {msg}{got}")
    return lines


def _key_hint(loc: tuple[Any, ...], root: Any = None) -> str:
    """Close-match hint for an unknown key, from the fields of the model at that location."""
    model: Any = root or RunConfig
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = _model_of(field.annotation, parts)
        if model is None:
            return ""
    names = list(getattr(model, "model_fields", {}))
    hint = did_you_mean(str(loc[-1]), names)
    return hint + (f" Valid keys here: {', '.join(names)}" if names else "")


def _model_of(ann: Any, rest: list[Any]) -> Any:
    """The pydantic model a field annotation leads to, consuming dict keys and union tags from `rest`."""
    if hasattr(ann, "model_fields"):
        return ann
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _model_of(args[0], rest)
    if origin is dict and len(args) == 2:
        if not rest:
            return None
        rest.pop(0)  # the dict key (e.g. a parameter name)
        return _model_of(args[1], rest)
    models = [m for m in (_model_of(a, []) for a in args) if m is not None]
    if len(models) == 1:
        return models[0]
    if models and rest:  # a tagged union: pydantic puts the tag into the location
        tag = str(rest[0])
        for m in models:
            kind = getattr(m, "model_fields", {}).get("kind")
            if kind is not None and tag in typing.get_args(kind.annotation):
                rest.pop(0)
                return m
    return None


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """safe_load a YAML file; syntax errors become a ConfigError with the line number."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found; pass the path of a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the file ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where}: YAML tags such as !!python/... are not allowed: configs are "
                          f"plain data (loaded with yaml.safe_load) and cannot create objects or run "
                          f"code; remove the tag ({getattr(exc, 'problem', '') or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}:{where}: YAML syntax error: {problem}; fix the YAML "
                          f"(indentation, ':' after keys, quotes)") from None
    if raw is None:
        raise ConfigError(f"{p}: the file is empty; it must hold a YAML mapping of settings")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of key: value settings, "
                          f"got a {type(raw).__name__}")
    return raw


def parse_set(items: Iterable[str], source: str = "--set") -> dict[str, Any]:
    """Parse `key.path=value` overrides; values are YAML scalars or lists (`[1, 2]`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source} {item!r}: expected key.path=value, e.g. --set loss.tau=20")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path in a nested dict (creating sections as needed)."""
    node = tree
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {path!r}: {part!r} is {child!r}, not a section")
        node = child
    node[parts[-1]] = value


def get_path(tree: Mapping[str, Any], path: str, default: Any = None) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def with_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    tree = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        set_path(tree, key, value)
    return tree


def build_run_config(raw: Mapping[str, Any], source: str = "config", prefix: str = "") -> RunConfig:
    """Validate a raw mapping into a RunConfig, or raise one ConfigError listing every problem."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        lines = format_validation_error(source, err, prefix)
        raise ConfigError("invalid run config:\n  " + "\n  ".join(lines)) from None


def load_run_config(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
                    ) -> RunConfig:
    raw = read_yaml(path)
    return build_run_config(with_overrides(raw, overrides or {}), source=str(path))


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain, YAML-safe dict of a config (tuples become lists)."""
    return _plain(cfg.model_dump(mode="python"))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
