"""Shared fixtures, and one process-wide setting."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

from tfkd_search.config import RunConfig, build_run_config, with_overrides

# A test run started in the background of a non-interactive shell (`pytest ... &`, some CI runners)
# inherits SIGINT ignored, and so would every CLI the tests start: their Ctrl-C tests would see a
# Ctrl-C do nothing. A handler here makes the children start with the default disposition (a Python
# handler does not survive exec; an ignored signal does), as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def make_cfg() -> Callable[..., RunConfig]:
    """Build a small CPU RunConfig (digits, tiny_cnn, 2 epochs, 1 thread) with overrides given as
    dotted keys, e.g. make_cfg({"loss.tau": 4, "schedule.epochs": 3}, method="lsr")."""

    def build(overrides: dict[str, Any] | None = None, **top: Any) -> RunConfig:
        raw: dict[str, Any] = {
            # one thread: tiny models gain nothing from more, and it avoids oversubscription
            "device": "cpu", "threads": 1, "model": "tiny_cnn", "method": "ce",
            "data": {"dataset": "digits"},
            "schedule": {"epochs": 2, "milestones": [1]},
        }
        return build_run_config(with_overrides(raw, {**top, **(overrides or {})}))

    return build
