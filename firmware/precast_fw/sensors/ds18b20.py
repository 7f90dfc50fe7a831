"""DS18B20 temperature over 1-Wire, read without allocating, scratchpad CRC checked.

Maxim DS18B20 datasheet: CONVERT T (0x44) then READ SCRATCHPAD (0xBE)
returns 9 bytes, temperature LSB and MSB first (two's complement, 1/16 degC
at 12 bits), then TH, TL, config, three reserved bytes and a CRC-8 of the
first eight (polynomial x^8 + x^5 + x^4 + 1, 0x31, processed LSB first as
0x8C; Maxim application note 27). A conversion at 12 bits takes up to
750 ms. The bus is a `onewire.OneWire` (its reset, writebyte, write,
readinto and scan), passed in by the caller.

A reading goes out in 0.01 degC (the templates' i16 with scale 0.01), or as
the raw 1/16 degC with raw=True. A scratchpad that fails its CRC, or a bus
with no presence pulse, leaves the previous value in place and counts one
in `errors`.
"""

try:
    from micropython import const
except ImportError:  # CPython, where the host tests run the same arithmetic

    def const(x):  # type: ignore[misc]  # untyped stand-in for the stubs' generic const
        return x


import time

try:
    _sleep_ms = time.sleep_ms
except AttributeError:  # CPython

    def _sleep_ms(ms):
        time.sleep(ms / 1000)


_SKIP_ROM = const(0xCC)
_MATCH_ROM = const(0x55)
_CONVERT_T = const(0x44)
_READ_SCRATCH = const(0xBE)
_FAMILY = const(0x28)  # DS18B20's family code, the first ROM byte
CONVERT_MS = const(750)  # 12-bit conversion time, datasheet table 2


def crc8(buf, n):
    """Dallas/Maxim CRC-8 of buf[0:n]; 0 over data followed by its CRC."""
    crc = 0
    for i in range(n):
        b = buf[i]
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


def centi(raw):
    """0.01 degC from the raw 1/16 degC, rounded to nearest (halves up)."""
    return (raw * 25 + 2) >> 2


class DS18B20:
    """DS18B20s on one bus; read(values) writes sensor i's reading into values[slots[i]]."""

    def __init__(self, ow, roms=None, slots=(0,), raw=False, convert_ms=CONVERT_MS):
        # roms: the 8-byte ROM codes in slot order; None scans the bus for DS18B20s.
        self.ow = ow
        if roms is None:
            roms = [bytes(r) for r in ow.scan() if r[0] == _FAMILY]
            if not roms:
                raise OSError("DS18B20: no sensor answers on the 1-Wire bus")
        if len(roms) < len(slots):
            raise OSError("DS18B20: %d slots but %d sensors found" % (len(slots), len(roms)))
        self.roms = tuple(roms[: len(slots)])
        self.slots = tuple(slots)
        self.raw = raw
        self.convert_ms = convert_ms
        self.errors = 0
        self._scratch = bytearray(9)

    def read(self, values):
        """Convert on every sensor at once, wait, and read each scratchpad."""
        ow = self.ow
        if not ow.reset():
            self.errors += 1
            return
        ow.writebyte(_SKIP_ROM)
        ow.writebyte(_CONVERT_T)
        _sleep_ms(self.convert_ms)
        s = self._scratch
        for i in range(len(self.slots)):
            if not ow.reset():
                self.errors += 1
                continue
            ow.writebyte(_MATCH_ROM)
            ow.write(self.roms[i])
            ow.writebyte(_READ_SCRATCH)
            ow.readinto(s)
            if crc8(s, 8) != s[8]:
                self.errors += 1
                continue
            t = s[0] | (s[1] << 8)
            if t & 0x8000:
                t -= 0x10000
            values[self.slots[i]] = t if self.raw else centi(t)


class Sensor(DS18B20):
    """The DS18B20s that `precast build --sensor ds18b20` set up: pin, template slots."""

    def __init__(self, tpl, cfg):
        from ..buses import onewire_bus

        DS18B20.__init__(
            self,
            onewire_bus(cfg),
            slots=getattr(cfg, "DS18B20_SLOTS", (0,)),
            raw=getattr(cfg, "DS18B20_RAW", False),
        )
