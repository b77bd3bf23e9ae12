"""Atomic writes of large files (arrays, checkpoints) streamed by a writer function, with the project's
output policy (``simswap_trt.files``): umask modes, missing folders created, ``OutputError`` on failure."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from simswap_trt.errors import OutputError
from simswap_trt.files import ensure_folder, file_mode


def save_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a temporary file next to ``path``, then rename it into place; an interrupted
    write leaves any previous file intact."""
    path = Path(path)
    ensure_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            os.fchmod(f.fileno(), file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
        raise
