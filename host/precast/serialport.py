"""Serial ports: the names a board's port goes by, and the one error when it will not open.

`precast deploy`, `precast monitor` and `precast bridge` take the same names (mpremote's
`auto`, `a0`, `u0`, `c0`, `port:NAME`, or anything pyserial opens: a device,
socket://HOST:PORT, rfc2217://HOST:PORT, loop://) and, for a port that will not open, give
the same one line: the port, then why in words a user can act on (missing, busy, not
permitted, refused). Ports are opened exclusively, as mpremote opens them: two programs
reading one UART would each get half of what the board says.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any

from precast.errors import SerialPortError

_SHORTCUTS = {"a": "/dev/ttyACM", "u": "/dev/ttyUSB", "c": "COM"}
# pyserial's words around the reason ("Could not open port X: [Errno 111] Connection refused")
_PYSERIAL_NOISE = re.compile(
    r"^(could not (exclusively lock|open) port \S+: )?(\[Errno \d+\] )?", re.I
)


def resolve_port(port: str) -> str:
    """mpremote's names for ports: auto (the first USB serial device), a0..a99, u0..u99,
    c0..c99 and port:NAME; anything else is a pyserial URL or device as it is."""
    if port == "auto":
        from serial.tools.list_ports import comports

        found = sorted(p.device for p in comports() if p.vid is not None)
        if not found:
            raise SerialPortError("auto: no USB serial device found")
        return str(found[0])
    if port.startswith("port:"):
        return port[len("port:") :]
    if len(port) >= 2 and port[0] in _SHORTCUTS and port[1:].isdigit() and len(port) <= 3:
        return _SHORTCUTS[port[0]] + port[1:]
    return port


def port_problem(port: str) -> str | None:
    """Why a serial device cannot be opened, in words a user can act on; None if it can.

    Permission denied names the group that owns the device (dialout, usually) and the
    command that adds the user to it; a busy port (another program holds its lock, as
    mpremote, a monitor or a bridge do) and a missing one say so.
    """
    if "://" in port:
        return None
    try:
        st = os.stat(port)
    except FileNotFoundError:
        if re.fullmatch(r"[\w.-]+:\d+", port):  # HOST:PORT: a board served over the network
            return f"no such device; a board over the network is socket://{port}"
        return "no such device (is the board plugged in? `ls /dev/ttyUSB* /dev/ttyACM*`)"
    except OSError as e:
        return f"cannot open: {e.strerror}"
    try:
        fd = os.open(port, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
    except PermissionError:
        import grp
        import pwd

        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        user = pwd.getpwuid(os.getuid()).pw_name
        return (
            f"permission denied: the device belongs to group {group!r}, and {user} is not in "
            f"it; run `sudo usermod -aG {group} {user}`, then log in again"
        )
    except OSError as e:
        return _BUSY if e.errno == errno.EBUSY else f"cannot open: {e.strerror}"
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # pyserial's exclusive lock
    except BlockingIOError:
        return _BUSY
    except OSError:
        pass  # a device without flock: nothing to learn here
    finally:
        os.close(fd)
    return None


_BUSY = "the port is busy: another program (a monitor, mpremote, a bridge) has it"


def cannot_open(port: str, error: BaseException | None = None) -> SerialPortError:
    """The one error for a port that would not open; `error` is pyserial's, when known."""
    reason = port_problem(port)
    if reason is None:
        if error is None:  # mpremote's SerialTransport drops pyserial's reason: ask again
            try:
                open_serial(port).close()
            except SerialPortError as e:
                return e
            return SerialPortError(f"serial port {port}: cannot open")
        reason = "cannot open: " + _words(error)
    return SerialPortError(f"serial port {port}: {reason}")


def _words(error: BaseException) -> str:
    text = _PYSERIAL_NOISE.sub("", str(error), count=1).strip()
    return text[:1].lower() + text[1:] if text else type(error).__name__


def open_serial(port: str, baudrate: int = 115200, timeout: float | None = None) -> Any:
    """The port opened (exclusively) with pyserial, or SerialPortError saying why not."""
    import serial

    name = resolve_port(port)
    try:
        return serial.serial_for_url(name, baudrate=baudrate, timeout=timeout, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        raise cannot_open(name, e) from None
