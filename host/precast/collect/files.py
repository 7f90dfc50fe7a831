"""Files the collector creates or appends to, opened so no local user can redirect them.

The collector often runs as root or as a service user, and writes where an
operator points it: the ready file (through a temporary beside it), --jsonl,
--spill, and the SQLite database when it creates one. Whoever can write one of
those directories (/tmp, /run, a shared directory) can plant a symbolic link
under the name the collector is about to open, and a writer that follows it
truncates or appends to the link's target (/etc/shadow, another user's file).
`fs.protected_symlinks` stops this only in sticky world-writable directories,
and only where it is on. So, as systemd and logrotate do, nothing here follows
a link: every open has O_NOFOLLOW, a temporary is created with O_EXCL (never
an existing file), and a link found is refused with one line that says so.

The keys file is read, not written, but it decides who may sign frames: it
must be a regular file owned by root or by the collector's user (as ssh
requires of authorized_keys), and it is opened O_NONBLOCK and checked with
fstat before a byte is read, so a FIFO or a device cannot hang the start or
a SIGHUP reload.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from precast.errors import UsageError

log = logging.getLogger("precast.collect")

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
MODE = 0o640  # what the collector creates: never readable by every local user


class LinkRefused(UsageError):
    """A symbolic link where the collector writes a file: refused, never followed."""

    def __init__(self, what: str, path: str | Path) -> None:
        super().__init__(
            f"{what} {path}: is a symbolic link; refused (the collector never follows one "
            "where it writes: whoever planted it could aim it at any file)"
        )


def _refuse_link(e: OSError, what: str, path: str | Path) -> None:
    """Raise LinkRefused when e is an O_NOFOLLOW open that met a link (ELOOP)."""
    if e.errno == errno.ELOOP:
        raise LinkRefused(what, path) from None


def is_link(path: str | Path) -> bool:
    """True when path itself (not what it names) is a symbolic link."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def refuse_link(what: str, path: str | Path) -> None:
    """LinkRefused when path is a symbolic link (checked at start, before any write)."""
    if is_link(path):
        raise LinkRefused(what, path)


def need_directory(what: str, path: str | Path) -> None:
    """UsageError naming the missing directory a file to be written would go in (checked at
    start, before anything listens)."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: the directory {parent} does not exist (create it first)")


def open_append(what: str, path: str | Path, read: bool = False) -> int:
    """A descriptor appending to path (created MODE when missing), never through a link.

    LinkRefused for a link; any other OSError is the caller's to word.
    """
    flags = (os.O_RDWR if read else os.O_WRONLY) | os.O_CREAT | os.O_APPEND | _NOFOLLOW
    try:
        return os.open(path, flags, MODE)
    except OSError as e:
        _refuse_link(e, what, path)
        raise


def create_new(what: str, path: str | Path) -> int:
    """A descriptor on a file path names that did not exist (O_EXCL), never a link."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, MODE)
    except OSError as e:
        if e.errno == errno.EEXIST and is_link(path):
            raise LinkRefused(what, path) from None
        raise


def write_replacing(what: str, path: str | Path, data: bytes) -> None:
    """Write path whole through a temporary beside it (PATH.tmp), renamed over it.

    A leftover regular temporary (a crash) is removed first; a link in either place
    is refused. rename(2) replaces the name, never what a link there points to.
    """
    tmp = Path(f"{path}.tmp")
    refuse_link(what, path)
    refuse_link(what, tmp)
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = create_new(what, tmp)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def prepare_database(path: str | Path) -> None:
    """Before SQLite opens path: refuse a link there, or at its -wal, -shm or -journal;
    create a missing database and its -wal and -shm empty, O_EXCL and O_NOFOLLOW (SQLite
    opens what exists, and an empty -wal or -shm is one it has not written yet)."""
    what = "--db"
    names = [Path(path), *(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal"))]
    for p in names:
        refuse_link(what, p)
    if names[0].exists():
        return
    need_directory(what, path)
    for p in names[:3]:
        try:
            os.close(create_new(what, p))
        except FileExistsError:
            pass
        except OSError as e:
            raise UsageError(f"{what} {path}: cannot create {p.name}: {e.strerror}") from None


def read_trusted(what: str, path: str | Path) -> str:
    """The text of a file that decides who may sign frames (a keys or key file).

    Refused unless it is a regular file owned by root or by this process's user and
    writable by nobody else; opened O_NONBLOCK and checked before reading, so a FIFO
    or a device never blocks. A world-readable one is read, with a warning.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(f"{path}: cannot read {what}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        mode = st.st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{path}: {what} is not a regular file: refused")
        me = os.geteuid()
        if st.st_uid not in (0, me):
            raise UsageError(
                f"{path}: {what} is owned by uid {st.st_uid}, neither root nor the collector's "
                f"user (uid {me}): refused, its owner could choose the keys; chown it"
            )
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            who = "others" if mode & stat.S_IWOTH else "its group"
            raise UsageError(
                f"{path}: {what} is writable by {who}"
                f" (mode {stat.S_IMODE(mode):04o}): refused; chmod 600 or 640 it"
            )
        if mode & stat.S_IROTH:
            log.warning(
                "%s: %s is readable by every local user (mode %04o); chmod 600 or 640 it",
                path,
                what,
                stat.S_IMODE(mode),
            )
        os.set_blocking(fd, True)
        with os.fdopen(fd, encoding="utf-8", closefd=False) as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read {what}: {e}") from None
    finally:
        os.close(fd)
