"""Where the user's model code comes from, here and in every Ray worker.

A reference's module is found, in this order, in: the folders given with `--code-dir DIR`, the current
folder, and the installed packages. The driver puts the first two on its `sys.path` (the
`tfkd-search` script does not have the current folder there). Ray workers need the same modules:

* every module and package directly in a `--code-dir` folder (`*.py` files and folders with an
  `__init__.py`) is shipped to the workers through Ray's `runtime_env` `py_modules` (uploaded once per
  job, on every node, the embedded local Ray included);
* the current folder: Ray itself puts the driver's current folder on every worker's path, which is
  right on one machine. When the search joins a cluster (`--address`), the modules the references
  name from the current folder are shipped as `py_modules` too, since other machines lack that
  folder, except inside `ray job submit --working-dir`, whose working directory already reaches
  every worker (and may not be given twice: Ray refuses a second `working_dir`, but merges
  `py_modules`);
* installed packages must be installed on every node (as tfkd-search itself is).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .modelref import TARGET

JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the driver of a submitted job


def use_code_dirs(dirs: Sequence[str]) -> list[Path]:
    """Put the `--code-dir` folders and the current folder first on this process's import path;
    returns the folders (absolute). A folder that does not exist is a ConfigError."""
    found = []
    for d in dirs:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise ConfigError(f"--code-dir {d}: {'is not a folder' if p.exists() else 'does not exist'};"
                              f" pass the folder that holds your model's module (e.g. --code-dir "
                              f"./models for ./models/mynets.py)")
        found.append(p.resolve())
    for p in [Path.cwd(), *reversed(found)]:
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    return found


def targets_in(tree: Any) -> list[str]:
    """Every `_target_` import path in a config tree (a space's base and its searched values)."""
    out: list[str] = []
    if isinstance(tree, dict):
        value = tree.get(TARGET)
        if isinstance(value, str) and not value.startswith(("torchvision:", "timm:")):
            out.append(value)
        for v in tree.values():
            out += targets_in(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            out += targets_in(v)
    return out


def py_modules(code_dirs: Iterable[Path], targets: Iterable[str], *, cluster: bool) -> list[str]:
    """The paths to ship to Ray workers as `runtime_env` `py_modules` (see the module text)."""
    ship: list[str] = []
    for d in code_dirs:
        ship += [str(p) for p in sorted(d.iterdir()) if _is_module(p)]
    if cluster and not _job_has_working_dir():
        cwd = Path.cwd().resolve()
        for target in targets:
            path = _module_path(target.split(":")[0].split(".")[0])
            if path is not None and path.is_relative_to(cwd) and str(path) not in ship:
                ship.append(str(path))
    return ship


def _is_module(p: Path) -> bool:
    if p.name.startswith((".", "_")) and p.name != "__init__.py":
        return False
    return (p.is_file() and p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())


def _module_path(top: str) -> Path | None:
    """The file (or package folder) of the top-level module `top`, or None when it is not found."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    origin = Path(spec.origin).resolve()
    return origin.parent if spec.submodule_search_locations else origin


def _job_has_working_dir() -> bool:
    try:
        job = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}")
    except json.JSONDecodeError:
        return False
    return bool((job.get("runtime_env") or {}).get("working_dir"))
