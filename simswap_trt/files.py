"""The output policy of every command that writes.

* ``check_output`` decides before any work whether a path may be written: never over an input of the
  same run, an existing output only with ``overwrite``, and only where a folder exists or can be made
  and written. Callers skip (and report) the outputs it answers False for.
* ``write_atomic`` writes a temporary file in the destination folder and renames it into place, so a
  reader never sees a partial file and an interrupted write leaves the old file intact. Files get the
  mode the umask gives (0644 under umask 022), as a plain ``open`` would, not the temporary file's 0600.
* ``staging_folder`` is the same for a folder written whole (a bundle): built next to its destination,
  then renamed; mode from the umask (0755 under 022), not ``mkdtemp``'s 0700.
* ``temporary_path`` names the hidden file a writer that opens its output by name (FFmpeg) writes before
  renaming it into place: ``.NAME.HOST-PID-RANDOM.partial.SUFFIX``, so that ``remove_stale_temporaries``
  (with ``host_temporaries``) can tell the temporaries of processes of this host that are gone (killed)
  from those still being written. ``write_atomic_with`` and the video writer name theirs so and clean a
  folder's stale ones before they write there.
* ``terminate_as_interrupt`` makes SIGTERM (``kill``, systemd, Kubernetes, Ray) raise ``Terminated``, a
  ``KeyboardInterrupt``, in the main thread: every writer's Ctrl-C cleanup (``except BaseException``:
  delete the temporary) runs for it too. Both command-line tools install it for every command; their
  exit status is 130 after Ctrl-C and 143 after SIGTERM.

Every OS error about an output becomes one ``OutputError`` naming the path.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from simswap_trt.errors import OutputError


def current_umask() -> int:
    """The process umask. Read from /proc where available: setting and restoring it is not thread-safe."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    return 0o777 & ~current_umask()


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Inputs:
    """The files a run reads, by identity (device, inode: hard links and symbolic links included), so that
    no output of the run lands on one of them. Build it once for many ``check_output`` calls."""

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self._ids = {i for i in map(_identity, map(Path, paths)) if i is not None}

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, Path)) and _identity(Path(path)) in self._ids


def check_output(path: str | Path, inputs: Inputs | Iterable[str | Path] = (), overwrite: bool = False) -> bool:
    """Whether ``path`` will be written: True if it may be, False if it exists and ``overwrite`` is off
    (the caller skips it and says so). Raises ``OutputError`` if it is one of ``inputs``, is a folder, or
    sits where no folder can be created or written. Creates nothing."""
    path = Path(path)
    inputs = inputs if isinstance(inputs, Inputs) else Inputs(inputs)
    if path in inputs:
        raise OutputError(f"{path} is also an input of this run; inputs are never overwritten: choose another output")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name as the output")
    folder = path.parent
    while not folder.exists():  # the nearest existing folder must let us create the missing ones
        if folder.is_symlink():
            raise OutputError(f"cannot create {path}: {folder} is a broken symbolic link")
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot create {path}: {folder} is a file, not a folder")
    try:  # a real probe: permission bits do not tell for root, read-only mounts or special file systems
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {path}: the folder {folder} is not writable ({_reason(exc)})") from None
    return overwrite or not path.exists()


def ensure_folder(folder: str | Path) -> Path:
    """Create ``folder`` and its parents if missing (modes from the umask); ``OutputError`` if impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot create the folder {folder}: a file of that name exists") from None
    except OSError as exc:
        raise OutputError(f"cannot create the folder {folder}: {_reason(exc)}") from None
    return folder


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM under ``terminate_as_interrupt``."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread (the previous handler is restored
    after it). Does nothing outside the main thread, where Python cannot install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame) -> None:
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
_TEMPORARY = re.compile(rf"^\..+\.{_HOST}-(\d+)-[0-9a-f]{{8}}\.partial(\.[^.]*)?$")


def temporary_path(output: str | Path) -> Path:
    """A new hidden name next to ``output`` with the same suffix (tools that pick a format by the suffix
    still see it), recording this host and process (see ``remove_stale_temporaries``)."""
    output = Path(output)
    return output.with_name(f".{output.stem}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.partial{output.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def host_temporaries(folder: str | Path) -> dict[Path, int]:
    """The temporaries (from ``temporary_path``) in ``folder`` made on this host, with their process ids."""
    folder = Path(folder)
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return {}
    return {folder / name: int(m.group(1)) for name in names if (m := _TEMPORARY.match(name))}


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries (from ``temporary_path``) in ``folder`` left by processes of this host that
    no longer run (killed before they could clean up); returns them. Those of running processes and of
    other hosts (a shared folder) are left alone."""
    removed = []
    for path, pid in host_temporaries(folder).items():
        if not _alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


_cleaned: set[Path] = set()  # folders write_atomic_with has cleaned in this process


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with the umask's file mode, creating missing folders."""
    write_atomic_with(path, lambda f: f.write(data))


def write_atomic_with(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a temporary file next to ``path``, then rename it into place with the umask's
    file mode, creating missing folders; an interrupted write leaves any previous file intact. For large
    outputs streamed by a writer (arrays, checkpoints)."""
    path = Path(path)
    ensure_folder(path.parent)
    if path.parent not in _cleaned:  # once per folder: a listing per file would be slow in large folders
        remove_stale_temporaries(path.parent)
        _cleaned.add(path.parent)
    tmp = temporary_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            os.fchmod(f.fileno(), file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
        raise


def staging_folder(destination: str | Path) -> Path:
    """A new empty folder next to ``destination`` (hidden name, umask mode) to build it in and then rename
    into place; the caller removes it on failure."""
    destination = Path(destination)
    ensure_folder(destination.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
        staging.chmod(folder_mode())
    except OSError as exc:
        raise OutputError(f"cannot create {destination}: {_reason(exc)}") from None
    return staging


def replace_folder(staging: Path, destination: Path) -> None:
    """Move a complete ``staging`` folder (from ``staging_folder``) to ``destination``. An existing
    destination is renamed aside first and removed only once the new one is in place, so a failed rename
    never loses the old one."""
    import shutil

    if not destination.exists():
        staging.rename(destination)
        return
    old = staging.with_name(staging.name + ".old")
    destination.rename(old)
    staging.rename(destination)
    shutil.rmtree(old)
