"""The collector's keys file: which AES-128 key each device signs its MICs with.

One device per line, `DEVICE HEX`: the device id (decimal or 0x hex) and its
key as 32 hex digits; `*` as DEVICE sets the key of every device not listed;
`#` starts a comment.
"""

from __future__ import annotations

from pathlib import Path

from precast.errors import PrecastError, UsageError
from precast.wire.checks import parse_key
from precast.wire.constants import U32_MAX


def load_keys(path: str | Path) -> tuple[bytes | None, dict[int, bytes]]:
    """(default key, {device: key}) from a keys file (format in the module docstring)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read keys: {e}") from None
    default: bytes | None = None
    keys: dict[int, bytes] = {}
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
            default = key
            continue
        try:
            dev = int(words[0], 0)
        except ValueError:
            raise UsageError(f"{where}: device {words[0]!r} is not an integer") from None
        if not 0 <= dev <= U32_MAX:
            raise UsageError(f"{where}: device {dev} is out of range 0..{U32_MAX}")
        keys[dev] = key
    return default, keys
