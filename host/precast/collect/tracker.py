"""Per-device sequence tracking: what was received, lost, duplicated, late, or replayed.

Every device numbers its readings (docs/PROTOCOL.md: seq, +1 per reading). For
each device the tracker keeps the highest seq of the current epoch and a
bitmap of which of the `window` + 1 seqs at and below it were received:

- a seq above the highest is new; the seqs it skips are counted lost;
- a seq already in the bitmap is a duplicate, never stored twice;
- a seq below the highest and inside the window that was not yet seen is
  late: it is stored, and it fills the gap it had left (lost - 1);
- a seq more than `window` below the highest starts a new epoch (the device
  rebooted and counts from 0 again) when the check is a CRC, and is refused
  as a replay when the check is a MIC: an attacker can record and resend
  authenticated frames, so a MIC device must never count backwards.

Lost counts the seqs between a device's lowest and highest seq of each epoch
that never arrived; the silent tail of a stream shows as a stale device
until its next reading tells how many were lost. All counters are plain
integers persisted by the store, so a restart goes on counting.

Seqs compare as plain numbers: a wrap from 4294967295 to 0 reads as a
reboot (or a replay with a MIC); at 10 readings a second that is 13 years on.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WINDOW = 1024

# What observe() says about a reading that is not to be stored (else it returns the epoch).
DUPLICATE = -1  # already stored: count, do not store
REPLAY = -2  # MIC device counting backwards past the window: refuse


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


class Tracker:
    """Sequence state of every device; observe() classifies each decoded reading."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self.mask = (1 << (window + 1)) - 1
        self.devices: dict[int, Device] = {}
        self.dirty: set[int] = set()  # devices changed since the store last saved them

    def load(self, dev: Device) -> None:
        """Restore a device saved by the store (its bitmap cut to this window)."""
        dev.seen &= self.mask
        self.devices[dev.device] = dev

    def observe(self, device: int, template: int, seq: int, now: float, mic: bool) -> int:
        """The epoch to store a reading of device with seq under, or DUPLICATE or REPLAY."""
        d = self.devices.get(device)
        if d is None:
            self.devices[device] = Device(
                device, template, 0, seq, now, seq, seq, 1, first_seen=now, last_seen=now
            )
            self.dirty.add(device)
            return 0
        self.dirty.add(device)
        step = seq - d.highest
        if step > 0:
            d.lost += step - 1
            d.seen = ((d.seen << step) | 1) & self.mask if step <= self.window else 1
            d.highest = seq
        elif step == 0:
            d.duplicates += 1
            return DUPLICATE
        elif -step > self.window:
            if mic:
                d.replays += 1
                return REPLAY
            d.reboots += 1
            d.epoch += 1
            d.epoch_seq = d.lowest = d.highest = seq
            d.epoch_started = now
            d.seen = 1
        else:
            bit = 1 << -step
            if d.seen & bit:
                d.duplicates += 1
                return DUPLICATE
            d.seen |= bit
            d.late += 1
            if seq < d.lowest:
                # Older than the first reading of the epoch: the seqs between are lost now.
                d.lost += d.lowest - seq - 1
                d.lowest = seq
            else:
                d.lost -= 1
        d.received += 1
        d.template = template
        d.last_seen = now
        return d.epoch

    def bad_check(self, device: int) -> None:
        """Count a failed CRC or MIC against a device already known (never create one)."""
        d = self.devices.get(device)
        if d is not None:
            d.bad += 1
            self.dirty.add(device)

    def take_dirty(self) -> list[Device]:
        """The devices changed since the last call."""
        out = [self.devices[k] for k in self.dirty]
        self.dirty.clear()
        return out
