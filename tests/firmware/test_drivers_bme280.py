"""BME280 driver: its integer compensation against the datasheet, on CPython and MicroPython.

Judges: the datasheet's published example (dig_T1..P9, adc_T=519888 ->
25.08 degC; adc_P=415148 -> 100653.27 Pa), a reading posted with its raw
registers on Bosch's community forum (24.44 degC, 54.17 %RH), the
datasheet's integer formulas written out here verbatim with C's int32 /
uint32 types checked at every step, and its double-precision formulas.
"""

from __future__ import annotations

import ast
import inspect
import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kit import firmware_on_path, run_script
from strategies import examples

firmware_on_path()

from drivers_fakes import FakeI2C, bme280_calibration  # noqa: E402
from precast_fw.sensors.bme280 import BME280  # noqa: E402

# Bosch's example (BMP280 datasheet 3.12; the BME280 shares T and P): T1..T3, P1..P9.
DS_T = (27504, 26435, -1000)
DS_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
DS_H = (75, 362, 0, 313, 50, 30)  # typical humidity trimming (no published example)
DS_ADC_T, DS_ADC_P = 519888, 415148

# community.bosch-sensortec.com, "BME280 Data to test Calculations" (2019): 0x88..0x9F,
# 0xA1, 0xE1..0xE7 and the data registers 0xF7..0xFE as read from a part.
FORUM_CAL = bytes.fromhex(
    "6c6e77663200a89227d5d00b6f18caff f9ffac260ad8bd10 4b 6501 00 140b00 1e".replace(" ", "")
)
FORUM_DATA = bytes.fromhex("5533808 17fb07913".replace(" ", ""))


def forum_calibration() -> tuple[bytes, bytes]:
    return FORUM_CAL[:24] + bytes([0, FORUM_CAL[24]]), FORUM_CAL[25:]


def unpack(d: bytes) -> tuple[int, int, int]:
    """(adc_T, adc_P, adc_H) from the 8 data bytes."""
    return (
        (d[3] << 12) | (d[4] << 4) | (d[5] >> 4),
        (d[0] << 12) | (d[1] << 4) | (d[2] >> 4),
        (d[6] << 8) | d[7],
    )


def sensor(calib: tuple[bytes, bytes]) -> BME280:
    return BME280(FakeI2C(calib))


# ---- the datasheet's formulas, verbatim, in C's types -----------------------------------------


def s32(x: int) -> int:
    assert -(2**31) <= x < 2**31, f"int32 overflow: {x}"
    return x


def u32(x: int) -> int:
    assert 0 <= x < 2**32, f"uint32 overflow: {x}"
    return x


class Reference:
    """BME280 datasheet 4.2.3 (T, H int32) and 8.2 (P int32), each step range-checked."""

    def __init__(self, t: tuple[int, ...], p: tuple[int, ...], h: tuple[int, ...]) -> None:
        self.T1, self.T2, self.T3 = t
        self.P1, self.P2, self.P3, self.P4, self.P5, self.P6, self.P7, self.P8, self.P9 = p
        self.H1, self.H2, self.H3, self.H4, self.H5, self.H6 = h
        self.t_fine = 0

    def T(self, adc_T: int) -> int:
        var1 = s32((s32(s32((adc_T >> 3) - s32(self.T1 << 1)) * self.T2)) >> 11)
        x = s32((adc_T >> 4) - self.T1)
        var2 = s32((s32(s32(x * x) >> 12) * self.T3) >> 14)
        self.t_fine = s32(var1 + var2)
        return s32(self.t_fine * 5 + 128) >> 8

    def P(self, adc_P: int) -> int:
        var1 = s32((self.t_fine >> 1) - 64000)
        var2 = s32(s32(s32((var1 >> 2) * (var1 >> 2)) >> 11) * self.P6)
        var2 = s32(var2 + s32(s32(var1 * self.P5) << 1))
        var2 = s32((var2 >> 2) + s32(self.P4 << 16))
        var1 = s32(
            s32(
                s32(s32(self.P3 * s32(s32((var1 >> 2) * (var1 >> 2)) >> 13)) >> 3)
                + s32(s32(self.P2 * var1) >> 1)
            )
            >> 18
        )
        var1 = s32(s32(s32(32768 + var1) * self.P1) >> 15)
        if var1 == 0:
            return 0
        p = u32(u32(u32(1048576 - adc_P) - (var2 >> 12)) * 3125)
        p = u32((p << 1) // var1) if p < 0x80000000 else u32((p // var1) * 2)
        var1 = s32(s32(self.P9 * s32(((p >> 3) * (p >> 3)) >> 13)) >> 12)
        var2 = s32(s32((p >> 2) * self.P8) >> 13)
        return u32(p + ((var1 + var2 + self.P7) >> 4))

    def H(self, adc_H: int) -> int:
        """In the datasheet's Q22.10 %RH."""
        v = s32(self.t_fine - 76800)
        a = s32(s32(s32(s32(adc_H << 14) - s32(self.H4 << 20) - s32(self.H5 * v)) + 16384) >> 15)
        b = s32(s32(v * self.H6) >> 10) * s32(s32(s32(v * self.H3) >> 11) + 32768)
        b = s32(s32(s32(s32(s32(b) >> 10) + 2097152) * self.H2 + 8192) >> 14)
        v = s32(a * b)
        v = s32(v - s32(s32(s32(s32((v >> 15) * (v >> 15)) >> 7) * self.H1) >> 4))
        v = min(max(v, 0), 419430400)
        return v >> 12


def double(t, p, h, adc_T, adc_P, adc_H):  # type: ignore[no-untyped-def]
    """The datasheet's double-precision formulas (8.1): degC, Pa, %RH."""
    T1, T2, T3 = t
    P1, P2, P3, P4, P5, P6, P7, P8, P9 = p
    H1, H2, H3, H4, H5, H6 = h
    v1 = (adc_T / 16384.0 - T1 / 1024.0) * T2
    v2 = (adc_T / 131072.0 - T1 / 8192.0) ** 2 * T3
    t_fine = int(v1 + v2)
    T = (v1 + v2) / 5120.0
    v1 = t_fine / 2.0 - 64000.0
    v2 = v1 * v1 * P6 / 32768.0
    v2 = v2 + v1 * P5 * 2.0
    v2 = v2 / 4.0 + P4 * 65536.0
    v1 = (P3 * v1 * v1 / 524288.0 + P2 * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * P1
    pr = 1048576.0 - adc_P
    pr = (pr - v2 / 4096.0) * 6250.0 / v1
    v1 = P9 * pr * pr / 2147483648.0
    v2 = pr * P8 / 32768.0
    pr = pr + (v1 + v2 + P7) / 16.0
    hv = t_fine - 76800.0
    hv = (adc_H - (H4 * 64.0 + H5 / 16384.0 * hv)) * (
        H2 / 65536.0 * (1.0 + H6 / 67108864.0 * hv * (1.0 + H3 / 67108864.0 * hv))
    )
    hv = hv * (1.0 - H1 * hv / 524288.0)
    return T, pr, min(max(hv, 0.0), 100.0)


# ---- CPython -----------------------------------------------------------------------------------


def test_datasheet_example_temperature_and_pressure() -> None:
    b = sensor(bme280_calibration(DS_T, DS_P, DS_H))
    assert b.temperature(DS_ADC_T) == 2508  # 25.08 degC
    assert b.t_fine == 128422
    p = b.pressure(DS_ADC_P)
    ref = Reference(DS_T, DS_P, DS_H)
    ref.T(DS_ADC_T)
    assert p == ref.P(DS_ADC_P) == 100656  # the 32-bit formula's own answer
    assert abs(p - 100653.27) < 4  # the datasheet's 64-bit/double answer, 1 Pa resolution


def test_forum_registers_end_to_end() -> None:
    """Raw registers through the driver's read(): 24.44 degC and 54.17 %RH as posted."""
    i2c = FakeI2C(forum_calibration(), busy_polls=3)
    b = BME280(i2c)
    assert (b.T1, b.P1, b.H1, b.H2, b.H4, b.H5, b.H6) == (28268, 37544, 75, 357, 331, 0, 30)
    i2c.set_raw(*unpack(FORUM_DATA))
    values = [0, 0, 0, 0]
    b.read(values)
    assert values[0] == 2444
    assert abs(values[1] - 5417) <= 2
    t, p, h = double(
        (b.T1, b.T2, b.T3),
        (b.P1, b.P2, b.P3, b.P4, b.P5, b.P6, b.P7, b.P8, b.P9),
        (b.H1, b.H2, b.H3, b.H4, b.H5, b.H6),
        *unpack(FORUM_DATA),
    )
    assert abs(values[0] / 100 - t) <= 0.011
    assert abs(values[1] / 100 - h) <= 0.05
    assert abs(values[2] - p) < 4
    assert values[3] == 0  # not one of its slots
    # ctrl_hum (1x) is written before the first ctrl_meas; each read starts forced mode 1x/1x
    assert i2c.writes[0] == (0xF2, b"\x01")
    assert i2c.writes[-1] == (0xF4, bytes([0b00100101]))


def test_slots_and_skips() -> None:
    i2c = FakeI2C(bme280_calibration(DS_T, DS_P, DS_H), address=0x77)
    b = BME280(i2c, address=0x77, slots=(2, -1, 0))
    i2c.set_raw(DS_ADC_T, DS_ADC_P, 30000)
    values = [-1, -1, -1]
    b.read(values)
    assert values == [100656, -1, 2508]


def test_absent_or_wrong_chip_is_an_error() -> None:
    with pytest.raises(OSError, match="nothing answers at 0x76"):
        BME280(FakeI2C(bme280_calibration(DS_T, DS_P, DS_H), address=0x77))
    with pytest.raises(OSError, match="chip id 0x58"):
        BME280(FakeI2C(bme280_calibration(DS_T, DS_P, DS_H), chip_id=0x58))  # a BMP280


calibrations = st.sampled_from(
    [
        (DS_T, DS_P, DS_H),
        (
            (28268, 26231, 50),
            (37544, -10969, 3024, 6255, -54, -7, 9900, -10230, 4285),
            (75, 357, 0, 331, 0, 30),
        ),
    ]
)


@settings(max_examples=examples(400), deadline=None)
@given(
    calibrations,
    st.integers(300000, 700000),
    st.integers(250000, 500000),
    st.integers(0, 65535),
)
def test_matches_the_datasheet_formulas(cal, adc_t: int, adc_p: int, adc_h: int) -> None:  # type: ignore[no-untyped-def]
    t, p, h = cal
    b = sensor(bme280_calibration(t, p, h))
    ref = Reference(t, p, h)
    assume(-4000 <= b.temperature(adc_t) <= 8500)  # the BME280's operating range, -40..85 degC
    assert b.temperature(adc_t) == ref.T(adc_t)
    assert b.t_fine == ref.t_fine
    assert b.pressure(adc_p) == ref.P(adc_p)
    q = ref.H(adc_h)
    got_h = b.humidity(adc_h)
    assert got_h == (q * 100 + 512) // 1024  # Q22.10 to hundredths, halves up
    dt, dp, dh = double(t, p, h, adc_t, adc_p, adc_h)
    assert abs(b.temperature(adc_t) / 100 - dt) <= 0.011  # 0.01 degC steps, floor shifts
    if 30000 <= dp <= 110000:  # the sensor's range; the 32-bit formula drifts beyond it
        # 5.9 Pa at worst over a fine grid of the range, against the part's own +-100 Pa
        assert abs(b.pressure(adc_p) - dp) <= 8
    assert abs(got_h / 100 - dh) <= 0.05


def instrumented_bme280() -> Any:
    """The driver module with every binary operation's result passed through a recorder."""
    from precast_fw.sensors import bme280

    class Record(ast.NodeTransformer):
        def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
            self.generic_visit(node)
            call = ast.Call(ast.Name("_seen", ast.Load()), [node, ast.Constant(node.lineno)], [])
            return ast.copy_location(call, node)

    tree = ast.fix_missing_locations(Record().visit(ast.parse(inspect.getsource(bme280))))
    ns: dict[str, Any] = {"__name__": "bme280_recorded", "big": {}}

    def seen(v: int, line: int) -> int:
        if abs(v) >= 2**30:
            ns["big"][line] = v
        return v

    ns["_seen"] = seen
    exec(compile(tree, bme280.__file__, "exec"), ns)
    return ns


def test_no_value_passes_a_32_bit_ports_small_int() -> None:
    """Over -40..85 degC, 300..1100 hPa and 0..100 %RH every intermediate stays below 2**30:
    on ESP32 (31-bit small ints) a bigger one would be a heap object, every reading."""
    ns = instrumented_bme280()
    for t, p, h in (
        (DS_T, DS_P, DS_H),
        (
            (28268, 26231, 50),
            (37544, -10969, 3024, 6255, -54, -7, 9900, -10230, 4285),
            (75, 357, 0, 331, 0, 30),
        ),
    ):
        ref = sensor(bme280_calibration(t, p, h))
        b = ns["BME280"](FakeI2C(bme280_calibration(t, p, h)))
        for adc_t in range(300000, 700001, 4001):
            if not -4000 <= ref.temperature(adc_t) <= 8500:
                continue
            b.temperature(adc_t)
            for adc_p in range(150000, 600001, 9001):
                if 30000 <= ref.pressure(adc_p) <= 110000:
                    b.pressure(adc_p)
            for adc_h in range(0, 65536, 1499):
                if 0 < ref.humidity(adc_h) < 10000:
                    b.humidity(adc_h)
    assert ns["big"] == {}, f"line: value {ns['big']}"


# ---- the same on MicroPython ---------------------------------------------------------------------

MP_SCRIPT = """
import json, micropython
from drivers_fakes import FakeI2C, bme280_calibration
from precast_fw.sensors.bme280 import BME280
out = []
for cal, raws in json.loads(%r):
    i2c = FakeI2C(bme280_calibration(*cal), busy_polls=2)
    b = BME280(i2c)
    v = [0, 0, 0]
    for adc_t, adc_p, adc_h in raws:
        i2c.set_raw(adc_t, adc_p, adc_h)
        b.read(v)
        out.append(list(v))
# steady state: read() allocates nothing (nor does the fake, once it stops recording writes)
i2c = FakeI2C(bme280_calibration(*json.loads(%r)), busy_polls=1)
i2c.record = False
b = BME280(i2c)
b.read(v)
micropython.heap_lock()
for i in range(50):
    b.read(v)
    b.temperature(519888 + i)
    b.pressure(415148 - i)
    b.humidity(30000 + i)
micropython.heap_unlock()
print(json.dumps(out))
"""


@pytest.mark.usefixtures("mp_port")
def test_on_micropython() -> None:
    cases = [
        [[DS_T, DS_P, DS_H], [[DS_ADC_T, DS_ADC_P, 30000], [430000, 300000, 50000]]],
        [
            [
                list(x)
                for x in (
                    (28268, 26231, 50),
                    (37544, -10969, 3024, 6255, -54, -7, 9900, -10230, 4285),
                    (75, 357, 0, 331, 0, 30),
                )
            ],
            [list(unpack(FORUM_DATA)), [600000, 480000, 100]],
        ],
    ]
    r = run_script(MP_SCRIPT % (json.dumps(cases), json.dumps([DS_T, DS_P, DS_H])))
    got = json.loads(r.stdout)
    want = []
    for (t, p, h), raws in cases:
        i2c = FakeI2C(bme280_calibration(t, p, h))
        b = BME280(i2c)
        for raw in raws:
            i2c.set_raw(*raw)
            v = [0, 0, 0]
            b.read(v)
            want.append(v)
    assert got == want
    ref = Reference(DS_T, DS_P, DS_H)  # the datasheet's integer formulas, written out here
    ref.T(DS_ADC_T)
    assert got[0] == [2508, (ref.H(30000) * 100 + 512) // 1024, 100656]
    assert got[2][0] == 2444
