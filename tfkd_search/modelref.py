"""Model references, checked without importing torch or the user's code.

A config names a model (`model`, `teacher.model`) in one of three forms:

* a zoo name: ``resnet18`` (`registry.MODEL_NAMES`);
* a shorthand for an installed library: ``torchvision:<name>`` (`torchvision.models.get_model`,
  ``weights=None``) or ``timm:<name>`` (`timm.create_model`, ``pretrained=False``; the optional extra
  ``tfkd-search[timm]``);
* a mapping ``{_target_: "package.module:callable", <keyword arguments>}``: tfkd-search calls the
  callable with the other keys as keyword arguments plus ``num_classes`` from the dataset. Its
  `_target_` may also be a shorthand, to pass keyword arguments to torchvision or timm.

Only the syntax is checked here (validation stays torch-free and runs no user code); importing and
building happen in `tfkd_search.preflight_model`, before anything starts. Configs are still read
with `yaml.safe_load`: a reference is a plain string that is imported after validation, never while
the file is parsed. A config that names code runs that code, with the rights of the user who runs
tfkd-search.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .registry import MODEL_NAMES, did_you_mean

TARGET = "_target_"
SHORTHANDS = ("torchvision", "timm")
# keys a shorthand refuses: tfkd-search builds untrained models; trained weights come from
# teacher.checkpoint (a download inside every trial would also need network on every node)
_NO_WEIGHTS = {"torchvision": ("weights", "weights_backbone"), "timm": ("pretrained",)}
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_LIBRARY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
REFERENCES = ("'torchvision:<name>', 'timm:<name>', or a mapping {_target_: 'package.module:callable', "
              "<its keyword arguments>}")
FORMS = f"a zoo name ({', '.join(MODEL_NAMES)}), {REFERENCES}"


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference.

    `kind`: "zoo", "torchvision", "timm" or "target" (an import path); `name`: the zoo, torchvision
    or timm model name, or the import path (`package.module:callable` or `package.module.callable`);
    `kwargs`: the keyword arguments given beside `_target_`."""

    kind: str
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_zoo(self) -> bool:
        return self.kind == "zoo"

    @property
    def architecture(self) -> str:
        """What the reference builds, without its arguments (e.g. 'timm:resnet18', 'pkg.mod:fn')."""
        return self.name if self.kind in ("zoo", "target") else f"{self.kind}:{self.name}"

    def label(self) -> str:
        """The reference as one line for plans, logs and MLflow: 'pkg.mod:fn(width=64)'."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.architecture}({args})" if args else self.architecture


def parse_model_ref(value: Any) -> ModelRef:
    """The reference `value` (a string or a mapping from a config) names; ValueError says what is
    wrong with its syntax and what to write instead."""
    if isinstance(value, str):
        return _parse_string(value)
    if isinstance(value, Mapping):
        return _parse_mapping(value)
    raise ValueError(f"a model is {FORMS}; got a {type(value).__name__}")


def check_model_ref(value: Any) -> Any:
    """Pydantic field check: `value` unchanged (a mapping copied to a plain dict) if its syntax is
    right, else ValueError."""
    parse_model_ref(value)
    return dict(value) if isinstance(value, Mapping) else value


def same_architecture(a: Any, b: Any) -> bool:
    """Whether two valid references build the same architecture (their arguments may differ: a
    searched dropout rate leaves the weights' layout alone; load_state_dict checks the rest)."""
    return parse_model_ref(a).architecture == parse_model_ref(b).architecture


def model_label(value: Any) -> str:
    """`ModelRef.label` of a valid reference (any other value as its repr)."""
    try:
        return parse_model_ref(value).label()
    except ValueError:
        return repr(value)


def _parse_string(value: str) -> ModelRef:
    if value in MODEL_NAMES:
        return ModelRef("zoo", value)
    lib, sep, name = value.partition(":")
    if sep and lib in SHORTHANDS:
        if not _LIBRARY_NAME.match(name):
            raise ValueError(f"{lib}: needs a model name after the colon, e.g. '{lib}:resnet18'")
        return ModelRef(lib, name)
    if sep or "." in value:
        raise ValueError(f"an import path is written as a mapping: {{_target_: {value!r}}} (its "
                         f"other keys are the callable's keyword arguments)")
    raise ValueError(f"unknown model {value!r}.{did_you_mean(value, MODEL_NAMES)} Available: "
                     f"{', '.join(MODEL_NAMES)}; or your own model: {REFERENCES}")


def _parse_mapping(value: Mapping[str, Any]) -> ModelRef:
    if TARGET not in value:
        raise ValueError(f"a model mapping needs a {TARGET} key naming the callable that builds the "
                         f"model, e.g. {{_target_: 'mypackage.nets:build', width: 64}}; keys given: "
                         f"{', '.join(map(str, value)) or '(none)'}")
    target = value[TARGET]
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"{TARGET} must be a string 'package.module:callable', got {target!r}")
    kwargs = {k: v for k, v in value.items() if k != TARGET}
    bad = [k for k in kwargs if not isinstance(k, str) or not k.isidentifier() or keyword.iskeyword(k)
           or k.startswith("_")]
    if bad:
        raise ValueError(f"keys beside {TARGET} are the callable's keyword arguments, so each must be "
                         f"a Python identifier not starting with '_'; got {', '.join(map(repr, bad))}")
    lib, sep, name = target.partition(":")
    if sep and lib in SHORTHANDS:
        ref = _parse_string(target)
        refused = [k for k in _NO_WEIGHTS[lib] if k in kwargs]
        if refused:
            raise ValueError(f"{target!r}: {lib} models are built untrained here; drop "
                             f"{', '.join(refused)} and give trained weights as teacher.checkpoint "
                             f"(a state_dict file)")
        return ModelRef(lib, ref.name, kwargs)
    if target in MODEL_NAMES:
        raise ValueError(f"{target!r} is a zoo model: write model: {target} (zoo models take no "
                         f"keyword arguments)")
    module, _, attr = target.partition(":")
    if not _DOTTED.match(module) or (sep and not _DOTTED.match(attr)) or (not sep and "." not in target):
        raise ValueError(f"{TARGET} {target!r} is not an import path: write 'package.module:callable' "
                         f"(or 'package.module.callable'), e.g. 'mynets:build' for build() in mynets.py")
    return ModelRef("target", target, kwargs)
