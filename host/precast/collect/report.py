"""What the collector tells its log: new devices, and refused frames with a likely cause.

"Why does my board not show up?" is the first question a user asks, and the
counts alone (`rejected: mic 5`) do not answer it. So the collector logs:

- each new device once: its id, template and source address;
- refused frames by (source, reason): the first at once, with the device when
  the frame carries a readable one and a hint for the common causes (a wrong
  key, an unknown template id, garbage); then, while they go on, one line a
  minute per source and reason with the count, so a flood cannot fill the log
  (a `conflict` line names both sources: the refused sequence's and the
  established one's);
- frames refused for the device limit (--max-devices), one line a minute at most;
- and keeps the latest refusals (newest first, bounded) for `precast stats`.

The collector calls it after a batch is stored, with what the batch saw, so a
batch that is retried is reported once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any

from precast.collect.ingest import Commit
from precast.collect.tracker import CONFLICT_REASON, Verdict
from precast.collect.utc import utc_iso
from precast.wire import header
from precast.wire.constants import (
    CHECK_KIND,
    CRC,
    FLAGS_BAD,
    LENGTH,
    MAGIC,
    MAGIC_BAD,
    MIC,
    NO_KEY,
    SHORT,
    UNKNOWN_TEMPLATE,
    VERSION_BAD,
)

log = logging.getLogger("precast.collect")

EVERY_S = 60.0  # a source's refusals of one reason: one line at most this often
RECENT = 50  # refusals kept for `precast stats`
MAX_KEYS = 4096  # (source, reason) pairs tracked; beyond, a flood of sources shares one
# Device ids a tally keeps for its line (which shows 5): bounded by size, not by the minute, so
# a flood of bad frames each with a fresh id costs nothing (unbounded, it grew RSS 134 MB).
DEVICES_KEPT = 16


@dataclass
class _Tally:
    first: float
    logged: float
    count: int = 0  # refusals since the last line
    devices: set[int] = field(default_factory=set)  # the first DEVICES_KEPT of them
    more: bool = False  # other devices besides


def header_ids(data: bytes) -> tuple[int | None, int | None]:
    """(template id, device id) of a datagram that starts like a precast payload, else Nones."""
    h = header.parse(data)
    if h is None or h.magic != MAGIC:
        return None, None
    return h.template, h.device


class Reporter:
    """The collector's account of what it sees; see the module docstring."""

    def __init__(
        self,
        template_ids: Callable[[], Iterable[int]],
        keyed: Callable[[int], bool],
        clock: Callable[[], float] = time.time,
        proven: Callable[[int], bool] = lambda device: False,
        established: Callable[[int], str | None] = lambda device: None,
        max_devices: int = 0,
    ) -> None:
        self.template_ids = template_ids  # the loaded templates, now (a reload changes them)
        self.keyed = keyed  # does this device have a key of its own on file?
        self.proven = proven  # has it sent frames with a valid MIC (so the key is right)?
        # Its established sequence, in words (its seq and where it was last heard from).
        self.established = established
        self.clock = clock
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.unsaved = False  # recent has refusals the store has not been given
        self.max_devices = max_devices
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._limit = _Tally(first=0.0, logged=-EVERY_S)  # device-limit refusals, any source

    def committed(
        self,
        c: Commit,
        names: Callable[[int], str],
        tracked: Container[int],
        source: Callable[[Any], str],
    ) -> None:
        """What a stored batch saw: its new devices (those tracked: a device the limit
        refused is not new) and its refused frames. names: a template id's name."""
        for n in c.new:
            if n.device in tracked:
                self.new_device(n.device, names(n.template), n.template, source(n.addr))
        for r in c.refused:
            self.refused(r.reason, source(r.addr), r.data)
        self._limit.count += c.rejects.get(Verdict.DEVICE_LIMIT.value, 0)

    # -- what the storing thread reports

    def new_device(self, device: int, template: str, template_id: int, source: str) -> None:
        """A device's first stored reading."""
        log.info("new device %d: template %s (%d), from %s", device, template, template_id, source)

    def refused(self, reason: str, source: str, data: bytes) -> None:
        """A refused datagram: keep it among the recent ones; log it, rate-limited."""
        now = self.clock()
        tid, device = header_ids(data) if reason not in (SHORT, MAGIC_BAD) else (None, None)
        self.unsaved = True
        self.recent.appendleft(
            {
                "at": utc_iso(now),
                "reason": reason,
                "source": source,
                "device": device,
                "template": tid,
                "bytes": len(data),
            }
        )
        key = (source, reason)
        t = self._tallies.get(key)
        if t is None:
            if len(self._tallies) >= MAX_KEYS:  # a flood of sources: one tally for the rest
                key = ("many sources", reason)
                t = self._tallies.get(key)
            if t is None:
                t = self._tallies[key] = _Tally(first=now, logged=now)
                log.warning("refused from %s: %s", source, self._describe(reason, tid, device))
                return
        t.count += 1
        if device is not None and device not in t.devices:
            if len(t.devices) < DEVICES_KEPT:
                t.devices.add(device)
            else:
                t.more = True
        if now - t.logged >= EVERY_S:
            self._line(key, t, now)

    def flush(self, now: float | None = None, force: bool = False) -> None:
        """Write the counts a minute has gathered (all of them when force: stopping)."""
        now = self.clock() if now is None else now
        for key, t in list(self._tallies.items()):
            due = now - t.logged >= EVERY_S
            if t.count and (due or force):
                self._line(key, t, now)
            elif not t.count and due:
                del self._tallies[key]  # quiet for a minute: its next refusal logs at once
        t = self._limit
        if t.count and (now - t.logged >= EVERY_S or force):
            log.warning(
                "device limit (%d, --max-devices) reached: refused %d frames of new devices "
                "since the last report (devices with a key of their own are still admitted)",
                self.max_devices,
                t.count,
            )
            t.count = 0
            t.logged = now

    # -- the words

    def _line(self, key: tuple[str, str], t: _Tally, now: float) -> None:
        source, reason = key
        more = t.more or len(t.devices) > 5
        devs = ", ".join(map(str, sorted(t.devices)[:5])) + ("..." if more else "")
        log.warning(
            "refused from %s: %s x%d in the last %.0f s%s%s",
            source,
            reason,
            t.count,
            now - t.logged,
            f" (devices {devs})" if devs else "",
            self._conflict(min(t.devices)) if reason == CONFLICT_REASON and t.devices else "",
        )
        t.count = 0
        t.devices.clear()
        t.more = False
        t.logged = now

    def _describe(self, reason: str, tid: int | None, device: int | None) -> str:
        """The reason, the ids the frame carries, and the likely cause of the common ones."""
        ids = ""
        if device is not None:
            ids = f" (device {device}, template id {tid})"
        hint = ""
        if reason == MIC and device is not None and self.proven(device):
            hint = ": corrupted on the way, or forged (its other frames have a valid MIC)"
        elif reason == MIC and device is not None and self.keyed(device):
            hint = f": wrong key for device {device}? (the collector has one on file)"
        elif reason == MIC:
            hint = ": the key on the board is not the collector's default key?"
        elif reason == NO_KEY:
            hint = f": no key for device {device} (add it to --keys, or give --key)"
        elif reason == UNKNOWN_TEMPLATE:
            loaded = ", ".join(map(str, sorted(self.template_ids())))
            hint = f": template id {tid} is not among the loaded templates (ids {loaded})"
        elif reason in (SHORT, MAGIC_BAD):
            hint = ": not a precast payload (another program sending to this port?)"
        elif reason in (VERSION_BAD, FLAGS_BAD):
            hint = ": a sender of another precast wire version?"
        elif reason in (LENGTH, CHECK_KIND):
            hint = ": the board's template differs from the collector's of the same id?"
        elif reason == CRC:
            hint = ": corrupted on the way"
        elif reason == CONFLICT_REASON and device is not None:
            hint = self._conflict(device)
        return f"{reason}{ids}{hint}"

    def _conflict(self, device: int) -> str:
        """Both sequences of a device in conflict: the refused one and the established one."""
        est = self.established(device)
        return (
            f": a second sequence under device {device}'s id (a forger, or two boards with "
            f"one id?), refused; its established sequence{f' ({est})' if est else ''} is stored"
        )
