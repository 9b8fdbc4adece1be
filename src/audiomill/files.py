"""Writing a file whole: to a temporary name beside it, flushed to disk, then renamed into place, so that a
reader (or a run resumed after a kill) sees the old file or the new one, never a part."""

from __future__ import annotations

import os


def write_atomic(path: str, data: str | bytes, clear_left: bool = False) -> None:
    """``data`` into ``path`` through ``<path>.tmp<pid>`` and a rename. With ``clear_left``, the temporary
    files a killed writer left beside it go first (only where no other process may be writing ``path``)."""
    folder, name = os.path.split(path)
    if clear_left:
        for left in os.listdir(folder or "."):
            if left.startswith(name + ".tmp"):
                os.remove(os.path.join(folder, left))
    tmp = f"{path}.tmp{os.getpid()}"
    if isinstance(data, str):
        handle = open(tmp, "w", encoding="utf-8", newline="")
    else:
        handle = open(tmp, "wb")
    with handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
