"""Exception types. Every error a user can cause is a `TfkdError` with a message that names the place
(file, key path or flag), the bad value and the fix; the CLI prints it without a traceback."""

from __future__ import annotations


class TfkdError(Exception):
    """Base class of all errors tfkd-search raises on purpose."""

    exit_code = 1


class ConfigError(TfkdError, ValueError):
    """Bad input: a config, a search space, a flag or an argument (CLI exit code 2)."""

    exit_code = 2


class DataError(TfkdError):
    """A dataset folder is missing or incomplete (CLI exit code 2: the user must fix a path or flag)."""

    exit_code = 2


class CheckpointError(TfkdError):
    """A checkpoint is missing, corrupt, or of another architecture or class count (exit code 2)."""

    exit_code = 2


class TrainingDiverged(TfkdError):
    """The training loss became NaN or infinite."""

    exit_code = 1

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} in epoch {epoch}")
        self.epoch = epoch
        self.loss = loss
