"""Battery driver: divider arithmetic on calibrated and raw ADCs, on CPython and MicroPython."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kit import firmware_on_path, run_script

firmware_on_path()

from drivers_fakes import FakeADC  # noqa: E402
from precast_fw.sensors.battery import Battery  # noqa: E402


def test_calibrated_read_uv_through_a_halving_divider() -> None:
    values = [0, 0]
    Battery(FakeADC(1850), ratio_milli=2000, slot=1).read(values)
    assert values == [0, 3700]  # a LiPo at 3.70 V seen as 1.85 V at the pin


def test_uncalibrated_read_u16_uses_the_reference() -> None:
    adc = FakeADC(1650, calibrated=False)
    assert not hasattr(adc, "read_uv")
    # 1650 mV -> read_u16 32767 -> 32767 * 3300 // 65535 = 1649 mV at the pin, x3 (Pico's VSYS/3)
    assert Battery(adc, ratio_milli=3000).millivolts() == 1649 * 3


@given(st.integers(0, 3300), st.integers(1000, 11000), st.booleans())
def test_within_a_millivolt_per_ratio_step(pin_mv: int, ratio_milli: int, calibrated: bool) -> None:
    got = Battery(FakeADC(pin_mv, calibrated), ratio_milli=ratio_milli).millivolts()
    exact = pin_mv * ratio_milli / 1000
    # read_u16 quantises to 3300/65535 mV and floors; both paths floor to whole mV
    assert exact - 2 * ratio_milli / 1000 - 1 <= got <= exact


MP_SCRIPT = """
import json, micropython
from drivers_fakes import FakeADC
from precast_fw.sensors.battery import Battery
from precast_fw.sensors.group import Group
a = Battery(FakeADC(1850), ratio_milli=2000, slot=0)
b = Battery(FakeADC(1650, False), ratio_milli=3000, slot=1)
g = Group([a, b])  # what --sensor x,y builds
v = [0, 0]


def steady(n):
    for _ in range(n):
        g.read(v)


g.read(v)
micropython.heap_lock()
steady(100)
micropython.heap_unlock()
print(json.dumps(v))
"""


@pytest.mark.usefixtures("mp_port")
def test_on_micropython() -> None:
    assert json.loads(run_script(MP_SCRIPT).stdout) == [3700, 1649 * 3]
