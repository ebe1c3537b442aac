"""Atomic file writes shared by everything slimtorch puts on disk.

A reader must never see a half-written file: every file is written to a
temporary file in the same directory (so the final rename stays on one file
system), flushed and fsync'ed, then moved over the target with ``os.replace``
(atomic on POSIX and Windows), and finally the directory entry is fsync'ed so
the rename itself survives a power loss. A crash at any point leaves either the
old file or the new one, plus at worst a stray ``.<name>.*.tmp`` file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "TMP_SUFFIX"]

#: Suffix of the temporary files; readers that list a directory skip these.
TMP_SUFFIX = ".tmp"


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(target: Path) -> int:
    """The permissions ``target`` gets: those it has if it exists, else what
    ``open()`` would give a new file (0666 less the process umask)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)  # reading the umask means setting it; restored at once
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], write_fn: Callable[[IO[bytes]], Any]) -> Path:
    """Writes a file atomically: ``write_fn`` fills a binary file object.

    Args:
        path: the file to create or replace; its directory must exist.
        write_fn: called once with a binary file object opened for writing.

    Returns:
        The path written, as a ``Path``.

    If ``write_fn`` raises, the temporary file is removed, ``path`` is left as
    it was, and the exception propagates.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    if not callable(write_fn):
        raise TypeError(f"write_fn: expected a callable, got {type(write_fn).__name__}")
    target = Path(path)
    directory = target.parent
    if not directory.is_dir():
        raise ValueError(f"path: directory {str(directory)!r} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
    try:
        os.chmod(tmp_name, _file_mode(target))  # mkstemp's 0600 would make the file private
        with os.fdopen(fd, "wb") as handle:
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1) -> Path:
    """Serialises ``obj`` as strict JSON (no NaN/Infinity) and writes it atomically."""
    text = json.dumps(obj, indent=indent, allow_nan=False, sort_keys=False)
    return atomic_write_bytes(path, (text + "\n").encode("utf-8"))
