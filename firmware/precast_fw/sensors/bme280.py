"""BME280 temperature, humidity and pressure over I2C, compensated in integers.

Bosch BME280 datasheet (BST-BME280-DS002): chip id 0x60 at 0xD0, trimming
parameters at 0x88..0xA1 and 0xE1..0xE7 (section 5.4, table 16), the burst
read of 0xF7..0xFE (press[19:0], temp[19:0], hum[15:0]), and the integer
compensation of sections 4.2.3 and 8.2: temperature and humidity in 32-bit
integers, pressure in the 32-bit variant. Readings are fixed point, as the
templates carry them: temperature in 0.01 degC, humidity in 0.01 %RH,
pressure in Pa.

Each read() starts one measurement in forced mode (1x oversampling of all
three, 9.3 ms at most, datasheet 9.1) and polls the status register; the
buffers are allocated once, so a read allocates nothing.
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


ADDRESS = const(0x76)  # SDO to GND; 0x77 with SDO to VDDIO
CHIP_ID = const(0x60)
_REG_ID = const(0xD0)
_REG_CALIB_TP = const(0x88)  # 26 bytes: dig_T1..dig_P9, a reserved byte, dig_H1
_REG_CALIB_H = const(0xE1)  # 7 bytes: dig_H2..dig_H6
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_DATA = const(0xF7)  # 8 bytes
_MEASURING = const(0x08)  # status bit 3: a conversion is running
# osrs_t = 1x (bits 7:5), osrs_p = 1x (bits 4:2), mode = forced (bits 1:0)
_CTRL_MEAS_FORCED = const(0b001_001_01)
_OSRS_H_1X = const(0x01)
_POLLS = const(20)  # 2 ms apart: 40 ms, four times the longest 1x conversion


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def _s12(v):
    return v - 0x1000 if v & 0x800 else v


class BME280:
    """A BME280 on an I2C bus; read(values) writes T, RH, p into values[slots[i]]."""

    def __init__(self, i2c, address=ADDRESS, slots=(0, 1, 2)):
        # slots: where temperature, humidity and pressure go in values; -1 skips one.
        self.i2c = i2c
        self.address = address
        self.slot_t, self.slot_h, self.slot_p = slots
        self.t_fine = 0
        self._one = bytearray(1)
        self._data = bytearray(8)
        try:
            i2c.readfrom_mem_into(address, _REG_ID, self._one)
        except OSError:  # ENODEV/ETIMEDOUT: no acknowledge at that address
            raise OSError("BME280: nothing answers at 0x%02x" % address) from None
        if self._one[0] != CHIP_ID:
            raise OSError("BME280: chip id 0x%02x at 0x%02x, not 0x60" % (self._one[0], address))
        c = bytearray(26)
        i2c.readfrom_mem_into(address, _REG_CALIB_TP, c)
        h = bytearray(7)
        i2c.readfrom_mem_into(address, _REG_CALIB_H, h)
        self.set_calibration(c, h)
        # ctrl_hum takes effect at the next ctrl_meas write, which every read() does.
        self._one[0] = _OSRS_H_1X
        i2c.writeto_mem(address, _REG_CTRL_HUM, self._one)

    def set_calibration(self, c, h):
        """Take the trimming parameters from the bytes of 0x88..0xA1 and 0xE1..0xE7."""
        self.T1 = _u16(c, 0)
        self.T2 = _s16(c, 2)
        self.T3 = _s16(c, 4)
        self.P1 = _u16(c, 6)
        self.P2 = _s16(c, 8)
        self.P3 = _s16(c, 10)
        self.P4 = _s16(c, 12)
        self.P5 = _s16(c, 14)
        self.P6 = _s16(c, 16)
        self.P7 = _s16(c, 18)
        self.P8 = _s16(c, 20)
        self.P9 = _s16(c, 22)
        self.H1 = c[25]
        self.H2 = _s16(h, 0)
        self.H3 = h[2]
        # dig_H4 = 0xE4 << 4 | 0xE5[3:0]; dig_H5 = 0xE6 << 4 | 0xE5[7:4]; both signed 12-bit
        self.H4 = _s12((h[3] << 4) | (h[4] & 0x0F))
        self.H5 = _s12((h[5] << 4) | (h[4] >> 4))
        self.H6 = h[6] - 0x100 if h[6] & 0x80 else h[6]

    def read(self, values):
        """Measure once and write the fixed-point readings into values."""
        i2c = self.i2c
        one = self._one
        one[0] = _CTRL_MEAS_FORCED
        i2c.writeto_mem(self.address, _REG_CTRL_MEAS, one)
        for _ in range(_POLLS):
            _sleep_ms(2)
            i2c.readfrom_mem_into(self.address, _REG_STATUS, one)
            if not one[0] & _MEASURING:
                break
        d = self._data
        i2c.readfrom_mem_into(self.address, _REG_DATA, d)
        t = self.temperature((d[3] << 12) | (d[4] << 4) | (d[5] >> 4))
        if self.slot_t >= 0:
            values[self.slot_t] = t
        if self.slot_h >= 0:
            values[self.slot_h] = self.humidity((d[6] << 8) | d[7])
        if self.slot_p >= 0:
            values[self.slot_p] = self.pressure((d[0] << 12) | (d[1] << 4) | (d[2] >> 4))

    def temperature(self, adc_t):
        """Temperature in 0.01 degC from the raw 20-bit value; sets t_fine (datasheet 4.2.3)."""
        var1 = (((adc_t >> 3) - (self.T1 << 1)) * self.T2) >> 11
        x = (adc_t >> 4) - self.T1
        var2 = (((x * x) >> 12) * self.T3) >> 14
        self.t_fine = var1 + var2
        return (self.t_fine * 5 + 128) >> 8

    def pressure(self, adc_p):
        """Pressure in Pa from the raw 20-bit value, after temperature() (datasheet 8.2)."""
        var1 = (self.t_fine >> 1) - 64000
        # The datasheet squares var1 >> 2 and multiplies var1 by dig_P2; below about -13 degC
        # or above 63 degC those products pass 2**30, a long int (an allocation) on a 32-bit
        # port. So the same floor divisions are taken on split operands, exactly:
        # w*w = h*h*65536 + x with w = h*256 + l, and var1 = m*4096 + n.
        w = var1 >> 2
        if w < 0:
            w = -w
        h = w >> 8
        x = h * (w & 0xFF) * 512 + (w & 0xFF) * (w & 0xFF)
        var2 = ((h * h * 32 + (x >> 11)) * self.P6) + ((var1 * self.P5) << 1)  # (w*w) >> 11
        var2 = (var2 >> 2) + (self.P4 << 16)
        a = (self.P3 * (h * h * 8 + (x >> 13))) >> 3  # (w*w) >> 13
        # (a + ((P2 * var1) >> 1)) >> 18
        var1 = ((((a << 1) + self.P2 * (var1 & 0xFFF)) >> 12) + self.P2 * (var1 >> 12)) >> 7
        # ((32768 + var1) * P1) >> 15, split so no term passes 2**30 (a long int on 32-bit ports)
        var1 = self.P1 + ((var1 * self.P1) >> 15)
        if var1 <= 0:
            return 0  # the datasheet's guard against dividing by zero
        q = 1048576 - adc_p - (var2 >> 12)
        # p = q * 3125; p < 2**31 ? (p << 1) // var1 : (p // var1) * 2, with the quotient
        # taken as a * k + (r * k) // var1 so that q * 6250 never exists as one number.
        if q < 687195:  # q * 3125 < 0x80000000
            a = q // var1
            p = a * 6250 + ((q - a * var1) * 6250) // var1
        else:
            a = q // var1
            p = (a * 3125 + ((q - a * var1) * 3125) // var1) * 2
        var1 = (self.P9 * (((p >> 3) * (p >> 3)) >> 13)) >> 12
        var2 = ((p >> 2) * self.P8) >> 13
        return p + ((var1 + var2 + self.P7) >> 4)

    def humidity(self, adc_h):
        """Relative humidity in 0.01 %RH from the raw 16-bit value, after temperature()."""
        v = self.t_fine - 76800
        v = (
            (((adc_h << 14) - (self.H4 << 20) - (self.H5 * v)) + 16384) >> 15
        ) * (
            ((((((v * self.H6) >> 10) * (((v * self.H3) >> 11) + 32768)) >> 10) + 2097152)
              * self.H2 + 8192) >> 14
        )  # fmt: skip
        v = v - (((((v >> 15) * (v >> 15)) >> 7) * self.H1) >> 4)
        if v < 0:
            v = 0
        elif v > 419430400:
            v = 419430400
        # v >> 12 is %RH in Q22.10; in hundredths, rounded to nearest
        return ((v >> 12) * 100 + 512) >> 10


class Sensor(BME280):
    """The BME280 that `precast build --sensor bme280` set up: bus, address, template slots."""

    def __init__(self, tpl, cfg):
        from ..buses import i2c_bus

        BME280.__init__(
            self,
            i2c_bus(cfg),
            getattr(cfg, "BME280_ADDR", ADDRESS),
            getattr(cfg, "BME280_SLOTS", (0, 1, 2)),
        )
