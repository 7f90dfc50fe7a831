"""Per-device sequence tracking: what was received, lost, duplicated, late, replayed or held.

Every device numbers its readings (docs/PROTOCOL.md: seq, +1 per reading). For
each device the tracker keeps the highest seq of the current epoch and a
bitmap of which of the `window` + 1 seqs at and below it were received:

- a seq above the highest, by at most MAX_GAP, is new; the seqs it skips are
  counted lost;
- a seq already in the bitmap is a duplicate, never stored twice;
- a seq below the highest and inside the window that was not yet seen is
  late: it is stored, and it fills the gap it had left (lost - 1);
- no single frame moves a device far (docs/PROTOCOL.md, receiver step 5): a seq
  more than MAX_GAP ahead, or (CRC devices) more than `window` below, is held
  as the device's candidate, neither stored nor counted as loss. A second
  frame at most CONFIRM_GAP after the candidate confirms the new position:
  a new epoch starts at the candidate (a reboot, counted), and both frames
  are stored (the verdict carries the candidate, `Held`). A normal frame,
  or another far one, discards the candidate (counted in `discarded`);
- a MIC device never counts backwards: a seq below its window is a replay,
  refused. An attacker can record and resend authenticated frames;
- after an operator's reset (`precast device reset`) two consecutive frames set
  the device's position, never one: the first is held as the candidate, and the
  next one at most CONFIRM_GAP after it confirms it (a new epoch, not a reboot);
- a frame identical to one already stored for the device, in any epoch, is a
  replay, refused (replays.py keeps the digests of each device's last stored
  frames): checked where the bitmap cannot tell, that is before a frame is held,
  confirms, starts an epoch, or is stored under a seq an ended epoch had;
- a CRC frame proves nothing about its sender, so a confirmed far jump of a CRC
  device does not take the books from a sequence still sending: unless the
  established sequence has been silent for the quiet period (QUIET_S, or
  QUIET_INTERVALS of its usual intervals if longer: a reboot, a replaced
  board), the other sequence is the device's rival, its frames refused
  (CONFLICT, counted per device) while the established one's are stored and
  its loss counts only its own gaps. The rival takes the device over (a new
  epoch, a reboot) with its first frame after the established sequence has
  been silent that long; a rival silent that long is forgotten.

A device's identity includes how it authenticates (receiver step 4): one
listed by id in a keys file (`keyed`), or one that has sent a valid MIC
(auth "mic"), is accepted only in MIC frames; a CRC frame carrying its id is
refused (MIC_REQUIRED) and never touches its books. Its first valid MIC starts
a new epoch: the CRC frames before it could have come from anyone.

The number of devices is bounded (max_devices): beyond it a new device is
refused (DEVICE_LIMIT) unless its frame carries a valid MIC or it is keyed.

Lost counts the seqs between a device's lowest and highest seq of each epoch
that never arrived. All state is plain fields of Device, persisted by the
store, so a restart goes on counting, and a restart with another window
converts the saved bitmap (load): seqs it did not track count as seen, so
a replay is never taken for a late arrival.

Seqs compare as plain numbers: a wrap from 4294967295 to 0 reads as a
reboot (or a replay with a MIC); at 10 readings a second that is 13 years on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from precast.collect.replays import LIMIT, Digests, digest

DEFAULT_WINDOW = 1024
# The window's bitmap is window + 1 bits a device, kept in memory and written with its books
# at every commit: 65,536 is 8 KiB a device, 80 MiB for 10,000 (--window's maximum).
MAX_WINDOW = 65_536
DEFAULT_MAX_DEVICES = 10_000
MAX_GAP = 16_384  # LoRaWAN's MAX_FCNT_GAP: a step beyond it needs a second frame
CONFIRM_GAP = 16  # a candidate is confirmed by a frame at most this far after it
# A CRC device's established sequence is silent long enough for another to take it over after
# this many seconds, or QUIET_INTERVALS of its usual intervals if longer (stats' stale rule).
# A second at least: arrival times are a batch's, and a batch takes up to a second to fill.
QUIET_S = 1.0
QUIET_INTERVALS = 3

AUTH_CRC = "crc"
AUTH_MIC = "mic"

# The reasons the tracker refuses a frame for (the codec's are in wire/constants.REASONS).
REPLAY_REASON = "replay"
MIC_REQUIRED_REASON = "mic-required"
DEVICE_LIMIT_REASON = "device-limit"
JUMP_REASON = "jump"  # a held candidate never confirmed
CONFLICT_REASON = "conflict"  # a second sequence under a CRC device's id
TRACKER_REASONS = (
    REPLAY_REASON,
    MIC_REQUIRED_REASON,
    JUMP_REASON,
    DEVICE_LIMIT_REASON,
    CONFLICT_REASON,
)


class Verdict(Enum):
    """What observe() says of a reading; a refusal's value is its reject reason."""

    STORED = "stored"  # store it under Observed.epoch
    DUPLICATE = "duplicate"  # already stored: counted in the books, not stored
    HELD = "held"  # a far jump, held as the device's candidate until confirmed
    REPLAY = REPLAY_REASON  # a MIC device counting backwards past the window, or a frame
    # identical to one stored: refused
    MIC_REQUIRED = MIC_REQUIRED_REASON  # a CRC frame with a MIC device's id: refused
    DEVICE_LIMIT = DEVICE_LIMIT_REASON  # a new device beyond max_devices: refused
    CONFLICT = CONFLICT_REASON  # the rival sequence of a CRC device: refused

    @property
    def refused(self) -> bool:
        """Whether the frame is refused (counted as a reject under the verdict's value)."""
        return self in _REFUSED


_REFUSED = frozenset((Verdict.REPLAY, Verdict.MIC_REQUIRED, Verdict.DEVICE_LIMIT, Verdict.CONFLICT))


@dataclass(frozen=True, slots=True)
class Held:
    """A held far jump, confirmed: its payload, arrival time and source, stored under epoch."""

    data: bytes
    at: float
    source: str
    epoch: int


class Observed(NamedTuple):
    """observe()'s verdict with its data: the epoch of a STORED reading, and the confirmed
    candidate (held) to store before it."""

    verdict: Verdict
    epoch: int = -1
    held: Held | None = None


DUPLICATE = Observed(Verdict.DUPLICATE)
HELD = Observed(Verdict.HELD)
REPLAY = Observed(Verdict.REPLAY)
MIC_REQUIRED = Observed(Verdict.MIC_REQUIRED)
DEVICE_LIMIT = Observed(Verdict.DEVICE_LIMIT)
CONFLICT = Observed(Verdict.CONFLICT)


@dataclass(slots=True)
class Device:
    """One device's sequence state and counters (a row of the store's devices table)."""

    device: int
    template: int
    epoch: int
    epoch_seq: int  # the seq that started the epoch
    epoch_started: float  # unix time of that seq's arrival
    lowest: int  # lowest seq received in this epoch
    highest: int  # highest seq received in this epoch
    seen: int  # bit i set: seq (highest - i) was received
    received: int = 1
    lost: int = 0
    duplicates: int = 0
    late: int = 0
    bad: int = 0
    reboots: int = 0
    replays: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    auth: str = AUTH_CRC  # "mic" once keyed or a valid MIC was seen; "" unknown (old store)
    seen_window: int = 0  # the window `seen` was kept with (0: unknown, an old store)
    cand_seq: int = -1  # the held far jump, -1 none
    cand_at: float = 0.0  # its arrival time
    cand_data: bytes = b""  # its payload, stored once confirmed
    cand_source: str = ""
    restart: bool = False  # an operator reset: the next two consecutive readings start an epoch
    source: str = ""  # where the established sequence was last heard from
    conflicts: int = 0  # frames refused as the rival sequence's (CONFLICT)
    rival_seq: int = -1  # a CRC device in conflict: the rival sequence's highest seq, -1 none
    rival_at: float = 0.0  # when the rival was last heard
    rival_source: str = ""  # and from where
    delayed: int = 0  # readings stored from delayed frames (sent late, with their age)


class Tracker:
    """Sequence state of every device; observe() classifies each decoded reading."""

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        max_devices: int = DEFAULT_MAX_DEVICES,
        keyed: set[int] | None = None,
    ) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be 1 to {MAX_WINDOW}")
        self.window = window
        self.mask = (1 << (window + 1)) - 1
        self.max_devices = max_devices
        self.keyed: set[int] = keyed if keyed is not None else set()
        self.devices: dict[int, Device] = {}
        self.dirty: set[int] = set()  # devices changed since the store last saved them
        self.digests: dict[int, Digests] = {}  # each device's last stored frames (replays.py)
        self._ok_by_epoch: dict[int, Observed] = {}  # Observed(STORED, epoch) by epoch, made once
        self.discarded = 0  # candidates discarded since begin() (the `jump` reason)
        self.conflicted = 0  # candidates refused as a rival's since begin() (`conflict`)
        # Undo log of one batch (begin/rollback): device -> its state before, None if new;
        # and its digests' (length, lo, hi) before.
        self._undo: dict[int, Device | None] | None = None
        self._digests_undo: dict[int, tuple[int, int, int]] = {}
        self._taken: list[int] = []

    def load(self, dev: Device) -> None:
        """Restore a device saved by the store, its bitmap converted to this window."""
        old = dev.seen_window or max(dev.seen.bit_length() - 1, 0)
        span = dev.highest - dev.lowest
        if old < self.window and old < span:
            # Seqs between the old window and this one, inside the epoch, were not tracked:
            # take them as seen (a duplicate at worst), never as a late arrival to store.
            top = min(self.window, span)
            dev.seen |= ((1 << (top + 1)) - 1) & ~((1 << (old + 1)) - 1)
        dev.seen &= self.mask
        dev.seen_window = self.window
        self.devices[dev.device] = dev

    # -- one batch as a unit: begin(), observe()..., then take_dirty() or rollback()

    def begin(self) -> None:
        """Start recording what observe() changes, so rollback() can undo it."""
        self._undo = {}
        self._digests_undo = {}
        self.discarded = 0
        self.conflicted = 0

    def rollback(self) -> None:
        """Undo everything since begin() (the store refused the batch)."""
        undo, self._undo = self._undo, None
        if undo is None:
            return
        for k, old in undo.items():
            if old is None:
                self.devices.pop(k, None)
                self.dirty.discard(k)
            else:
                self.devices[k] = old
        for k, (n, lo, hi) in self._digests_undo.items():
            g = self.digests[k]
            del g.data[n:]
            g.lo, g.hi = lo, hi
        self._digests_undo = {}
        self.dirty.update(k for k in self._taken if k in self.devices)
        self.discarded = 0
        self.conflicted = 0

    def _touch(self, device: int, d: Device | None) -> None:
        undo = self._undo
        if undo is not None and device not in undo:
            undo[device] = copy.copy(d) if d is not None else None

    def touch_digests(self, device: int) -> Digests:
        """The device's digests, their state noted for rollback() (a batch is open)."""
        g = self.digests.get(device)
        if g is None:
            g = self.digests[device] = Digests()
        if self._undo is not None and device not in self._digests_undo:
            self._digests_undo[device] = (len(g.data), g.lo, g.hi)
        return g

    def keep(self, device: int, dg: bytes) -> None:
        """Stored frames' digests (one or more, end to end), kept (trimmed at commit() while a
        batch is open)."""
        if not dg:
            return
        g = self.digests.get(device)
        if g is None:
            g = self.digests[device] = Digests()
        if self._undo is not None:
            undo = self._digests_undo
            if device not in undo:
                undo[device] = (len(g.data), g.lo, g.hi)
            g.data += dg
        else:
            g.data += dg
            if len(g.data) > LIMIT:
                g.trim()

    def _replayed(self, d: Device, dg: bytes) -> bool:
        """Whether the frame is identical to one stored for d (counted as a replay)."""
        g = self.digests.get(d.device)
        if dg and g is not None and dg in g:
            d.replays += 1
            return True
        return False

    # -- classifying

    def observe(
        self,
        device: int,
        template: int,
        seq: int,
        now: float,
        mic: bool,
        data: bytes = b"",
        source: str = "",
    ) -> Observed:
        """The verdict on a reading of device with seq (STORED: with its epoch).

        mic: the frame carried a valid MIC. data and source are the frame's payload and
        where it came from: data is kept when the frame is held as a candidate, and its
        digest once it is stored (a frame without its bytes is never taken for a replay).
        """
        d = self.devices.get(device)
        if not mic and (device in self.keyed or (d is not None and d.auth == AUTH_MIC)):
            return MIC_REQUIRED
        dg = digest(data)
        if d is None:
            if len(self.devices) >= self.max_devices and not mic and device not in self.keyed:
                return DEVICE_LIMIT
            g = self.digests.get(device)
            if dg and g is not None and dg in g:
                return REPLAY  # books rolled back or forgotten, the digests not
            undo = self._undo
            if undo is not None:
                undo[device] = None
            self.devices[device] = Device(
                device,
                template,
                0,
                seq,
                now,
                seq,
                seq,
                1,
                first_seen=now,
                last_seen=now,
                auth=AUTH_MIC if mic else AUTH_CRC,
                seen_window=self.window,
                source=source,
            )
            self.dirty.add(device)
            self.keep(device, dg)
            return self._ok(0)
        undo = self._undo
        if undo is not None and device not in undo:
            undo[device] = copy.copy(d)
        self.dirty.add(device)
        if d.restart:
            # An operator reset: two consecutive frames set the position, never one (a single
            # recorded old frame replayed first would take it, and the real counter after it
            # would be refused as replays). The first is held, the next close after it confirms.
            # Neither may be a frame stored before, in whatever epoch.
            if self._replayed(d, dg):
                return REPLAY
            c = d.cand_seq
            if c >= 0 and c < seq <= c + CONFIRM_GAP:
                d.restart = False
                d.auth = AUTH_MIC if mic else d.auth
                return self._confirm(d, template, seq, now, dg, source, reboot=False)
            return self._jump(d, seq, now, data, source)
        if mic and d.auth != AUTH_MIC:
            # The first valid MIC of a device known only from CRC frames (which anyone can
            # forge): a new epoch here, judged by nothing before.
            if self._replayed(d, dg):
                return REPLAY
            d.auth = AUTH_MIC if mic else d.auth
            self._new_epoch(d, seq, seq, now, 1)
            self._drop_candidate(d)
            return self._stored(d, template, now, dg, source)
        if d.rival_seq >= 0:
            rival = self._rival(d, template, seq, now, dg, source)
            if rival is not None:
                return rival
        c = d.cand_seq
        if c >= 0 and c < seq <= c + CONFIRM_GAP:
            if self._replayed(d, dg):
                return REPLAY
            return self._confirm(d, template, seq, now, dg, source)
        step = seq - d.highest
        if step > 0:
            # A CRC frame proves nothing: past the window ahead, as below it, it waits for a
            # second one (one forged frame at seq + 16,000 added 16,000 to lost, and made the
            # device's real next frames a confirmed backward jump: a reboot each time).
            if step > (MAX_GAP if d.auth == AUTH_MIC else self.window):
                return self._jump(d, seq, now, data, source)
            g = self.digests.get(device)
            if g is not None and g.old(seq) and self._replayed(d, dg):
                return REPLAY  # an ended epoch's frame, ahead of this one's
            self._advance(d, step)
        elif step == 0:
            d.duplicates += 1
            return DUPLICATE
        elif -step > self.window:
            if d.auth == AUTH_MIC:
                d.replays += 1
                return REPLAY
            return self._jump(d, seq, now, data, source)
        else:
            bit = 1 << -step
            if d.seen & bit:
                d.duplicates += 1
                return DUPLICATE
            if seq < d.lowest:
                # Older than the first reading of the epoch: it may be an ended epoch's frame
                # (after a reset, the 1,024 recorded frames below the new start were stored
                # again as late); if not, the seqs between are lost now.
                if self._replayed(d, dg):
                    return REPLAY
                d.lost += d.lowest - seq - 1
                d.lowest = seq
            else:
                d.lost -= 1
            d.seen |= bit
            d.late += 1
        if d.cand_seq >= 0:
            self._drop_candidate(d)
        return self._stored(d, template, now, dg, source)

    def _advance(self, d: Device, step: int) -> None:
        """The highest seq moves up by step; the seqs it skips are lost."""
        d.lost += step - 1
        d.seen = ((d.seen << step) | 1) & self.mask if step <= self.window else 1
        d.highest += step

    def _stored(self, d: Device, template: int, now: float, dg: bytes, source: str) -> Observed:
        d.received += 1
        d.template = template
        d.last_seen = now
        d.source = source
        self.keep(d.device, dg)
        return self._ok_by_epoch.get(d.epoch) or self._ok(d.epoch)

    def _ok(self, epoch: int) -> Observed:
        ok = self._ok_by_epoch.get(epoch)
        if ok is None:
            ok = self._ok_by_epoch[epoch] = Observed(Verdict.STORED, epoch)
        return ok

    def _new_epoch(self, d: Device, low: int, high: int, at: float, seen: int) -> None:
        d.epoch += 1
        d.epoch_seq = d.lowest = low
        d.highest = high
        d.epoch_started = at
        d.seen = seen
        d.rival_seq, d.rival_at, d.rival_source = -1, 0.0, ""
        if d.device in self.digests:
            self.touch_digests(d.device).end_epoch()

    def _drop_candidate(self, d: Device) -> None:
        if d.cand_seq >= 0:
            self.discarded += 1
        d.cand_seq, d.cand_at, d.cand_data, d.cand_source = -1, 0.0, b"", ""

    def _jump(self, d: Device, seq: int, now: float, data: bytes, source: str) -> Observed:
        """A far step: hold it as the device's candidate (any candidate before is dropped)."""
        if d.cand_seq == seq:
            d.duplicates += 1
            return DUPLICATE
        if self._replayed(d, digest(data)):
            return REPLAY  # a recorded frame below the window: no fake reboot from it
        self._drop_candidate(d)
        d.cand_seq, d.cand_at, d.cand_data, d.cand_source = seq, now, data, source
        return HELD

    def quiet_period(self, d: Device) -> float:
        """How long d's established sequence must be silent for another to take it over."""
        span = d.highest - d.epoch_seq
        interval = (d.last_seen - d.epoch_started) / span if span > 0 else 0.0
        return max(QUIET_S, QUIET_INTERVALS * interval)

    def _rival(
        self, d: Device, template: int, seq: int, now: float, dg: bytes, source: str
    ) -> Observed | None:
        """A frame of a CRC device in conflict: the rival's verdict, or None (not the rival's:
        the established sequence's, or a far frame, judged as ever)."""
        quiet = self.quiet_period(d)
        if now - d.rival_at >= quiet:
            d.rival_seq, d.rival_at, d.rival_source = -1, 0.0, ""  # the rival went silent
            return None
        window = self.window
        if -window <= seq - d.highest <= window:
            return None
        step = seq - d.rival_seq
        if not -window <= step <= window:
            return None
        if self._replayed(d, dg):
            return REPLAY
        if step > 0 and now - d.last_seen >= quiet:
            # The established sequence silent for the quiet period while this one went on: a
            # real reboot or a replaced board. It takes the device over, from this frame.
            self._drop_candidate(d)
            self._new_epoch(d, seq, seq, now, 1)
            d.reboots += 1
            return self._stored(d, template, now, dg, source)
        if step > 0:
            d.rival_seq = seq
        d.rival_at, d.rival_source = now, source
        d.conflicts += 1
        return CONFLICT

    def _confirm(
        self,
        d: Device,
        template: int,
        seq: int,
        now: float,
        dg: bytes,
        source: str,
        reboot: bool = True,
    ) -> Observed:
        """seq confirms the candidate: a new epoch from it, and both frames are stored.
        reboot: count it as one (not after an operator's reset)."""
        c = d.cand_seq
        gap = seq - c
        if reboot and d.auth != AUTH_MIC and now - d.last_seen < self.quiet_period(d):
            # A second sequence under a CRC device's id while the established one still
            # sends: the rival, refused with its held first frame (a forged stream at
            # seq + 2**31 took 89 % of the real device's readings, a reboot each time).
            d.rival_seq, d.rival_at, d.rival_source = seq, now, source
            d.conflicts += 2
            self.conflicted += 1
            d.cand_seq, d.cand_at, d.cand_data, d.cand_source = -1, 0.0, b"", ""
            return CONFLICT
        held_dg = digest(d.cand_data)
        if reboot and d.highest < c <= d.highest + MAX_GAP:
            # A step forward within the maximum gap, now confirmed: the same epoch goes on,
            # and the seqs it skipped are lost (an outage longer than the window).
            held = Held(d.cand_data, d.cand_at, d.cand_source, d.epoch)
            self._advance(d, c - d.highest)
            self._advance(d, gap)
            d.received += 1  # the candidate; _stored counts this frame
            d.cand_seq, d.cand_at, d.cand_data, d.cand_source = -1, 0.0, b"", ""
            self.keep(d.device, held_dg)
            ok = self._stored(d, template, now, dg, source)
            return Observed(Verdict.STORED, ok.epoch, held)
        held = Held(d.cand_data, d.cand_at, d.cand_source, d.epoch + 1)
        self._new_epoch(d, c, seq, d.cand_at, (1 | (1 << gap)) if gap <= self.window else 1)
        d.reboots += reboot
        d.lost += gap - 1
        d.received += 1  # the candidate; _stored counts this frame
        d.cand_seq, d.cand_at, d.cand_data, d.cand_source = -1, 0.0, b"", ""
        self.keep(d.device, held_dg)
        ok = self._stored(d, template, now, dg, source)
        return Observed(Verdict.STORED, ok.epoch, held)

    def reset(self, device: int) -> bool:
        """An operator's reset: the device's next two consecutive readings start a new epoch.
        False: unknown."""
        d = self.devices.get(device)
        if d is None:
            return False
        self._touch(device, d)
        d.restart = True
        d.cand_seq, d.cand_at, d.cand_data, d.cand_source = -1, 0.0, b"", ""
        d.rival_seq, d.rival_at, d.rival_source = -1, 0.0, ""
        self.dirty.add(device)
        return True

    def count_delayed(self, device: int, n: int = 1) -> None:
        """Count n stored readings of a known device that came in delayed frames."""
        d = self.devices.get(device)
        if d is not None:
            self._touch(device, d)
            d.delayed += n
            self.dirty.add(device)

    def bad_check(self, device: int) -> None:
        """Count a failed CRC or MIC against a device already known (never create one)."""
        d = self.devices.get(device)
        if d is not None:
            self._touch(device, d)
            d.bad += 1
            self.dirty.add(device)

    def take_dirty(self) -> list[Device]:
        """The devices changed since the last call."""
        self._taken = list(self.dirty)
        out = [self.devices[k] for k in self._taken]
        self.dirty.clear()
        return out

    def commit(self) -> None:
        """The batch since begin() is stored: forget its undo log, trim the digests."""
        self._undo = None
        self._taken = []
        for k in self._digests_undo:
            self.digests[k].trim()
        self._digests_undo = {}
