"""One writer per SQLite file: the collector holds an exclusive lock on `<db>.lock`.

Two collectors on one SQLite file would each keep the books in memory and
overwrite each other's (a device whose readings alternate between them ends
with a third of them counted lost). So a collector takes flock(LOCK_EX |
LOCK_NB) on `<db>.lock` and writes its pid into it; a second one is refused
with that pid. The kernel drops the lock when its process ends, however it
ends (SIGKILL too): a stale file never blocks. The file is removed at a clean
exit; a locker checks that the file it locked is still the one at the path
(another may have removed it meanwhile) and tries again if not.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from precast.collect.files import LinkRefused
from precast.collect.store import StoreError
from precast.errors import PrecastError

PID_WAIT_S = 1.0  # how long a refused collector waits for the holder to write its pid


class LockedError(PrecastError):
    """The SQLite file has a collector already."""


def open_lock(path: Path) -> int:
    """The lock file, never through a link: one planted there would have root truncate and
    write into whatever it names (LinkRefused, one line)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LinkRefused("--db", path) from None
        raise StoreError(f"{path}: cannot open the lock file: {e.strerror}") from None


class WriterLock:
    """The exclusive lock of one SQLite database's collector (release() or process exit)."""

    def __init__(self, db: Path) -> None:
        self.path = Path(f"{db}.lock")
        self.fd = -1
        while True:
            fd = open_lock(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockedError(
                    f"{db}: another collector (pid {self._holder()}) writes this SQLite "
                    "database; one file takes one collector (several need PostgreSQL)"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # removed by its last holder after we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def _holder(self) -> str:
        """The pid the holder wrote (it writes it just after locking)."""
        deadline = time.monotonic() + PID_WAIT_S
        while True:
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text.isdigit() or time.monotonic() > deadline:
                return text or "unknown"
            time.sleep(0.02)

    def release(self) -> None:
        """Remove the file and drop the lock (removed first: no one locks a doomed file)."""
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = -1
