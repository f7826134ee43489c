"""Small file helpers: atomic writes (write, fsync, rename) and safe checkpoint loading."""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
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
    p = Path(path)
    state = _load_file(p, what, "a .pt file written by 'tfkd-search train' (run folder/checkpoint.pt)")
    if not is_tfkd_checkpoint(state):
        raise CheckpointError(
            f"{what} {p}: not a tfkd-search checkpoint (expected a dict with format "
            f"{CHECKPOINT_FORMAT!r}); train the model with 'tfkd-search train' and pass its "
            f"checkpoint.pt")
    return state


def is_tfkd_checkpoint(state: Any) -> bool:
    return isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and "model" in state


# containers other tools save a state_dict in, and the prefixes DataParallel / wrappers add to its keys
_CONTAINERS = ("state_dict", "model", "model_state_dict", "net")
_PREFIXES = ("module.", "model.")


def load_weights(path: str | os.PathLike[str], what: str = "teacher checkpoint"
                 ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The weights in `path`, read with `weights_only=True`: (state_dict, the tfkd-search checkpoint
    or None).

    Takes a tfkd-search checkpoint, a plain state_dict (names -> tensors), or a dict holding one under
    state_dict/model/model_state_dict/net; a `module.` or `model.` prefix on every key is dropped."""
    import torch

    p = Path(path)
    state = _load_file(p, what, "a checkpoint.pt written by 'tfkd-search train' or a state_dict saved "
                                "with torch.save")
    if is_tfkd_checkpoint(state):
        return state["model"], state
    weights = state
    if isinstance(state, dict) and not _is_state_dict(state):
        weights = next((state[k] for k in _CONTAINERS if _is_state_dict(state.get(k))), None)
    if not _is_state_dict(weights):
        keys = ", ".join(map(repr, list(state)[:8])) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{what} {p}: holds no weights: expected a tfkd-search checkpoint, a "
                              f"state_dict (parameter names -> tensors) or a dict with one under "
                              f"{'/'.join(_CONTAINERS)}; found {keys}; save it with "
                              f"torch.save(model.state_dict(), PATH)")
    assert isinstance(weights, dict)
    for prefix in _PREFIXES:
        if all(str(k).startswith(prefix) for k in weights):
            weights = {str(k)[len(prefix):]: v for k, v in weights.items()}
    return {k: v for k, v in weights.items() if isinstance(v, torch.Tensor)}, None


def _is_state_dict(x: Any) -> bool:
    import torch

    return (isinstance(x, dict) and bool(x) and all(isinstance(k, str) for k in x)
            and any(isinstance(v, torch.Tensor) for v in x.values()))


def _load_file(p: Path, what: str, expected: str) -> Any:
    """torch.load(weights_only=True) of `p` on the CPU; CheckpointError says why a file cannot be read."""
    import pickle

    import torch

    if not p.is_file():
        raise CheckpointError(f"{what} {p}: file not found; pass the path of {expected}")
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise CheckpointError(f"{what} {p}: cannot read the file ({exc.strerror or type(exc).__name__}"
                              f"); check its permissions and that the disk is reachable") from None
    try:
        with warnings.catch_warnings():  # e.g. pickle-protocol notes about a file refused below
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, KeyError, IndexError, TypeError) as exc:
        raise CheckpointError(
            f"{what} {p}: cannot be loaded ({size} bytes; {_unreadable_reason(exc, size)}): the "
            f"file is truncated, corrupt or not a PyTorch checkpoint; re-create it with "
            f"'tfkd-search train' or torch.save") from None


def _unreadable_reason(exc: BaseException, size: int) -> str:
    """A short, clean reason why torch.load(weights_only=True) refused a file.

    PyTorch's own message is long, may be cut, and advises loading with weights_only=False, which
    can run code from the file: tfkd-search never does that, so it never repeats the advice."""
    import pickle

    text = str(exc)
    if size == 0:
        return "the file is empty"
    if isinstance(exc, zipfile.BadZipFile) or "zip archive" in text or "central directory" in text:
        return "its zip archive is incomplete or damaged"
    if isinstance(exc, (EOFError, OSError)):  # OSError: e.g. a seek past the end of a cut file
        return "the data ends early or is damaged"
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in text.lower():
        return ("it holds Python objects beyond tensors and plain data, which are never loaded "
                "since that could run code from the file")
    return "its contents are not PyTorch's checkpoint format"
