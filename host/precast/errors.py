"""One tree of exceptions for the host side of precast.

Every error a user can cause (a bad template, a bad value, a bad option)
is a PrecastError; the CLI turns it into one line on stderr and exit 2
(Interrupted, a Ctrl-C a command stopped cleanly on: exit 130).
Bad bytes on the wire are not errors: a decoder returns a reason.
"""

from __future__ import annotations


class PrecastError(Exception):
    """Base of every error precast raises on purpose."""


class TemplateError(PrecastError):
    """A template file that cannot be read, parsed or validated."""

    def __init__(self, source: str, key: str | None, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + reason)


class EncodeError(PrecastError):
    """Values that cannot be put into a frame (missing, unknown, out of range)."""


class UsageError(PrecastError):
    """A command-line argument that does not make sense."""


class TransportError(PrecastError):
    """A transport that cannot be opened or used (no interface, no privilege, bad address)."""


class BoardError(PrecastError):
    """A board that cannot be reached, or that does not answer as MicroPython does."""


class SerialPortError(PrecastError):
    """A serial port that will not open: missing, busy, not permitted, refused."""


class Interrupted(PrecastError):
    """Ctrl-C, stopped cleanly: the message says what state things were left in (exit 130)."""
