"""Search-space builders shared by the tests (a helper module, not a test module).

BASE is a small, valid tfkd_reg run on digits with tiny_cnn on one CPU thread; `base_cfg()` varies its
schedule; `grid_params` and `search_block` build the `search:` part; `write_space` writes a space file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

BASE: dict[str, Any] = {
    "model": "tiny_cnn", "method": "tfkd_reg", "device": "cpu", "threads": 1,
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "loss": {"semantics": "paper", "tau": 4.0, "alpha": 0.5, "a": 0.9},
    "optim": {"lr": 0.1, "batch_size": 64},
    "schedule": {"epochs": 2, "milestones": [1], "warmup_epochs": 1},
}


def base_cfg(epochs: int = 2, milestones: list[int] | None = None, **top: Any) -> dict[str, Any]:
    """A copy of BASE with `epochs` epochs (one LR milestone before the last unless `milestones` is
    given) and top-level keys replaced by `top` (e.g. data={...})."""
    doc = copy.deepcopy(BASE)
    doc["schedule"] = {"epochs": epochs, "milestones": [epochs - 1] if milestones is None else milestones,
                       "warmup_epochs": 1}
    doc.update(copy.deepcopy(top))
    return doc


def grid_params(**values: list) -> dict[str, Any]:
    """`search.params` with a grid per parameter: grid_params(**{"loss.tau": [1.0, 4.0]})."""
    return {k: {"kind": "grid", "values": list(v)} for k, v in values.items()}


def search_block(params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A `search:` block: grid searcher, no early stopping, one CPU per trial, no finalists stage
    (tests of the finalists turn it on); `extra` replaces or adds keys (scheduler={...},
    max_concurrent=1, finalists={...}, ...)."""
    return {"params": params, "searcher": {"kind": "grid"}, "scheduler": {"kind": "none"},
            "resources": {"cpu": 1, "gpu": 0}, "finalists": {"top": 0}, **extra}


def write_space(path: Path, name: str, search: dict[str, Any], *, base: dict[str, Any] | None = None,
                export: dict[str, Any] | None = None) -> Path:
    """Write a space file; the export defaults to the top 2 trials, seed 0, the base's epochs."""
    b = base or BASE
    doc = {"name": name, "base": b, "search": search,
           "export": export or {"top_k": 2, "seeds": [0], "epochs": b["schedule"]["epochs"]}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
