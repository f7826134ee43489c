"""Exception types and the exit-code rule. Every error a user can cause is a `TfkdError` with a message
that names the place (file, key path or flag), the bad value and the fix; the CLI prints it without a
traceback and exits with the error's `exit_code`:

* **2 -- the input is wrong**: a config, a search space, a flag value, a path, a missing dataset, a
  corrupt or mismatched checkpoint. The user fixes the command or a file. (`ConfigError`,
  `DataError`, `CheckpointError`; argparse's own usage errors are 2 as well.)
* **3 -- the environment is wrong**: a Ray cluster or MLflow server that does not answer, GPUs asked
  for that the machine or cluster lacks, a storage folder that is not writable or not visible from
  every node. The command may be right; the machine or the services around it must change.
  (`EnvironmentProblem`)
* **1 -- the run itself failed**: every trial errored or diverged, or an unexpected error
  (`TfkdError` itself, `TrainingDiverged`, any other exception).
* **130 -- interrupted** (Ctrl-C, SIGINT): what was computed is saved and `--resume` continues it
  (`Interrupted`).

Validation problems are collected as `Problem` records (where, key path, message, bad value, and
whether a `--set` override rather than the file supplied the value) and formatted once, by
`ConfigError`, so no code has to edit formatted messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


NO_VALUE: Any = _Unset()  # Problem.value when no single bad value is worth showing


@dataclass(frozen=True)
class Problem:
    """One validation problem.

    `source` is the file (or "config"), `path` the dotted key path ("" for the whole document),
    `message` says what is wrong and how to fix it, `value` is the offending value (NO_VALUE: none
    shown), `origin` names what supplied the value when it is not the file, e.g. "--set loss.tau=-2".
    """

    source: str
    path: str
    message: str
    value: Any = NO_VALUE
    origin: str | None = None

    @property
    def where(self) -> str:
        return self.origin or self.source

    def detail(self) -> str:
        """'<path>: <message> (got <value>)', without the source."""
        got = "" if self.value is NO_VALUE else f" (got {self.value!r})"
        return f"{self.path or '(top level)'}: {self.message}{got}"

    def format(self) -> str:
        return f"{self.where}: {self.detail()}"

    def under(self, prefix: str) -> Problem:
        """The same problem with its path below `prefix` (e.g. a run config inside a space's base)."""
        if not prefix:
            return self
        return replace(self, path=f"{prefix}.{self.path}" if self.path else prefix)

    def __str__(self) -> str:
        return self.format()


class TfkdError(Exception):
    """Base class of all errors tfkd-search raises on purpose; exit code 1 (the run failed)."""

    exit_code = EXIT_RUN_FAILED


class ConfigError(TfkdError, ValueError):
    """Bad input: a config, a search space, a flag or an argument (exit code 2).

    Either a plain message, or a list of `Problem`s under a header (`ConfigError(problems=...,
    header="invalid run config")`), formatted once as the header and one indented line per problem.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str = "", *, problems: Iterable[Problem] = (),
                 header: str = "invalid input") -> None:
        self.problems: list[Problem] = list(problems)
        self.header = header
        if self.problems:
            message = header + ":\n  " + "\n  ".join(p.format() for p in self.problems)
        super().__init__(message)


class DataError(TfkdError):
    """A dataset folder is missing or incomplete (exit code 2: the user must fix a path or flag)."""

    exit_code = EXIT_BAD_INPUT


class CheckpointError(TfkdError):
    """A checkpoint is missing, corrupt, or of another architecture or class count (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class EnvironmentProblem(TfkdError):
    """The environment is wrong, not the input (exit code 3): a Ray cluster or MLflow server that does
    not answer, GPUs the machine or cluster lacks, a storage folder not writable or not visible from
    the nodes."""

    exit_code = EXIT_ENVIRONMENT


class TrainingDiverged(TfkdError):
    """The training loss became NaN or infinite."""

    exit_code = EXIT_RUN_FAILED

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} in epoch {epoch}")
        self.epoch = epoch
        self.loss = loss


class Interrupted(TfkdError):
    """The user stopped the run (Ctrl-C); the message says what was saved (exit code 130)."""

    exit_code = EXIT_INTERRUPTED
