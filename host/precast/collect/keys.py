"""The collector's keys: which AES-128 key each device signs its MICs with.

A keys file (--keys) has one device per line, `DEVICE HEX`: the device id
(decimal or 0x hex) and its key as 32 hex digits; `*` as DEVICE sets the key
of every device not listed; `#` starts a comment. A device listed twice is an
error naming both lines. A key file (--key-file) holds one key, the key of
every device, as 32 hex digits (the file form of --key, which every local
user can read in /proc/PID/cmdline).

Both must be regular files owned by root or by the collector's user, are
refused when group- or world-writable (anyone who can write them can choose
the keys) and warned about when world-readable, as ssh does; they are read
without blocking (files.read_trusted), at start and at every reload.
"""

from __future__ import annotations

from pathlib import Path

from precast.collect.files import read_trusted
from precast.errors import PrecastError, UsageError
from precast.wire.checks import parse_key
from precast.wire.codec import Codec
from precast.wire.constants import U32_MAX
from precast.wire.layout import load_layouts


def _read_secret(path: str | Path, what: str) -> str:
    """The text of a keys or key file, once its type, owner and permissions are checked."""
    return read_trusted(what, path)


def load_keys(path: str | Path) -> tuple[bytes | None, dict[int, bytes]]:
    """(default key, {device: key}) from a keys file (format in the module docstring)."""
    text = _read_secret(path, "the keys file")
    default: bytes | None = None
    default_line = 0
    keys: dict[int, bytes] = {}
    lines: dict[int, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{path}:{n}"
        if len(words) != 2:
            raise UsageError(f"{where}: expected `DEVICE HEX`, got {line.strip()!r}")
        try:
            key = parse_key(words[1])
        except PrecastError as e:
            raise UsageError(f"{where}: {e}") from None
        if words[0] == "*":
            if default_line:
                raise UsageError(f"{where}: a second `*` line (the first is line {default_line})")
            default, default_line = key, n
            continue
        try:
            dev = int(words[0], 0)
        except ValueError:
            raise UsageError(f"{where}: device {words[0]!r} is not an integer") from None
        if not 0 <= dev <= U32_MAX:
            raise UsageError(f"{where}: device {dev} is out of range 0..{U32_MAX}")
        if dev in lines:
            raise UsageError(
                f"{where}: device {dev} is listed twice, on lines {lines[dev]} and {n}"
            )
        keys[dev] = key
        lines[dev] = n
    return default, keys


def load_key_file(path: str | Path) -> bytes:
    """The one key in a key file (32 hex digits; `#` comments and blank lines allowed)."""
    text = _read_secret(path, "the key file")
    words = [w for line in text.splitlines() for w in line.split("#", 1)[0].split()]
    if len(words) != 1:
        raise UsageError(f"{path}: expected one key of 32 hex digits, got {len(words)} words")
    try:
        return parse_key(words[0])
    except PrecastError as e:
        raise UsageError(f"{path}: {e}") from None


def load_codec(
    templates: list[str],
    key: bytes | None = None,
    key_file: str | None = None,
    keys_file: str | None = None,
) -> Codec:
    """The codec a collector checks frames with: its templates, and the keys of --key,
    --key-file and --keys (a keys file's `*` line wins over the other two)."""
    default, keys = key, dict[int, bytes]()
    if key_file:
        default = load_key_file(key_file)
    if keys_file:
        file_default, keys = load_keys(keys_file)
        default = file_default if file_default is not None else default
    return Codec(load_layouts(templates), key=default, keys=keys)


def key_gaps(codec: Codec) -> list[str]:
    """A warning per MIC template whose frames some device could send with no key here to
    check them: refused as no_key (the collector starts anyway; the keys can come by SIGHUP)."""
    if codec.key is not None:
        return []
    out = []
    for tid, lay in sorted(codec.layouts.items()):
        t = lay.template
        if not t.mic:
            continue
        if codec.keys:
            out.append(
                f"template {t.name} ({tid}) is checked with a MIC ({t.check}) and there is no "
                f"default key: frames of devices not in --keys are refused as no_key "
                "(give one with --key-file, or a `*` line in --keys)"
            )
        else:
            out.append(
                f"template {t.name} ({tid}) is checked with a MIC ({t.check}) and no key is "
                "given: all its frames are refused as no_key (give --key-file or --keys)"
            )
    return out
