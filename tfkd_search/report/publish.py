"""Writing the report into the run folder and logging it to the search's MLflow parent run."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import EnvironmentProblem
from .data import RunData, load_run
from .page import build_report

REPORT_DIR = "report"
INDEX = "index.html"

Warn = Callable[[str], None]


def _stderr_warn(msg: str) -> None:
    print(f"tfkd-search: warning: {msg}", file=sys.stderr, flush=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_report(run_dir: str | os.PathLike[str], *, log_mlflow: bool = True,
                 warn: Warn | None = None) -> Path:
    """Write RUN_DIR/report/index.html and its PNGs; returns the page's path.

    With `log_mlflow` the figures and the page are also logged as artifacts (folder `report`) of the
    search's MLflow parent run; an unreachable server or a missing run only gives a warning.
    """
    from ..io import atomic_write_bytes, atomic_write_text

    warn = warn or _stderr_warn
    data = load_run(run_dir)
    page, pngs = build_report(data)
    out = data.run_dir / REPORT_DIR
    try:
        out.mkdir(exist_ok=True)
        for old in out.glob("*.png"):  # figures of an earlier report that this one has no data for
            if old.name not in pngs:
                old.unlink()
        for fname, png in pngs.items():
            atomic_write_bytes(out / fname, png)
        atomic_write_text(out / INDEX, page)
        mode = 0o666 & ~_umask()  # a report is for sharing
        for f in [*pngs, INDEX]:
            os.chmod(out / f, mode)
    except OSError as exc:
        raise EnvironmentProblem(f"report: cannot write {out} ({exc.strerror or exc}); the run folder must "
                          f"be writable") from None
    if log_mlflow:
        log_report(data, [out / f for f in pngs] + [out / INDEX], warn)
    return out / INDEX


def report_files(index: Path) -> list[Path]:
    """The files of a written report: its PNGs, then the page."""
    return [*sorted(index.parent.glob("*.png")), index]


@contextmanager
def _quick_http() -> Iterator[None]:
    """Few retries and a short timeout: an on-demand report must not hang on a dead server."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    saved = {k: os.environ.get(k) for k in keys}
    for k, v in keys.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def log_report(data: RunData, files: list[Path], warn: Warn) -> bool:
    """Log the report files to the parent run recorded in search.json; False (with a warning) if not."""
    uri, parent = data.state.get("mlflow_uri"), data.state.get("parent_run_id")
    if not uri or not parent:
        warn(f"{data.run_dir / 'search.json'} names no MLflow parent run; the report was not logged "
             f"to MLflow")
        return False
    if str(uri).startswith("sqlite:///"):
        db = Path(str(uri)[len("sqlite:///"):])
        if not db.exists():  # MLflow would create an empty database there
            warn(f"MLflow database {db} does not exist (moved?); the report was not logged to MLflow")
            return False
    try:
        from ..tracking import check_reachable, client as mlflow_client

        check_reachable(str(uri))
        with _quick_http():
            client = mlflow_client(str(uri))
            client.get_run(parent)
            for f in files:
                client.log_artifact(parent, str(f), REPORT_DIR)
    except Exception as exc:  # noqa: BLE001 - the report is written; MLflow is a bonus
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        warn(f"could not log the report to MLflow at {uri} (parent run {parent}): {msg}")
        return False
    return True
