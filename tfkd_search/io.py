"""Small file helpers: atomic writes (write, fsync, rename) and safe checkpoint loading."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError

CHECKPOINT_FORMAT = "tfkd-search/1"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def ensure_writable_dir(path: str | os.PathLike[str]) -> None:
    """Create `path` and prove it is writable (root ignores permission bits, so actually write)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test-{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never half.

    The file gets the mode a plain open() would give it (or keeps the mode of the file it replaces),
    not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_parquet(df: Any, path: str | os.PathLike[str]) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str], what: str = "checkpoint") -> dict[str, Any]:
    """Load a tfkd-search checkpoint with `weights_only=True` (no code can run from the file)."""
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} {p}: file not found; pass the path of a .pt file written by "
                              f"'tfkd-search train' (run folder/checkpoint.pt)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError, AttributeError, KeyError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
        raise CheckpointError(
            f"{what} {p}: cannot be loaded ({p.stat().st_size} bytes), the file is truncated, "
            f"corrupt or not a PyTorch checkpoint ({detail}); re-create it with 'tfkd-search "
            f"train'") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise CheckpointError(
            f"{what} {p}: not a tfkd-search checkpoint (expected a dict with format "
            f"{CHECKPOINT_FORMAT!r}); train the model with 'tfkd-search train' and pass its "
            f"checkpoint.pt")
    return state
