"""The --jsonl sink: one JSON object per stored reading, a line each, to a file or stdout.

Never fatal, never a truncated line: a batch goes out in one append, and when
the write fails (a full disk, an I/O error) the file is cut back to where the
batch began, its lines are counted as dropped (`jsonl` drops in stats and
metrics), and the outage is logged once, with its cause, and once more when
writing works again, with the lines dropped during it and in all (a disk that
flaps near full: at most once a minute, and at close whatever was not said). A
file whose last line a crash cut short is cut back to its last whole line
when the collector opens it, and the readings a killed collector committed
but may not have written are counted dropped (sinks/__init__.py). Created
0640 (less with a stricter umask), never through a symbolic link (files.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence

from precast.collect.files import open_append
from precast.collect.sinks import Doc
from precast.wire.layout import Layout

log = logging.getLogger("precast.collect")

LOG_EVERY = 60.0  # s: an outage that starts again within this is not logged again


def _trim_partial_line(fd: int, path: str) -> None:
    """Cut a file back to its last newline (a crash mid-line left a piece of one)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            keep = start + i + 1
            break
        pos = start
    else:
        keep = 0
    os.ftruncate(fd, keep)
    log.warning("--jsonl %s: removed a partial last line (%d bytes)", path, size - keep)


class JsonlSink:
    """Appends one line per reading, each batch in one write; failures counted, not raised."""

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self.position = "jsonl_pending:" + (path if path == "-" else os.path.realpath(path))
        self.written = 0
        self.dropped = 0
        self._failing: str | None = None  # the cause of the outage going on
        self._logged = -1e9  # monotonic time an outage's start was last logged
        self._told = 0  # self.dropped when the log last said how many lines were dropped
        self._told_at = -1e9  # monotonic time it said so
        self._cause = ""  # the cause of the drops not told yet
        if path == "-":
            self._fd = 1
            self._file = False
        else:
            try:
                self._fd = open_append("--jsonl", path, read=True)
            except OSError as e:
                from precast.errors import UsageError

                raise UsageError(f"--jsonl {path}: {e.strerror}") from None
            self._file = True
            try:
                _trim_partial_line(self._fd, path)
            except OSError as e:
                log.error("--jsonl %s: cannot check its last line: %s", path, e.strerror)

    def write(self, docs: Sequence[Doc]) -> None:
        if not docs:
            return
        data = ("\n".join(map(json.dumps, docs)) + "\n").encode()
        start = os.lseek(self._fd, 0, os.SEEK_END) if self._file else 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            if self._file and len(view) < len(data):
                try:
                    os.ftruncate(self._fd, start)  # no piece of a line stays behind
                except OSError:
                    pass
            self.dropped += len(docs)
            cause = e.strerror or str(e)
            if self._failing is None:
                self._failing = self._cause = cause
                now = time.monotonic()
                if now - self._logged >= LOG_EVERY:
                    log.error(
                        "--jsonl %s: cannot write (%s): its lines are dropped and counted "
                        "until it can be written again",
                        self.path,
                        cause,
                    )
                    self._logged = now
            return
        self.written += len(docs)
        if self._failing is not None:
            self._failing = None
            self._tell()

    def _tell(self, force: bool = False) -> None:
        """Say how many lines were dropped since the log last said so, and in all: at once
        when an outage ends, then at most once a minute (a disk that flaps near full), and
        at close whatever was not said yet."""
        now = time.monotonic()
        if self.dropped == self._told or not (force or now - self._told_at >= LOG_EVERY):
            return
        log.warning(
            "--jsonl %s: %s; %d lines were dropped during the outage (%s), %d in all "
            "since the collector started",
            self.path,
            "closing while it cannot be written" if self._failing else "writing again",
            self.dropped - self._told,
            self._cause,
            self.dropped,
        )
        self._told = self.dropped
        self._told_at = now

    def tick(self, now: float) -> None:
        if self._failing is None:
            self._tell()

    def set_layouts(self, layouts: Mapping[int, Layout]) -> None:
        pass  # a reading's JSON object names its fields itself

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped}

    def counters(self) -> dict[str, int]:
        return {"jsonl_drops": self.dropped}

    def taken(self) -> int:
        return self.written + self.dropped

    def missed(self, n: int) -> None:
        self.dropped += n
        self._told += n
        log.warning(
            "--jsonl %s: %d readings stored before the collector was killed may have no line "
            "(counted as dropped: the database has them)",
            self.path,
            n,
        )

    def close(self) -> None:
        self._tell(force=True)
        if self._file:
            try:
                os.close(self._fd)
            except OSError:
                pass
