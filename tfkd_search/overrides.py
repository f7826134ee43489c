"""Overrides and dotted paths: `--set key.path=value` parsing, reading and writing nested config trees
by dotted path, and where a value came from (the file or an override), so that an error can name the
`--set` that caused it and a resumed search can say what changed."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from .errors import ConfigError, Problem


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


def set_path(tree: dict[str, Any], path: str | Sequence[str], value: Any) -> None:
    """Set a dotted path (or a list of keys) in a nested dict, creating sections as needed.

    An existing key that itself contains dots (a search parameter such as `loss.tau` under
    `search.params`) is matched whole, so `search.params.loss.tau.values` reaches its values."""
    parts = path.split(".") if isinstance(path, str) else list(path)
    shown = path if isinstance(path, str) else ".".join(path)
    node = tree
    i = 0
    while True:
        j = _longest_key(node, parts, i)
        key = ".".join(parts[i:j])
        if j == len(parts):
            node[key] = value
            return
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {shown!r}: {key!r} is {child!r}, not a section")
        node, i = child, j


def _longest_key(node: Mapping[str, Any], parts: list[str], i: int) -> int:
    """End index j of the longest parts[i:j] joined by dots that is a key of `node` (at least i+1)."""
    for j in range(len(parts), i + 1, -1):
        if ".".join(parts[i:j]) in node:
            return j
    return i + 1


def get_path(tree: Mapping[str, Any], path: str, default: Any = None) -> Any:
    node: Any = tree
    parts = path.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, Mapping):
            return default
        j = _longest_key(node, parts, i)
        key = ".".join(parts[i:j])
        if key not in node:
            return default
        node, i = node[key], j
    return node


def with_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    tree = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        set_path(tree, key, value)
    return tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------------------------------------
# Where a value came from: the file or a --set override


def render_value(value: Any) -> str:
    """A value as it would be typed after `--set key=` (YAML/JSON flow style)."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def override_labels(overrides: Mapping[str, Any], labels: Mapping[str, str] | None = None,
                    targets: Mapping[str, str] | None = None) -> dict[str, str]:
    """{target path: label} for each override: "--set KEY=VALUE" unless `labels` names the key.

    `targets` maps an override key to the path it sets when that differs (e.g. loss.tau ->
    base.loss.tau in a search space)."""
    out = {}
    for key, value in overrides.items():
        label = (labels or {}).get(key) or f"--set {key}={render_value(value)}"
        out[(targets or {}).get(key, key)] = label
    return out


def origin_of(path: str, labels: Mapping[str, str], *, parent_too: bool = False) -> str | None:
    """The label of the override that set the value at `path` (or a section holding it), or None.

    `parent_too`: an override of a key below `path` counts too (e.g. a search parameter's values)."""
    best: tuple[str, str] | None = None
    for target, label in labels.items():
        if (path == target or path.startswith(target + ".")
                or (parent_too and target.startswith(path + "."))):
            if best is None or len(target) > len(best[0]):
                best = (target, label)
    return best[1] if best else None


def attribute(problems: Iterable[Problem], labels: Mapping[str, str],
              parent_too: tuple[str, ...] = ()) -> list[Problem]:
    """Set each problem's origin from the overrides (`labels`, see override_labels) that supplied
    its value. Problems whose path starts with one of `parent_too` also match overrides below it."""
    out = []
    for p in problems:
        origin = origin_of(p.path, labels,
                           parent_too=bool(parent_too) and p.path.startswith(parent_too))
        out.append(Problem(p.source, p.path, p.message, p.value, origin) if origin else p)
    return out


def problems_header(title: str, source: str, problems: Iterable[Problem]) -> str:
    """The first line of an error: names the overrides when one of them caused a problem."""
    if any(p.origin for p in problems):
        return f"{title} ({source} with command-line overrides)"
    return title


def describe_changes(old: Any, new: Any) -> list[str]:
    """What differs between two override dicts or raw trees (dotted or nested keys), or two Spaces
    (compared by their `.overrides`): one 'dotted.key: old -> new' line per changed key, in order, a
    key missing on one side shown as '(not set)'. Empty when nothing differs."""
    fa, fb = flatten(_as_tree(old)), flatten(_as_tree(new))
    lines = []
    for key in [*fa, *(k for k in fb if k not in fa)]:
        va, vb = fa.get(key, _NOT_SET), fb.get(key, _NOT_SET)
        if not _same(va, vb):
            lines.append(f"{key}: {_show(va)} -> {_show(vb)}")
    return lines


_NOT_SET: Any = object()


def _same(a: Any, b: Any) -> bool:
    if a is _NOT_SET or b is _NOT_SET:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _show(v: Any) -> str:
    return "(not set)" if v is _NOT_SET else render_value(v)


def _as_tree(x: Any) -> Mapping[str, Any]:
    if x is None:
        return {}
    if not isinstance(x, Mapping):
        value = getattr(x, "overrides", None)
        if isinstance(value, Mapping):
            return value
        raise TypeError(f"describe_changes: expected a mapping or a Space, got {type(x).__name__}")
    return x
