"""Progress: a live bar on a terminal, plain periodic log lines elsewhere (SLURM logs)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any

log = logging.getLogger("audiomill")


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_audio(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 3600 else f"{seconds / 3600:.2f} h"


class Progress:
    """Counts files, errors, audio and shards from worker events, and shows them."""

    def __init__(self, total_shards: int, mode: str = "auto", interval: float = 30.0) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.interval = interval
        self.total_shards = total_shards
        self.shards_done = 0
        self.files = 0
        self.errors = 0
        self.audio_seconds = 0.0
        self.started = time.time()
        self._last_log = self.started
        self._said_first = False
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total_shards, unit="shard", dynamic_ncols=True, file=sys.stderr)

    @property
    def realtime_factor(self) -> float:
        elapsed = time.time() - self.started
        return self.audio_seconds / elapsed if elapsed > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.shards_done}/{self.total_shards} shards complete, {self.files} files, {self.errors} errors, "
            f"{format_audio(self.audio_seconds)} audio, {self.realtime_factor:.1f}x real time, "
            f"elapsed {format_duration(time.time() - self.started)}"
        )

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.files += event.get("files", 0)
            self.errors += event.get("errors", 0)
            self.audio_seconds += event.get("audio_seconds", 0.0)
        elif kind == "shard" and event.get("status") in ("done", "complete"):  # not held or failed ones
            self.shards_done += 1
            if self._bar is not None:
                self._bar.update(1)
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"{self.files} files, {self.errors} err, {format_audio(self.audio_seconds)}, "
                f"{self.realtime_factor:.1f}x RT",
                refresh=False,
            )
            self._bar.refresh()
        elif self.mode == "log" and (time.time() - self._last_log >= self.interval or self._first(event)):
            self._last_log = time.time()
            log.info("progress: %s", self.summary())

    def _first(self, event: dict[str, Any]) -> bool:
        """The first files written: said at once (then every ``interval``), so a run shows it works."""
        if self._said_first or event.get("event") != "progress" or not (self.files or self.errors):
            return False
        self._said_first = True
        return True

    def logging_redirect(self):
        """While the bar is live, log lines go above it instead of through it."""
        if self._bar is None:
            return contextlib.nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
