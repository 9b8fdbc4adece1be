"""Exceptions that mean the run (or one shard) cannot go on, and the exit status of a run.

Problems with one file never raise out of a shard: they become error records.
"""

import errno

# The exit status of every command (the CLI only passes these on).
EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_FILE_ERRORS, EXIT_INCOMPLETE = 0, 1, 2, 3, 4


class UsageError(Exception):
    """A bad flag, a missing input or an unusable output folder: one line, before any work."""


class WeightsNotFound(UsageError):
    """No weights could be found for a codec."""


class ShardError(Exception):
    """A whole shard cannot be read (a corrupt archive, an unreadable manifest)."""


class DecodeError(Exception):
    """One file is not usable audio; becomes an error record."""


class StageBroken(Exception):
    """A stage fails on every file it is given: a bug, not bad files. Stops the run with its traceback."""


class DiskFull(Exception):
    """No space is left where the run writes: the run stops; what is written stays, resumable."""

    def __init__(self, out: str) -> None:
        super().__init__(f"no space left on the disk of {out}")
        self.out = out


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
