"""Writing tgpool's cache files safely, and warning once when the cache folder lets us down.

Both caches (generated kernel sources in codegen.py, tuned configs in tuning/cache.py) write through
``write_atomic``: the bytes go to a temporary file in the same folder, and only a complete file
replaces the old one (``os.replace``). A failed write (a read-only folder, a full disk) removes
its temporary file and leaves the existing file as it was. A cache problem never fails pooling:
callers catch the ``OSError``, keep what they computed in memory, and call ``warn_once`` so the
user hears about each cause once per process, not once per call.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path


class TgpoolCacheWarning(RuntimeWarning):
    """A tgpool cache file or folder could not be read or written; tgpool kept going (see the
    README's Troubleshooting section)."""


_warned: set = set()


def warn_once(cause, message: str, stacklevel: int = 3) -> bool:
    """Warn with ``message`` unless ``cause`` (any hashable) was warned about before in this
    process; whether it warned."""
    if cause in _warned:
        return False
    _warned.add(cause)
    warnings.warn(message, TgpoolCacheWarning, stacklevel=stacklevel)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def free_backup(path: Path) -> Path:
    """The first ``<name>.bad-N`` next to ``path`` that does not exist."""
    n = 1
    while path.with_name(f"{path.name}.bad-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}.bad-{n}")


def write_atomic(path: Path, data: bytes, *, set_aside: bool = False) -> Path | None:
    """Replace ``path`` by a file holding ``data``, never by part of it: written to a temporary
    file in the same folder, synced, then renamed over ``path``. ``set_aside``: the file now at
    ``path`` is first renamed to ``<name>.bad-N`` (kept, never deleted), and only once the new
    bytes are safely on disk. Returns that backup's path (None when nothing was set aside).
    Raises OSError with the temporary file removed and ``path`` untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    backup = None
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if set_aside and path.exists():
            backup = free_backup(path)
            os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return backup
