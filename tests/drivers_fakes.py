"""Stand-ins for sensor hardware this machine cannot have: an I2C bus with a BME280
on it, a 1-Wire bus with DS18B20s, an ADC. Each models the part of the chip's
register or bus protocol its driver uses, from the datasheet, so the drivers
run unchanged against them on CPython and on the MicroPython unix port.
Plain Python, importable by both.
"""

import struct


def bme280_calibration(t, p, h):
    """The bytes of 0x88..0xA1 and 0xE1..0xE7 for dig_T1..3, dig_P1..9, dig_H1..6."""
    c = struct.pack("<HhhHhhhhhhhh", *t, *p) + bytes([0, h[0]])
    h4, h5 = h[3] & 0xFFF, h[4] & 0xFFF
    e = struct.pack("<hB", h[1], h[2]) + bytes(
        [h4 >> 4, (h4 & 0x0F) | ((h5 & 0x0F) << 4), h5 >> 4, h[5] & 0xFF]
    )
    return c, e


class FakeI2C:
    """A machine.I2C with one BME280 (datasheet 5.3's registers) at `address`.

    Not the real bus: this machine has no I2C controller or BME280. A write of
    forced mode to ctrl_meas (0xF4) "measures": the status register reports
    measuring for `busy_polls` reads, then the data registers hold the raw
    values given to set_raw() and the mode returns to sleep.
    """

    def __init__(self, calib, address=0x76, chip_id=0x60, busy_polls=1):
        self.address = address
        self.record = True  # False keeps writeto_mem allocation-free, for heap-lock tests
        self.mem = bytearray(256)
        self.mem[0xD0] = chip_id
        c, e = calib
        self.mem[0x88 : 0x88 + len(c)] = c
        self.mem[0xE1 : 0xE1 + len(e)] = e
        self.busy_polls = busy_polls
        self._busy = 0
        self.raw = (0x80000, 0x80000, 0x8000)  # the chip's "skipped" values
        self.writes = []

    def set_raw(self, adc_t, adc_p, adc_h):
        self.raw = (adc_t, adc_p, adc_h)

    def _check(self, addr):
        if addr != self.address:
            raise OSError(19)  # ENODEV: nothing acknowledges that address

    def readfrom_mem_into(self, addr, reg, buf):
        self._check(addr)
        if reg == 0xF3:
            self.mem[0xF3] = 0x08 if self._busy > 0 else 0
            self._busy -= 1
        for i in range(len(buf)):
            buf[i] = self.mem[reg + i]

    def readfrom_mem(self, addr, reg, n):
        b = bytearray(n)
        self.readfrom_mem_into(addr, reg, b)
        return bytes(b)

    def writeto_mem(self, addr, reg, buf):
        self._check(addr)
        if self.record:
            self.writes.append((reg, bytes(buf)))
        for i in range(len(buf)):
            self.mem[reg + i] = buf[i]
        if reg == 0xF4 and buf[0] & 0x03 in (1, 2):
            t, p, h = self.raw
            m = self.mem
            m[0xF7], m[0xF8], m[0xF9] = p >> 12, (p >> 4) & 0xFF, (p & 0x0F) << 4
            m[0xFA], m[0xFB], m[0xFC] = t >> 12, (t >> 4) & 0xFF, (t & 0x0F) << 4
            m[0xFD], m[0xFE] = h >> 8, h & 0xFF
            m[0xF4] &= 0xFC  # back to sleep mode after one conversion
            self._busy = self.busy_polls


def dallas_crc8(data, n):
    """Bitwise Dallas/Maxim CRC-8 of data[:n], written apart from the driver's."""
    crc = 0
    for k in range(n):
        byte = data[k]
        for i in range(8):
            bit = ((byte >> i) & 1) ^ (crc & 1)
            crc >>= 1
            if bit:
                crc ^= 0x8C
    return crc


_SCRATCH_REST = b"\x4b\x46\x7f\xff\x0c\x10"


class FakeOneWire:
    """A onewire.OneWire with DS18B20s on it (ROM and function commands, datasheet).

    Not the real bus: this machine has no 1-Wire pin or sensor. Each sensor is
    a ROM code and a raw 1/16 degC reading; CONVERT T latches the readings,
    READ SCRATCHPAD after MATCH ROM returns that sensor's 9 bytes with their
    CRC (spoilt when `corrupt` is set). `present=False` drops the presence pulse.
    After set-up it allocates nothing, so heap-lock tests measure the driver.
    """

    def __init__(self, sensors):
        self.sensors = sensors  # list of [rom(bytes), raw]
        self.present = True
        self.corrupt = False
        self.converts = 0
        self._latched = [0x0550] * len(sensors)  # power-on value +85 degC
        self._state = 0  # 0 ROM command, 1 function command, 2 matching, 3 reading
        self._rom = bytearray(8)
        self._nrom = 0
        self._selected = -1
        self._sp = bytearray(9)

    def scan(self):
        return [bytearray(s[0]) for s in self.sensors]

    def reset(self, required=False):
        self._state = 0
        self._selected = -1
        if required and not self.present:
            raise OSError("no presence pulse")
        return self.present

    def writebyte(self, b):
        if self._state == 0:
            if b == 0xCC:
                self._state = 1
            elif b == 0x55:
                self._state = 2
                self._nrom = 0
        elif self._state == 1:
            if b == 0x44:
                self.converts += 1
                for i in range(len(self.sensors)):
                    self._latched[i] = self.sensors[i][1]
            elif b == 0xBE:
                self._state = 3
        elif self._state == 2:
            self._rom[self._nrom] = b
            self._nrom += 1
            if self._nrom == 8:
                for i in range(len(self.sensors)):
                    if self.sensors[i][0] == self._rom:
                        self._selected = i
                self._state = 1

    def write(self, buf):
        for i in range(len(buf)):
            self.writebyte(buf[i])

    def readinto(self, buf):
        if self._state != 3 or self._selected < 0 or not self.present:
            for i in range(len(buf)):
                buf[i] = 0xFF  # nobody drives the bus: it reads as ones
            return
        raw = self._latched[self._selected] & 0xFFFF
        sp = self._sp
        sp[0] = raw & 0xFF
        sp[1] = raw >> 8
        for i in range(2, 8):
            sp[i] = _SCRATCH_REST[i - 2]  # TH, TL, config (12 bits), reserved
        sp[8] = dallas_crc8(sp, 8)
        if self.corrupt:
            sp[0] ^= 0x01
        for i in range(len(buf)):
            buf[i] = sp[i]


class FakeADC:
    """A machine.ADC at a fixed pin voltage. Not real: this machine has no ADC.

    calibrated=True adds ESP32's read_uv(); read_u16() is the 16-bit reading
    of `mv` against a 3300 mV reference, as on rp2.
    """

    def __init__(self, mv, calibrated=True):
        self.mv = mv
        if calibrated:
            self.read_uv = self._read_uv

    def _read_uv(self):
        return self.mv * 1000

    def read_u16(self):
        return self.mv * 65535 // 3300


class FakeRTC:
    """machine.RTC's memory(): bytes that survive deep sleep. Not real: the unix port has none.

    Like ESP32's (ports/esp32/machine_rtc.c), memory(data) keeps a copy of data
    (its length too), refusing more than `size` bytes (MICROPY_HW_RTC_USER_MEM_MAX,
    2048 by default) with ValueError("buffer too long") before writing anything,
    and memory() returns it; it lives as long as this object, i.e. across the
    "reboots" a test simulates by making new stores in one process. size=32 is
    rp2's (its watchdog's scratch registers).
    """

    def __init__(self, size=2048):
        self._mem = bytearray(size)  # made once: a write allocates nothing here
        self._len = 0
        self.writes = 0

    def memory(self, data=None):
        if data is None:
            return bytes(self._mem[: self._len])
        if len(data) > len(self._mem):
            raise ValueError("buffer too long")
        for i in range(len(data)):
            self._mem[i] = data[i]
        self._len = len(data)
        self.writes += 1
        return None


class FakeWDT:
    """machine.WDT: counts feeds. Not real: the unix port has no watchdog."""

    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1
