"""What the SPI Ethernet drivers share: the bus, the reset line, errnos, bounded waits, counts.

transport_w5500 and transport_enc28j60 are subclasses of Chip. The SPI
controller, its pins and clock, CS and the reset pin come from
precast_config (SPI_ID, SPI_BAUD, SPI_SCK, SPI_MOSI, SPI_MISO, CS_PIN,
ETH_RESET), which `precast build` writes from the host's wiring table
(precast/boards/ethernet.py): no driver keeps pin numbers of its own.
ETH_LINK_MS is how long the first open waits for a link. A test passes
its own bus (`spi=`, `cs=`) and the config's ETH_RESET may be a Pin-like
callable.

A wait on the chip is bounded by polls and time together (Bound): a
process switched out for a while (the unix port on a busy machine) is
not a stuck chip, so a wait gives up only after MIN_POLLS polls *and*
its time. Bound allocates nothing: the hot path uses it.
"""

import time

from micropython import const

# errno numbers as Linux and MicroPython's ports have them (the errno module lacks some).
EIO = const(5)
ENODEV = const(19)
EMSGSIZE = const(90)
ENETDOWN = const(100)
ENOBUFS = const(105)
ENOTCONN = const(107)
ETIMEDOUT = const(110)
MAX_FRAME = const(1514)  # Ethernet's largest frame without the FCS
MIN_POLLS = const(8)


class Bound:
    """A bounded wait: start(us), then over() after each poll, True once polls and time are up."""

    def __init__(self):
        self.t0 = time.ticks_us()
        self.us = 0
        self.polls = 0

    def start(self, us):
        self.t0 = time.ticks_us()
        self.us = us
        self.polls = 0

    def over(self):
        self.polls += 1
        return self.polls > MIN_POLLS and time.ticks_diff(time.ticks_us(), self.t0) > self.us


def reset_pin(cfg):
    """The chip's reset line from ETH_RESET: None (not wired), a Pin-like callable, or a pin."""
    pin = getattr(cfg, "ETH_RESET", None)
    if pin is None or callable(pin):
        return pin
    from .buses import output_pin

    return output_pin(pin)


class Chip:
    """An SPI Ethernet transport's common half: send(mv) raises OSError; reopen() sets it up.

    A subclass gives NAME, COUNTS ((label, attribute) pairs for summary()),
    NO_LINK (the text of a reopen that finds no link) and _open(link_ms),
    link() and send(mv); its __init__ calls Chip.__init__, then _open.
    """

    FRAME = True  # sends the whole frame
    NAME = ""
    COUNTS = ()  # type: tuple[tuple[str, str], ...]
    NO_LINK = ""

    def __init__(self, tpl, cfg, spi, cs):
        if spi is None or cs is None:
            from .buses import spi_bus

            spi, cs = spi_bus(cfg)
        self._spi = spi
        self._cs = cs
        self._rst = reset_pin(cfg)
        self._mac = bytes(tpl.FRAME[6:12])  # the template's source MAC
        self._link_ms = getattr(cfg, "ETH_LINK_MS", 5000)
        self._bound = Bound()
        self._up = False
        self._last = 0  # errno of the last failed send
        # What happened, for summary(): chip set-ups, and failures by kind.
        self.resets = 0
        self.timeouts = 0
        self.no_link = 0

    def _open(self, link_ms=0):
        """Reset the chip and set it up for sending (the subclass's)."""
        raise NotImplementedError

    def link(self):
        """True while the PHY says the link is up (the subclass's)."""
        raise NotImplementedError

    def pulse_reset(self, settle_ms):
        """Pulse the reset line, if wired, and give the chip settle_ms to come up."""
        if self._rst is not None:
            self._rst(0)
            time.sleep_ms(1)  # W5500: RSTn low at least 500 us; ENC28J60: 400 ns
            self._rst(1)
            time.sleep_ms(settle_ms)

    def wait_link(self, ms):
        """Wait up to ms for a link (send() says ENETDOWN until the cable is in); True if up."""
        t0 = time.ticks_ms()
        while not self.link():
            if time.ticks_diff(time.ticks_ms(), t0) > ms:
                return False
            time.sleep_ms(10)
        return True

    def reopen(self):
        """Set the chip up again; while only the link is down, the chip is left as it is."""
        if self._last == ENETDOWN and self._up:
            # A reset restarts the PHY's autonegotiation: seconds more without a link.
            if self.link():
                self._last = 0
                return
            raise OSError(ENETDOWN, self.NO_LINK)
        self.close()
        self._open()

    def close(self):
        self._up = False

    def summary(self):
        """What the chip did over the run, in one line."""
        return self.NAME + ": " + " ".join("%s %d" % (k, getattr(self, a)) for k, a in self.COUNTS)
