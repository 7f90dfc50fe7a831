"""The buses and pins drivers ask for, from the wiring `precast build` wrote into the config.

I2C (bme280), SPI and a reset line (the SPI Ethernet chips), 1-Wire
(ds18b20), an ADC (battery). Each raises OSError with the reason where
the port has no such peripheral (the unix port): a driver opened there
fails in words, not with an AttributeError.
"""

import machine


def i2c_bus(cfg):
    """The I2C bus the config names (I2C_ID, I2C_SCL, I2C_SDA pins)."""
    try:
        return machine.I2C(
            getattr(cfg, "I2C_ID", 0),
            scl=machine.Pin(getattr(cfg, "I2C_SCL", 22)),
            sda=machine.Pin(getattr(cfg, "I2C_SDA", 21)),
            freq=getattr(cfg, "I2C_FREQ", 100000),
        )
    except AttributeError:  # the unix port has no I2C controller
        raise OSError("this port has no machine.I2C: the BME280 needs a board") from None


def spi_bus(cfg):
    """machine.SPI and its chip-select pin (high: idle) from the wiring `precast build` wrote."""
    try:
        spi_id, baud, cs = cfg.SPI_ID, cfg.SPI_BAUD, cfg.CS_PIN
        sck, mosi, miso = cfg.SPI_SCK, cfg.SPI_MOSI, cfg.SPI_MISO
    except AttributeError:
        raise OSError(22, "precast_config has no SPI wiring (SPI_ID .. CS_PIN): precast build "
                      "writes it for --transport w5500|enc28j60") from None  # fmt: skip
    try:
        spi = machine.SPI(
            spi_id,
            baudrate=baud,
            sck=machine.Pin(sck),
            mosi=machine.Pin(mosi),
            miso=machine.Pin(miso),
        )
        pin = machine.Pin(cs, machine.Pin.OUT, value=1)
    except AttributeError:  # the unix port has no SPI: tests pass their own bus
        raise OSError(19, "this port has no machine.SPI: pass spi= and cs=") from None
    return spi, pin


def output_pin(number, value=1):
    """An output pin (a chip's reset line, held high: not in reset)."""
    try:
        return machine.Pin(number, machine.Pin.OUT, value=value)
    except AttributeError:  # the unix port has no pins
        raise OSError(19, "this port has no machine.Pin") from None


def onewire_bus(cfg):
    """The 1-Wire bus on pin ONEWIRE_PIN."""
    try:
        import onewire

        return onewire.OneWire(machine.Pin(getattr(cfg, "ONEWIRE_PIN", 4)))
    except (ImportError, AttributeError):  # the unix port has no pins
        raise OSError("this port has no onewire/machine.Pin: the DS18B20 needs a board") from None


def adc(cfg):
    """The ADC on pin BATTERY_PIN, set to read up to about 3.1 V where the port can."""
    try:
        pin = machine.Pin(getattr(cfg, "BATTERY_PIN", 35))
        try:
            return machine.ADC(pin, atten=machine.ADC.ATTN_11DB)  # ESP32: 0 dB ends at 1.1 V
        except (AttributeError, TypeError):  # rp2: one fixed 0..3.3 V range
            return machine.ADC(pin)
    except AttributeError:  # the unix port has no ADC
        raise OSError("this port has no machine.ADC: the battery reading needs a board") from None
