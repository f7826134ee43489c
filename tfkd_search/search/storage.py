"""Where a search keeps its results: the local run folder (new or resumed) and, for an object-store
`--storage`, the copy of the results into the bucket at the end."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from ..overrides import describe_changes
from ..errors import ConfigError, EnvironmentProblem
from ..io import ensure_writable_dir
from ..runfolder import RunFolder
from ..spaces import Space


def space_digest(space: Space) -> str:
    body = json.dumps({"base": space.base_dict(), "search": space.spec.search.model_dump(mode="json")},
                      sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def is_uri(path: str) -> bool:
    return "://" in path


def is_object_store(storage: str) -> bool:
    return is_uri(storage) and not storage.startswith("file://")


def join_uri(uri: str, name: str) -> str:
    """uri/name, keeping a query string (s3://b/p?endpoint_override=... -> s3://b/p/name?...)."""
    base, sep, query = uri.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def upload_results(run_dir: Path, uri: str) -> None:
    """Copy the local results folder (trials.parquet, best/, report/, ...) to `uri` (s3://, gs://)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(run_dir), path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def prepare_run_dir(space: Space, storage: str, name: str, resume: bool,
                    results_dir: str | None = None) -> tuple[str, RunFolder, dict[str, Any]]:
    """Check the run folder for a new or resumed search; returns (Ray's storage, run folder, state).

    The run folder is always local: the storage folder itself, or for an object store a local
    results folder (`results_dir`/NAME, default ./tfkd_runs/NAME) that is uploaded at the end while
    Ray keeps its experiment state and checkpoints in the bucket.
    """
    if is_object_store(storage):
        root = Path(results_dir or "tfkd_runs").expanduser().resolve()
        ray_storage = storage.rstrip("/")
    else:
        root = Path(storage.removeprefix("file://")).expanduser().resolve()
        ray_storage = str(root)
    folder = RunFolder(root / name)
    run_dir = folder.path
    if resume:
        if not folder.state_path.exists():
            raise ConfigError(f"--resume: no search to resume in {run_dir} (no {folder.state_path.name}); "
                              f"check --storage and --name, or drop --resume to start a new search")
        state = folder.read_state(strict=True)
        if state.get("space_digest") != space_digest(space):
            changed = describe_changes(state.get("space_raw") or {}, space.raw) \
                if state.get("space_raw") else []
            if len(changed) > 8:
                changed = [*changed[:8], f"... and {len(changed) - 8} more"]
            what = ("; what differs (searched -> now): " + "; ".join(changed)) if changed else \
                f" (digest {state.get('space_digest')} there, {space_digest(space)} now)"
            raise ConfigError(
                f"--resume: {run_dir} was searched with other settings than {space.source} with "
                f"these --set values{what}; resume with the same space file and --set values, or "
                f"pick a new --name")
        return ray_storage, folder, state
    if folder.state_path.exists() or (run_dir / "tuner.pkl").exists():
        raise ConfigError(f"{run_dir} already holds a search; pass --resume to continue it or "
                          f"--name NEW to start another")
    try:
        ensure_writable_dir(run_dir)
    except OSError as exc:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise EnvironmentProblem(f"--storage {storage}: cannot write the run folder {run_dir} "
                                 f"({exc.strerror or exc}); pass a writable --storage") from None
    return ray_storage, folder, {"key": f"{name}-{uuid.uuid4().hex[:8]}"}


def resolve_paths(base: dict[str, Any]) -> dict[str, Any]:
    """Relative paths are relative to where the user runs the command, not to a trial's folder."""
    data = base.setdefault("data", {})
    data["data_dir"] = os.path.abspath(data.get("data_dir") or "data")
    if data.get("cache_dir"):
        data["cache_dir"] = os.path.abspath(os.path.expanduser(data["cache_dir"]))
    teacher = base.get("teacher")
    if teacher and teacher.get("checkpoint") and not is_uri(teacher["checkpoint"]):
        teacher["checkpoint"] = os.path.abspath(teacher["checkpoint"])
    return base
