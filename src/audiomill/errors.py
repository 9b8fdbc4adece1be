"""Exceptions that mean the run (or one shard) cannot go on.

Problems with one file never raise out of a shard: they become error records.
"""


class UsageError(Exception):
    """A bad flag, a missing input or an unusable output folder: one line, before any work."""


class WeightsNotFound(UsageError):
    """No weights could be found for a codec."""


class ShardError(Exception):
    """A whole shard cannot be read (a corrupt archive, an unreadable manifest)."""


class DecodeError(Exception):
    """One file is not usable audio; becomes an error record."""
