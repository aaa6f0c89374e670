"""Writing files so that nothing is ever half-written: checkpoints and downloads share this.

A file is written under a temporary name in its own folder, flushed and synced to disk, given a
normal file's permissions, renamed over the real name (an atomic step on POSIX and Windows), and
the folder is synced so that the rename itself survives a crash. A reader sees the old file or
the new one, never a part; a failure leaves no temporary file behind.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile

__all__ = ["atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path):
    """``with atomic_write(path) as f:`` write bytes to ``f`` (``f.name`` is the temporary path, for
    a check before the file takes its real name); on leaving the block without an error the file
    becomes ``path``. Folders are created as needed."""
    path = pathlib.Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".part-{path.name}-")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())          # mkstemp makes 0600; a normal file is 0666 - umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if os.name == "posix":                         # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
