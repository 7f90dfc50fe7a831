"""Battery voltage from an ADC behind a resistor divider, in mV.

The pin sees the battery through a divider (e.g. 100k over 100k halves
it); `ratio_milli` is the battery voltage over the pin voltage, times 1000
(2000 for halving). Where the port calibrates its ADC (ESP32's
`ADC.read_uv()`, which applies the eFuse calibration) that is used;
elsewhere `read_u16()` is scaled by the reference voltage (3300 mV on a
Pico W's ADC). Averaging `samples` reads steadies a noisy ADC.
"""


class Battery:
    """An ADC battery reading; read(values) writes mV into values[slot]."""

    def __init__(self, adc, ratio_milli=2000, slot=0, samples=4, vref_mv=3300):
        self.adc = adc
        self.ratio_milli = ratio_milli
        self.slot = slot
        self.samples = samples
        self.vref_mv = vref_mv
        try:
            self._read_uv = adc.read_uv
        except AttributeError:  # no calibrated read on this port (rp2, older ESP32 firmware)
            self._read_uv = None

    def millivolts(self):
        """The battery voltage in mV, from `samples` ADC reads."""
        total = 0
        n = self.samples
        if self._read_uv is not None:
            for _ in range(n):
                total += self._read_uv() // 1000  # mV at the pin; uV sums pass 2**30 on 32-bit
            pin_mv = total // n
        else:
            for _ in range(n):
                total += self.adc.read_u16()
            pin_mv = (total // n) * self.vref_mv // 65535
        return pin_mv * self.ratio_milli // 1000

    def read(self, values):
        """Write the battery voltage in mV into values[slot]."""
        values[self.slot] = self.millivolts()


class Sensor(Battery):
    """The battery reading `precast build --sensor battery` set up: pin, divider, slot."""

    def __init__(self, tpl, cfg):
        from ..buses import adc

        Battery.__init__(
            self,
            adc(cfg),
            getattr(cfg, "BATTERY_RATIO_MILLI", 2000),
            getattr(cfg, "BATTERY_SLOT", 0),
        )
