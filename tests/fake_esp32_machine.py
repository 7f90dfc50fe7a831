"""A fake `machine` module for the MicroPython unix port, copied into a bundle as machine.py
(a file there shadows the port's built-in `machine`, which is extensible). Not real: this
machine has no ESP32. It stands in for the two things a deep-sleeping ESP32 node uses:

- RTC().memory(): ESP32's RTC user memory, as ports/esp32/machine_rtc.c has it: up to
  MICROPY_HW_RTC_USER_MEM_MAX (2,048) bytes, more refused with ValueError("buffer too long")
  before anything is written, kept across deep sleep and resets (RTC_NOINIT_ATTR). Here it
  lives in a file beside main.py, so it outlives the process as the real one outlives a boot.
- deepsleep(ms): the board powers down and boots again into main.py. Here the process ends
  (SystemExit, so app's finally still runs, which a board would not), leaving the ms asked
  for in `deepsleep_ms`; the test waits that long and starts main.py again.

lightsleep(ms) waits. Nothing else of machine is here: the firmware falls back as on the
unix port (no WDT, no Pin).
"""

import sys
import time

_MEM = "rtc_memory.bin"
_MAX = 2048


class RTC:
    def memory(self, data=None):
        if data is None:
            try:
                with open(_MEM, "rb") as f:
                    return f.read()
            except OSError:
                return b""
        if len(data) > _MAX:
            raise ValueError("buffer too long")
        with open(_MEM, "wb") as f:
            f.write(data)
        return None


def lightsleep(ms=0):
    time.sleep_ms(ms)


def deepsleep(ms=0):
    with open("deepsleep_ms", "w") as f:
        f.write(str(ms))
    sys.exit(0)
