"""Atomic file writes shared by everything slimtorch puts on disk.

A reader must never see a half-written file: every file is written to a
temporary file in the same directory (so the final rename stays on one file
system), flushed and fsync'ed, then moved over the target with ``os.replace``
(atomic on POSIX and Windows), and finally the directory entry is fsync'ed so
the rename itself survives a power loss. A crash at any point leaves either the
old file or the new one, plus at worst a stray ``.<name>.*.tmp`` file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
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


def _create_temporary(directory: Path, name: str) -> tuple[int, str]:
    """A new, empty temporary file next to ``name``: its descriptor and path.

    Created with mode 0666 so the kernel applies the process umask, as
    ``open()`` does for a new file; the umask is never read or changed."""
    for _ in range(100):
        tmp_name = os.path.join(directory, f".{name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
        try:
            return os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), \
                tmp_name
        except FileExistsError:
            continue
    raise FileExistsError(f"path: no free temporary name in {str(directory)!r}")


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
    fd, tmp_name = _create_temporary(directory, target.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            with contextlib.suppress(FileNotFoundError):  # a new file: the kernel applied the umask
                os.chmod(tmp_name, target.stat().st_mode & 0o7777)  # a replaced file keeps its permissions
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
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
