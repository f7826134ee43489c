"""Run configuration: typed, strict (unknown keys are errors), validated at the boundary.

A run config is plain YAML (loaded with `yaml.safe_load` only: nothing in a config can import or run
code). Every problem is reported at once, each line naming the file (or the `--set` override that
supplied the value), the key path and the bad value. Problems are `errors.Problem` records, formatted
once by `ConfigError`.

What a method needs (a teacher, which `loss.*` fields, the manual teacher's `a` range) is read from
one table, `registry.METHOD_REGISTRY`; `METHODS` and `TEACHER_METHODS` are derived from it.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import NO_VALUE, ConfigError, Problem
from .overrides import (attribute, describe_changes, flatten, get_path, origin_of, override_labels,
                        parse_set, problems_header, render_value, set_path, with_overrides)
from .modelref import check_model_ref, same_architecture
from .registry import METHOD_REGISTRY, did_you_mean

__all__ = ["NUM_CLASSES", "USER_DATASETS", "DATASET_NAMES", "METHODS", "TEACHER_METHODS", "RunConfig",
           "build_run_config", "check_run_config", "config_to_dict", "load_run_config", "read_yaml",
           "attribute", "describe_changes", "flatten", "get_path", "origin_of", "override_labels", "parse_set",
           "render_value", "set_path", "with_overrides"]

# Static facts about the datasets, kept here so configs validate without importing torch;
# tests check they agree with tfkd_search.data.DATASETS.
NUM_CLASSES: dict[str, int] = {
    "cifar10": 10, "cifar100": 100, "tiny-imagenet": 200, "digits": 10, "synthetic": 10,
}
# Your own data (tfkd_search.userdata): the class count comes from the data itself.
USER_DATASETS: tuple[str, ...] = ("imagefolder", "npz")
DATASET_NAMES: tuple[str, ...] = (*NUM_CLASSES, *USER_DATASETS)
# derived from the method table (registry.METHOD_REGISTRY), in registration order
METHODS: tuple[str, ...] = tuple(METHOD_REGISTRY)
TEACHER_METHODS: tuple[str, ...] = tuple(n for n, m in METHOD_REGISTRY.items() if m.needs_teacher)


class FieldProblems(ValueError):
    """Raised inside a model validator to report problems at specific keys below the model.

    `items` are (relative key path, message, value or NO_VALUE); validation_problems() turns each into
    its own Problem, so a cross-field check still names the key (and, for `--set`, its origin).
    """

    def __init__(self, items: Iterable[tuple[str, str, Any]]) -> None:
        self.items = list(items)
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m, _ in self.items))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Strict):
    dataset: str = Field("digits", description="cifar10 | cifar100 | tiny-imagenet | digits | synthetic "
                         "| imagefolder | npz")
    data_dir: str | None = Field(None, description="folder holding the dataset (default ./data); "
                                 "npz: the .npz file")
    download: bool = Field(False, description="download CIFAR when missing (needs network)")
    val_fraction: float = Field(0.1, ge=0.0, le=0.5, description="share of train held out for val")
    split_seed: int = Field(0, description="seed of the train/val split (fixed across trials)")
    rotation: float = Field(0.0, ge=0.0, le=180.0, description="random rotation in degrees (15: official)")
    crop_padding: int | None = Field(None, ge=0, description="random-crop padding; null = dataset default")
    flip: bool | None = Field(None, description="random horizontal flip; null = dataset default")
    synthetic_size: int = Field(1024, ge=16, description="training images of the synthetic dataset")
    image_size: int | tuple[int, int] | None = Field(
        None, description="imagefolder/npz: resize to this side (or [height, width]) once, when "
        "decoding; null: the images' own size (they must all agree)")
    num_classes: int | None = Field(None, ge=2, description="imagefolder/npz: the class count the "
                                    "data must have (checked); null: read from the data")
    cache_dir: str | None = Field(None, description="imagefolder/npz: folder of the decoded-image "
                                  "cache (null: $XDG_CACHE_HOME/tfkd-search or ~/.cache/tfkd-search)")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {v!r}.{did_you_mean(v, DATASET_NAMES)} "
                             f"Available: {', '.join(DATASET_NAMES)}")
        return v

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        sides = (v,) if isinstance(v, int) else (v or ())
        if any(s < 1 for s in sides):
            raise ValueError("image sizes must be >= 1 pixel: a side (32) or [height, width]")
        return v

    @model_validator(mode="after")
    def _user_keys(self) -> DataConfig:
        if self.dataset in USER_DATASETS:
            return self
        problems = [(k, f"applies to imagefolder and npz only, not {self.dataset}; remove it",
                     getattr(self, k)) for k in ("image_size", "num_classes", "cache_dir")
                    if getattr(self, k) is not None]
        if problems:
            raise FieldProblems(problems)
        return self

    def known_classes(self, context: Any = None) -> int | None:
        """The class count known without reading the data: a built-in's, `num_classes`, or the
        count the caller read from the data (validation context {"num_classes": C}); else None."""
        if self.dataset in NUM_CLASSES:
            return NUM_CLASSES[self.dataset]
        return self.num_classes or (context or {}).get("num_classes")


class LossConfig(Strict):
    semantics: Literal["paper", "official"] = Field(
        "paper", description="'paper': Eq. 9 with a true KL; 'official': the released code exactly")
    tau: float = Field(20.0, gt=0.0, description="temperature")
    alpha: float = Field(0.1, ge=0.0, le=1.0, description="weight of the KL term")
    a: float = Field(0.99, gt=0.0, le=1.0, description="manual teacher's true-class probability")
    multiplier: float = Field(1.0, gt=0.0, description="extra factor on the KL term")
    eps: float = Field(0.1, ge=0.0, lt=1.0, description="label-smoothing weight (lsr)")


# a model reference (tfkd_search.modelref): a zoo name, 'torchvision:<name>', 'timm:<name>' or a
# mapping {_target_: 'package.module:callable', <keyword arguments>}
ModelValue = str | dict[str, Any]


class TeacherConfig(Strict):
    checkpoint: str = Field(description="the teacher's weights: a tfkd-search checkpoint.pt, or a "
                            "plain state_dict file (then teacher.model names the architecture)")
    model: ModelValue | None = Field(None, description="teacher architecture (a model reference); "
                                     "default: read from a tfkd-search checkpoint")

    @field_validator("model", mode="before")
    @classmethod
    def _known_model(cls, v: Any) -> Any:
        return None if v is None else check_model_ref(v)


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
    model: ModelValue = Field("tiny_cnn", description="student architecture: a zoo name, "
                              "torchvision:<name>, timm:<name> or {_target_: 'pkg.mod:fn', ...}")
    method: str = Field("ce", description=" | ".join(METHODS))
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
        if v not in METHOD_REGISTRY:
            raise ValueError(f"unknown method {v!r}.{did_you_mean(v, METHODS)} "
                             f"Available: {', '.join(METHODS)}")
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _known_model(cls, v: Any) -> Any:
        return check_model_ref(v)

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> RunConfig:
        c = self.data.known_classes(info.context)
        m = METHOD_REGISTRY.get(self.method)
        problems: list[tuple[str, str, Any]] = []
        # imagefolder/npz: checked once the data's class count is known (runs.check_dataset)
        if c is not None and m.manual_teacher and not self.loss.a > 1.0 / c:
            problems.append(("loss.a", f"loss.a must be in (1/C, 1] = ({1.0 / c:.4g}, 1] for "
                             f"{self.data.dataset} (C={c}) with method {self.method!r}", self.loss.a))
        if m.needs_teacher and self.teacher is None:
            problems.append(("teacher", f"method {self.method!r} needs a teacher: add 'teacher: "
                             f"{{checkpoint: PATH}}' (a checkpoint written by 'tfkd-search train')",
                             NO_VALUE))
        if (m.same_architecture and self.teacher is not None and self.teacher.model is not None
                and not same_architecture(self.teacher.model, self.model)):
            problems.append(("teacher.model", f"{self.method} distils from the same architecture: "
                             f"teacher.model is {self.teacher.model!r} but model is {self.model!r}",
                             NO_VALUE))
        if problems:
            raise FieldProblems(problems)
        return self

    @property
    def num_classes(self) -> int:
        """The dataset's class count (imagefolder/npz: read from the data, `data.describe_dataset`)."""
        known = self.data.known_classes()
        if known is not None:
            return known
        from .data import describe_dataset

        return describe_dataset(self.data).num_classes


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error formatting


def validation_problems(err: ValidationError, source: str, prefix: str = "",
                        root: Any = None) -> list[Problem]:
    """One Problem per pydantic error: key path (union tags dropped), message, bad value.

    `root` is the model validated (default RunConfig); unknown keys get a close-match hint from the
    fields of the model at their location; `prefix` is put before every path (e.g. "base").
    """
    root = root or RunConfig
    out: list[Problem] = []
    for e in err.errors():
        parts, container = _walk_loc(e["loc"], root)
        path = ".".join(str(p) for p in parts)
        exc = (e.get("ctx") or {}).get("error")
        if isinstance(exc, FieldProblems):
            for sub, msg, value in exc.items:
                full = ".".join(x for x in (path, sub) if x)
                out.append(Problem(source, full, msg, value).under(prefix))
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key." + _key_hint(str(parts[-1]) if parts else "", container)
        elif e["type"] == "missing":
            msg = "required key is missing; add it"
        elif e["type"] in ("literal_error", "union_tag_invalid"):
            ctx = e.get("ctx") or {}
            expected = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ctx.get("expected", ""))))
            bad = ctx.get("tag", e.get("input"))
            hint = did_you_mean(str(bad), expected)
            msg = msg.rstrip(".") + "." + hint if hint else msg
        value = e.get("input", NO_VALUE)
        if e["type"] in ("extra_forbidden", "missing") or isinstance(value, dict):
            value = NO_VALUE
        out.append(Problem(source, path, msg, value).under(prefix))
    return out


def format_validation_error(source: str, err: ValidationError, prefix: str = "",
                            root: Any = None) -> list[str]:
    """One line per problem: '<source>: <key.path>: <message> (got <value>)'."""
    return [p.format() for p in validation_problems(err, source, prefix, root)]


def _key_hint(name: str, container: Any) -> str:
    """Close-match hint for an unknown key, from the fields of the model that holds it."""
    names = list(getattr(container, "model_fields", {}))
    if not names:
        return ""
    return did_you_mean(name, names) + f" Valid keys here: {', '.join(names)}"


def _unwrap(ann: Any) -> Any:
    """Strip Annotated[...] and Optional[...] from an annotation."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) == 1:
                ann = args[0]
                continue
        return ann


def _tagged_members(ann: Any) -> dict[str, Any]:
    """{tag: model} of a discriminated union of models with a Literal `kind` field."""
    if typing.get_origin(ann) not in (typing.Union, types.UnionType):
        return {}
    out = {}
    for member in typing.get_args(ann):
        kind = getattr(member, "model_fields", {}).get("kind")
        for tag in typing.get_args(kind.annotation) if kind is not None else ():
            out[str(tag)] = member
    return out


def _step(ann: Any, part: Any) -> Any:
    """The annotation of `part` inside `ann` (a model's field, a dict's value, a list's item)."""
    if hasattr(ann, "model_fields"):
        field = ann.model_fields.get(part)
        return field.annotation if field is not None else None
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (list, tuple) and args:
        return args[0]
    return None


def _walk_loc(loc: tuple[Any, ...], root: Any) -> tuple[list[Any], Any]:
    """Clean a pydantic location: drop validator entries and the tags pydantic inserts for tagged
    unions. Returns (key path parts, the model that holds the last part, or None)."""
    items = [p for p in loc if not str(p).startswith("function-")]
    parts: list[Any] = []
    ann: Any = root
    container: Any = root
    i = 0
    while i < len(items):
        part = items[i]
        parts.append(part)
        container = ann
        ann = _unwrap(_step(ann, part)) if ann is not None else None
        i += 1
        tagged = _tagged_members(ann)
        if tagged and i < len(items) and str(items[i]) in tagged:
            ann = tagged[str(items[i])]
            i += 1
    return parts, container


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """safe_load a YAML file; syntax errors become a ConfigError with the line number."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; pass the path of a YAML file"
                          f"{_path_hint(p, folder=True)}")
    if not p.is_file():
        raise ConfigError(f"{p}: file not found; pass the path of a YAML file{_path_hint(p)}")
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


def _path_hint(p: Path, folder: bool = False) -> str:
    """'. Did you mean <sibling>?' from the files next to `p` (YAML files first), or ''."""
    if folder:  # a folder was given: name the YAML files inside it
        inside = sorted(c.name for c in p.glob("*.y*ml"))[:5]
        return f". It holds {', '.join(str(p / n) for n in inside)}" if inside else ""
    parent = p.parent
    try:
        siblings = sorted(c.name for c in parent.iterdir() if c.is_file())
    except OSError:
        return ""
    yamls = [n for n in siblings if n.endswith((".yaml", ".yml"))]
    near = (difflib.get_close_matches(p.name, yamls, n=1, cutoff=0.6)
            or difflib.get_close_matches(p.name, siblings, n=1, cutoff=0.6))
    return f". Did you mean {parent / near[0]}?" if near else ""


def check_run_config(raw: Mapping[str, Any], source: str = "config", prefix: str = "",
                     num_classes: int | None = None) -> tuple[RunConfig | None, list[Problem]]:
    """Validate a raw mapping: (the config, []) or (None, every problem).

    `num_classes`: the class count read from an imagefolder/npz dataset, for the checks that
    depend on it (loss.a > 1/C); without it those checks wait until the data is known."""
    try:
        return RunConfig.model_validate(raw, context={"num_classes": num_classes}), []
    except ValidationError as err:
        return None, validation_problems(err, source, prefix)


def build_run_config(raw: Mapping[str, Any], source: str = "config", prefix: str = "",
                     overrides: Mapping[str, str] | None = None,
                     num_classes: int | None = None) -> RunConfig:
    """Validate a raw mapping into a RunConfig, or raise one ConfigError listing every problem.

    `overrides` maps the dotted paths (below `prefix`) that overrides set to a label such as
    "--set loss.tau=-2" (see override_labels): problems at those paths name it instead of `source`.
    `num_classes`: as for check_run_config.
    """
    cfg, problems = check_run_config(raw, source, prefix, num_classes)
    if cfg is None:
        problems = attribute(problems, overrides or {})
        raise ConfigError(problems=problems, header=problems_header("invalid run config", source, problems))
    return cfg


def load_run_config(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None,
                    *, labels: Mapping[str, str] | None = None,
                    num_classes: int | None = None) -> RunConfig:
    """Read, override and validate a run config file.

    `overrides` are `--set` values (dotted key -> value). A problem caused by one says so
    ("--set loss.tau=-2: loss.tau: ...") instead of blaming the file; `labels` may name another
    origin for a key (e.g. {"data.data_dir": "--data-dir"}).
    """
    raw = read_yaml(path)
    overrides = dict(overrides or {})
    return build_run_config(with_overrides(raw, overrides), source=str(path),
                            overrides=override_labels(overrides, labels), num_classes=num_classes)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain, YAML-safe dict of a config (tuples become lists)."""
    return _plain(cfg.model_dump(mode="python"))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
