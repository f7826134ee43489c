"""Progress within a slow epoch: drawn on a terminal, silent in logs and CI."""

from __future__ import annotations

import io

from tfkd_search.runs import StepProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _epoch(progress: StepProgress, steps: int) -> None:
    for step in range(1, steps + 1):
        progress(step, steps)


def test_a_slow_epoch_on_a_terminal_shows_its_steps():
    out = Terminal()
    _epoch(StepProgress(out, after=0.0, every=0.0), 5)
    text = out.getvalue()
    assert "step 2/5" in text and "step 4/5" in text and "s left in this epoch" in text
    assert text.endswith("\r\033[K")  # the line is cleared before the epoch's summary is printed


def test_a_fast_epoch_shows_nothing():
    out = Terminal()
    _epoch(StepProgress(out, after=60.0), 50)
    assert out.getvalue() == ""


def test_logs_and_ci_get_no_progress_lines():
    out = io.StringIO()  # not a terminal: a log file or CI's captured output
    _epoch(StepProgress(out, after=0.0, every=0.0), 5)
    assert out.getvalue() == ""
