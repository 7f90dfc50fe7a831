"""DS18B20 driver: datasheet table 1's readings and CRC-8 vectors, on CPython and MicroPython.

Judges: the datasheet's temperature/data table, Maxim application note 27's
ROM example (02 1C B8 01 00 00 00 -> CRC A2), the CRC catalogue's check
value for "123456789" (0xA1), and crcmod's crc-8-maxim.
"""

from __future__ import annotations

import json

import crcmod.predefined
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kit import firmware_on_path, run_script

firmware_on_path()

from drivers_fakes import FakeOneWire  # noqa: E402
from precast_fw.sensors.ds18b20 import DS18B20, centi, crc8  # noqa: E402

# DS18B20 datasheet, table 1: temperature -> 16-bit output at 12 bits.
TABLE = [
    (125.0, 0x07D0),
    (85.0, 0x0550),
    (25.0625, 0x0191),
    (10.125, 0x00A2),
    (0.5, 0x0008),
    (0.0, 0x0000),
    (-0.5, 0xFFF8),
    (-10.125, 0xFF5E),
    (-25.0625, 0xFE6F),
    (-55.0, 0xFC90),
]
ROM_A = bytes.fromhex("28ff641e0f000031")
ROM_B = bytes.fromhex("28aa0b3c05000092")
AN27_ROM = bytes.fromhex("021cb801000000")


def signed(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


def centi_judge(deg: float) -> int:
    """0.01 degC, halves up, from the table's exact degrees (the judge for centi())."""
    import math

    return math.floor(deg * 100 + 0.5)


def test_crc8_vectors() -> None:
    assert crc8(AN27_ROM, 7) == 0xA2
    assert crc8(b"123456789", 9) == 0xA1
    assert crc8(AN27_ROM + b"\xa2", 8) == 0  # data followed by its CRC sums to zero


@given(st.binary(min_size=1, max_size=16))
def test_crc8_matches_crcmod(data: bytes) -> None:
    assert crc8(data, len(data)) == crcmod.predefined.mkCrcFun("crc-8-maxim")(data)


@pytest.mark.parametrize(("deg", "raw"), TABLE)
def test_datasheet_table_through_the_bus(deg: float, raw: int) -> None:
    ow = FakeOneWire([[ROM_A, signed(raw)]])
    values = [0, 0]
    DS18B20(ow, slots=(1,), convert_ms=0).read(values)
    assert values == [0, centi_judge(deg)]
    DS18B20(ow, slots=(0,), raw=True, convert_ms=0).read(values)
    assert values[0] == signed(raw) and signed(raw) / 16 == deg


def test_two_sensors_scanned_and_matched_by_rom() -> None:
    ow = FakeOneWire([[ROM_A, 0x0191], [ROM_B, signed(0xFF5E)]])
    d = DS18B20(ow, slots=(2, 0), convert_ms=0)
    assert d.roms == (ROM_A, ROM_B)
    values = [0, 0, 0]
    d.read(values)
    assert values == [-1012, 0, 2506]  # -10.125 -> -1012 (halves up), 25.0625 -> 2506
    assert ow.converts == 1  # one CONVERT T for the whole bus (SKIP ROM)


def test_bad_crc_and_no_presence_keep_the_last_value_and_count() -> None:
    ow = FakeOneWire([[ROM_A, 0x0191]])
    d = DS18B20(ow, roms=[ROM_A], convert_ms=0)
    values = [0]
    d.read(values)
    assert values == [2506] and d.errors == 0
    ow.sensors[0][1] = 0x0550
    ow.corrupt = True
    d.read(values)
    assert values == [2506] and d.errors == 1
    ow.corrupt = False
    ow.present = False
    d.read(values)
    assert values == [2506] and d.errors == 2
    ow.present = True
    d.read(values)
    assert values == [8500] and d.errors == 2


def test_no_sensor_is_an_error() -> None:
    with pytest.raises(OSError, match="no sensor"):
        DS18B20(FakeOneWire([]))


def test_centi_rounds_halves_up() -> None:
    for raw in range(-880, 2001):
        assert centi(raw) == centi_judge(raw / 16)


MP_SCRIPT = """
import json, micropython
from drivers_fakes import FakeOneWire
from precast_fw.sensors.ds18b20 import DS18B20, crc8
table = json.loads(%r)
out = {"crc": [crc8(bytes.fromhex("021cb801000000"), 7), crc8(b"123456789", 9)], "t": []}
ow = FakeOneWire([[bytes.fromhex("28ff641e0f000031"), 0]])
d = DS18B20(ow, convert_ms=0)
v = [0]
for raw in table:
    ow.sensors[0][1] = raw
    d.read(v)
    out["t"].append(v[0])
# steady state: the driver's read and CRC allocate nothing
d.read(v)
sp = bytearray(9)
micropython.heap_lock()
for i in range(100):
    crc8(sp, 8)
    d.read(v)
micropython.heap_unlock()
print(json.dumps(out))
"""


@pytest.mark.usefixtures("mp_port")
def test_on_micropython() -> None:
    raws = [signed(raw) for _, raw in TABLE]
    r = run_script(MP_SCRIPT % json.dumps(raws))
    got = json.loads(r.stdout)
    assert got["crc"] == [0xA2, 0xA1]
    assert got["t"] == [centi_judge(deg) for deg, _ in TABLE]
