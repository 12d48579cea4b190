"""The cache's folder, and how a file gets into it without ever serving a half-written one.

    cache_dir()               KDLIB_CACHE, else ~/.cache/kdlib
    temporary_name(path, t)   a temporary file beside path, named for one writer (token t)
    reserve(path, size)       make the file with all its bytes on disk now, or raise OSError
    unwritable(error, path)   the OSError to raise or report when a cache file cannot be written
    discard(path)             remove a temporary file if it is there (never raises)

Every cache file is written under a temporary name of its own writer, then renamed (atomic on one
file system). Two processes filling the same entry at once each write their own file, and whichever
rename comes last leaves a whole file: both hold the same content, since the name is a content key.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Optional

__all__ = ["cache_dir", "temporary_name", "reserve", "unwritable", "discard"]

_CHUNK = 1 << 24  # bytes written at a time where the file system cannot allocate in one call


def cache_dir() -> Path:
    """Where kdlib keeps downloads and checkpoints: KDLIB_CACHE, else ~/.cache/kdlib."""
    root = os.environ.get("KDLIB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kdlib"
    return Path(root)


def temporary_name(path: Path, token: Optional[str] = None) -> Path:
    """path.<token>.tmp: the file one writer fills before renaming it to path.

    token: shared by the processes of one run that write one file together (kdlib.distributed);
    by default a fresh random one, so no two writers ever share a temporary file.
    """
    return path.with_name(f"{path.name}.{token or secrets.token_hex(8)}.tmp")


def reserve(path: Path, size: int) -> None:
    """Create path with `size` bytes allocated on disk (zeros), or raise OSError saying how much is needed.

    A memory map over a sparse file gets its disk blocks only when a page is written; on a full
    disk that write kills the process with SIGBUS. Allocating every block first turns a full disk
    into an OSError here, before any work is done.
    """
    try:
        with open(path, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                for start in range(0, size, _CHUNK):  # a file system without fallocate: write the zeros
                    f.write(bytes(min(_CHUNK, size - start)))
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        discard(path)
        raise unwritable(e, path, size) from e


def unwritable(error: OSError, path: Path, size: Optional[int] = None) -> OSError:
    """An OSError of the same errno that names the file, the bytes needed and the bytes free."""
    need = f"; {size:,} bytes needed" if size is not None else ""
    try:
        free = f", {shutil.disk_usage(path.parent).free:,} free"
    except OSError:
        free = ""
    return type(error)(error.errno, f"cannot write the cache file {path}: {error.strerror or error}{need}{free} "
                                    f"(set KDLIB_CACHE to a folder with room)")


def discard(path: Path) -> None:
    """Remove path if it is there; a path that cannot be there (its folder is missing or a file) is fine too."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
