"""Models given by reference (`tfkd_search.modelref`): an import path, a torchvision or a timm model.

`build_reference(ref, num_classes, in_channels)` imports what the reference names and calls it with
the reference's keyword arguments plus ``num_classes`` (timm also gets ``in_chans``, which every timm
model takes). Every failure is a `ConfigError` whose message says what failed and what to change;
the caller (`tfkd_search.preflight_model`) puts the config file and key in front of it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..modelref import ModelRef
from ..registry import did_you_mean

TIMM_EXTRA = "pip install 'tfkd-search[timm]'"


def build_reference(ref: ModelRef, num_classes: int, in_channels: int) -> nn.Module:
    """The module `ref` builds for a dataset of `num_classes` classes and `in_channels` channels."""
    fn, kwargs = resolve_reference(ref, num_classes, in_channels)
    return call_reference(ref, fn, kwargs)


def call_reference(ref: ModelRef, fn: Callable[..., Any], kwargs: dict[str, Any]) -> nn.Module:
    """`fn(**kwargs)`, which must return an nn.Module. An exception of the user's code is the
    ConfigError's __cause__ (and only then has it one)."""
    try:
        model = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's code: any error is reported as input
        raise ConfigError(f"calling {_call_text(ref, kwargs)} raised {type(exc).__name__}: "
                          f"{_first_line(exc)}; fix the keyword arguments beside _target_ or the "
                          f"function (num_classes is passed by tfkd-search)") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{_call_text(ref, kwargs)} returned a {type(model).__name__}, not a "
                          f"torch.nn.Module; _target_ must name a function or class that returns the "
                          f"model")
    return model


def resolve_reference(ref: ModelRef, num_classes: int, in_channels: int
                      ) -> tuple[Callable[..., Any], dict[str, Any]]:
    """What to call (imported) and with which keyword arguments."""
    given = dict(ref.kwargs)
    if "num_classes" in given and given["num_classes"] != num_classes:
        raise ConfigError(f"num_classes is {given['num_classes']!r} but the dataset has {num_classes} "
                          f"classes; drop num_classes (tfkd-search passes the dataset's)")
    given["num_classes"] = num_classes
    if ref.kind == "torchvision":
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        if ref.name not in names:
            raise ConfigError(f"torchvision has no classification model {ref.name!r}."
                              f"{did_you_mean(ref.name, names)} See "
                              f"torchvision.models.list_models(module=torchvision.models)")
        return (lambda **kw: torchvision.models.get_model(ref.name, weights=None, **kw)), given
    if ref.kind == "timm":
        timm = _import_timm()
        if not timm.is_model(ref.name):
            raise ConfigError(f"timm has no model {ref.name!r}.{did_you_mean(ref.name, timm.list_models())}"
                              f" See timm.list_models()")
        given.setdefault("in_chans", in_channels)
        return (lambda **kw: timm.create_model(ref.name, pretrained=False, **kw)), given
    return resolve_target(ref.name), given


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"timm is not installed; install the optional extra: {TIMM_EXTRA} (or pip "
                          f"install timm)") from None
    return timm


def resolve_target(target: str) -> Callable[..., Any]:
    """The object an import path ('pkg.mod:attr' or 'pkg.mod.attr') names; ConfigError otherwise."""
    if ":" in target:
        module_name, attr = target.split(":", 1)
        module = _import(module_name, target)
    else:
        parts = target.split(".")
        module, attr = None, ""
        for cut in range(len(parts) - 1, 0, -1):  # the longest importable prefix is the module
            try:
                module = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError as exc:
                if exc.name != ".".join(parts[:cut]) and not ".".join(parts[:cut]).startswith(
                        f"{exc.name}."):
                    raise _import_error(".".join(parts[:cut]), exc) from None
                continue
            except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
                raise _import_error(".".join(parts[:cut]), exc) from None
            attr = ".".join(parts[cut:])
            break
        if module is None:
            raise _not_found(parts[0], target)
        module_name = module.__name__
    obj: Any = module
    walked: list[str] = []
    for part in attr.split("."):
        walked.append(part)
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            where = getattr(module, "__file__", None) or module_name
            raise ConfigError(f"module {module_name!r} ({where}) has no attribute "
                              f"{'.'.join(walked)!r}.{did_you_mean(part, names)} Fix the name after "
                              f"the module in {target!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{target!r} is a {type(obj).__name__}, not a function or class; name the "
                          f"callable that builds the model")
    return obj


def _import(module_name: str, target: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise _not_found(module_name, target) from None
        raise _import_error(module_name, exc) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise _import_error(module_name, exc) from None


def _not_found(module_name: str, target: str) -> ConfigError:
    top = module_name.split(".")[0]
    return ConfigError(f"cannot import {module_name!r} for {target!r}: no module {top!r} on the path; "
                       f"put {top}.py (or the package folder {top}/) in the current folder, pass "
                       f"--code-dir DIR for the folder that holds it, or pip install the package that "
                       f"provides it")


def _import_error(module_name: str, exc: BaseException) -> ConfigError:
    what = (f"it imports {exc.name!r}, which is not installed; install it"
            if isinstance(exc, ModuleNotFoundError) else "fix the module")
    return ConfigError(f"importing {module_name!r} raised {type(exc).__name__}: {_first_line(exc)}; "
                       f"{what}")


def _call_text(ref: ModelRef, kwargs: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{ref.architecture}({args})"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
