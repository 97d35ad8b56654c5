"""Replacing a file so that a crash, ``kill -9`` or a full disk never leaves half of one.

:func:`write_bytes` is the one path every image (``imageio.write_image``) and figure takes: the bytes
go to a hidden temporary file in the target's folder (same file system, so the rename is atomic),
every byte is written with ``os.write`` until none is left (a short write on a nearly full disk is
retried, so the disk's ``ENOSPC`` surfaces instead of a silently cut file: Pillow's own file writer
ignores short writes), the file is flushed to disk, its size checked against the bytes given, and
only then renamed over the target.

Temporary files are named ``.<name>.<pid>-<random>.tmp``. A process killed mid-write leaves its own
behind; :func:`remove_stale_temps` (run by every write into that folder) removes those whose process
is gone, so the next run into the folder cleans up after the killed one, and never touches the
temporary file of a writer that is still running.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from pathlib import Path

__all__ = ["write_bytes", "temp_path", "remove_stale_temps", "disk_full", "LOGIT_PREFIX"]

# .<name>.<pid>-<12 hex>.tmp: what temp_path makes
_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{12}\.tmp$")
# .<name>.<12 hex>.tmp: what rediffuse 0.x wrote before the pid was in the name; such a file older
# than an hour is left from a killed run (a write takes seconds)
_OLD_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
_OLD_AGE_S = 3600
#: Prefix of the scratch folders for weight maps' logits (``maps.logit_store``): ``<prefix><pid>-...``
LOGIT_PREFIX = ".rediffuse-logits-"
_LOGITS = re.compile(rf"^{re.escape(LOGIT_PREFIX)}(?P<pid>\d+)-")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(e: BaseException) -> bool:
    """Whether ``e`` is the file system saying it has no room left (full disk, or quota)."""
    return isinstance(e, OSError) and e.errno in _NO_SPACE


def temp_path(path: Path) -> Path:
    """A fresh hidden temporary name next to ``path``, carrying this process's id."""
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process (or no way to tell): leave its files alone
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and logit folders that a killed rediffuse process left in
    ``folder`` (those of live processes stay); returns what was removed. Never raises."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        try:
            m = _TEMP.match(entry.name) or _LOGITS.match(entry.name)
            if m is not None:
                stale = not _alive(int(m["pid"]))
            else:
                stale = bool(_OLD_TEMP.match(entry.name)) and now - entry.stat().st_mtime > _OLD_AGE_S
            if not stale:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def _write_all(fd: int, data: memoryview) -> None:
    """``os.write`` until every byte is out: a short write is retried, so a full disk raises."""
    while data:
        n = os.write(fd, data)
        if n <= 0:  # no progress and no error: treat as the full disk it nearly always is
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        data = data[n:]


def write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Replace ``path`` with ``data`` atomically (see the module docstring). Missing parent folders
    are created. A failure raises a one-line ``OSError`` naming the file (``errno`` kept; "the disk
    is full" for ``ENOSPC``), removes the temporary file and leaves an existing ``path`` unchanged.
    Returns the path written."""
    path = Path(path)
    view = memoryview(data).cast("B")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = f"cannot write {path}: cannot create folder {parent} ({e.strerror or e})"
        raise _error(OSError, e.errno, why) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _error(PermissionError, errno.EACCES, f"cannot write {path}: folder {parent} is not writable")
    remove_stale_temps(parent)
    tmp = temp_path(path)
    try:
        # 0o666: the final file gets the usual umask-derived permissions
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise _error(OSError, e.errno, f"cannot write {path}: {_reason(e)}") from None
    try:
        try:
            _write_all(fd, view)
            os.fsync(fd)
            written = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if written != len(view):  # a layer that claimed bytes it did not keep
            raise OSError(errno.ENOSPC, f"only {written} of {len(view)} bytes reached it")
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno is not None:
            kept = f" and the existing {path.name} is unchanged" if path.exists() else ""
            raise _error(OSError, e.errno, f"cannot write {path}: {_reason(e)}; nothing was written{kept}") from None
        raise
    return path


def _reason(e: OSError) -> str:
    if disk_full(e):
        detail = e.strerror if e.strerror and e.strerror.startswith("only ") else ""
        return "the disk is full" + (f" ({detail})" if detail else "")
    return e.strerror or str(e)


def _error(kind: type[OSError], code: int | None, message: str) -> OSError:
    """``kind(message)`` with ``errno`` set: ``str()`` is then the message alone, one line without
    the "[Errno 28]" that ``OSError(code, message)`` would put before it."""
    err = kind(message)
    err.errno = code
    return err
