"""Command-line words: the argparse types and option groups every command shares.

A leaf module: it knows the wire format's value ranges and the errors, nothing of
the commands. One `HOST:PORT` parser serves the collector's --listen and --metrics,
the board's --listen, build's --collector and the udp:// transport.
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Sequence
from typing import Any, NoReturn

from precast.errors import PrecastError, UsageError
from precast.wire.checks import parse_key
from precast.wire.constants import U32_MAX


class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph text as usual; text with line breaks (examples) stays as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """precast's argument parser: an argument error is one line and a pointer to --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(
            2, f"{self.prog}: error: {message}{_suggestion(message)} (see `{self.prog} --help`)\n"
        )


def _suggestion(message: str) -> str:
    """', did you mean X?' for argparse's invalid-choice message, as git does for commands."""
    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not m:
        return ""
    choices = re.findall(r"'([^']*)'", m.group(2))
    close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def plural(n: int, word: str) -> str:
    """'1 panel', '2 panels': a count and its noun, for a command's output."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def examples(*lines: str) -> str:
    """A command's --help epilog: example command lines, one per line."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def split_hostport(text: str, *, allow_zero: bool = False) -> tuple[str, int | None]:
    """HOST:PORT, [V6]:PORT, :PORT, HOST or [V6] as (host, port); a missing part is '' or None.

    Port 0 (any free port) only with `allow_zero`. Errors are UsageError, one line.
    """
    if text.startswith("["):  # [V6] or [V6]:PORT
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise UsageError(f"expected HOST:PORT, got {text!r}")
        port = rest[1:] if rest else None
    elif ":" in text:  # the last colon: an IPv6 address needs its brackets
        host, _, port = text.rpartition(":")
    else:  # a bare host name or IPv4 address
        host, port = text, None
    if port is None:
        return host, None
    try:
        p = int(port)
    except ValueError:
        raise UsageError(f"{text!r}: port is not a number") from None
    low = 0 if allow_zero else 1
    if not low <= p <= 65535:
        raise UsageError(f"{text!r}: port out of range {low}..65535")
    return host, p


def parse_hostport(
    text: str, *, default_host: str | None = None, allow_zero: bool = False, what: str = ""
) -> tuple[str, int]:
    """HOST:PORT as (host, port), the host optional (':PORT') when there is a default.

    `what` (an option, "--listen") begins the error line, so that it names what was wrong."""
    lead = f"{what}: " if what else ""
    try:
        host, port = split_hostport(text, allow_zero=allow_zero)
    except UsageError as e:
        raise UsageError(lead + str(e)) from None
    host = host or (default_host or "")
    if port is None or not host:
        also = f" (or :PORT for {default_host}:PORT)" if default_host else ""
        raise UsageError(f"{lead}expected HOST:PORT{also}, got {text!r}")
    return host, port


def key_arg(text: str) -> bytes:
    """argparse type for --key: 32 hex digits."""
    try:
        return parse_key(text)
    except PrecastError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def uint32(text: str) -> int:
    """argparse type for a device id or sequence number."""
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= v <= U32_MAX:
        raise argparse.ArgumentTypeError(f"{v} is out of range 0..{U32_MAX}")
    return v


def non_negative(text: str) -> int:
    """argparse type for a count or an interval: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def rate_arg(text: str) -> float:
    """argparse type for --rate: frames per second, 0 for as fast as possible."""
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not r >= 0 or r == float("inf"):
        raise argparse.ArgumentTypeError(f"rate must be 0 (as fast as possible) or positive: {r}")
    return r


def count_arg(text: str) -> int:
    """argparse type for --count: 0 for until interrupted."""
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"count must be 0 (until interrupted) or more: {n}")
    return n


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """NAME=VALUE words as a dict; a word without '=' or a repeated name is an error."""
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"expected NAME=VALUE, got {item!r}")
        if name in out:
            raise UsageError(f"field {name!r} given twice")
        out[name] = value
    return out


def add_template_args(
    p: argparse.ArgumentParser, *, device_help: str = "device id (u32)", device: bool = True
) -> None:
    """The option group of every command that encodes one device's frames.

    TEMPLATE (a file or a directory), --template NAME|ID to pick one from a
    directory, --device N and --key HEX. The picked template is
    `pick_layout([args.template], args.which)`.
    """
    p.add_argument("template", help="template .toml file or directory")
    p.add_argument(
        "--template",
        dest="which",
        metavar="NAME|ID",
        help="which template, when TEMPLATE is a directory of several",
    )
    if device:
        p.add_argument("--device", type=uint32, required=True, help=device_help)
    p.add_argument("--key", type=key_arg, help="AES-128 key, 32 hex digits (cmac templates)")
