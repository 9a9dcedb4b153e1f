"""Atomic writes: a temp file in the same folder, fsync, then rename, so a reader never sees half a file."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from framework.errors import CheckpointError


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    _atomic(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False), "w")


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text), "w")


def save_torch(path: Path, obj: Any) -> None:
    _atomic(path, lambda f: torch.save(obj, f), "wb")


def _looks_like_torch(path: Path) -> bool:
    """torch.save writes a zip archive; files from before torch 1.6 are a pickle (protocol 2+: 0x80)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def load_torch(path: Path) -> Any:
    """Load a checkpoint holding only tensors and plain containers.

    ``weights_only=True`` unpickles through torch's allow-list, so a crafted file cannot run code;
    anything it refuses, and any truncated or corrupt file, becomes one CheckpointError. A file that
    is neither of torch's formats (a zip archive, or a pickle) is named as such, not by what torch's
    parser tripped over on it.
    """
    path = Path(path)
    if path.is_file() and not _looks_like_torch(path):
        raise CheckpointError(f"refusing checkpoint {path}: not a torch checkpoint (neither a torch.save zip "
                              "archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ...: all mean "do not use this file"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in reason:
            what = "it holds objects other than tensors and plain containers, refused unread"
        else:
            what = f"not a readable torch checkpoint ({type(err).__name__}: {reason})"
        raise CheckpointError(f"refusing checkpoint {path}: {what}") from None
