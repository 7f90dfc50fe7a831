"""The board side of `precast build`: sensors and their pins, sleep, watchdog, seq, WiFi secrets.

Each real sensor driver fills the template fields it recognises by name,
and the template must carry its readings at the driver's fixed point (the
driver gives raw integers; the host owns units):

- bme280: `temperature` (scale 0.01, degC), `humidity` (0.01, %), `pressure` (1, Pa)
- ds18b20: fields named `temperature...` (scale 0.01 degC, or 0.0625 for the raw
  1/16 degC), one per sensor on the bus, in ROM-scan order
- battery: a field named `battery...` or `vbat...` (scale 1, mV)

A field claimed by an earlier sensor in `--sensor a,b` is not claimed again.
These checks run here, at build time, so the device never validates.
The defaults suit an ESP32 DevKit (I2C on SDA 21 / SCL 22, 1-Wire on 4, the
battery divider on ADC1's GPIO 35).
"""

from __future__ import annotations

import argparse
import ast
import os
from pathlib import Path
from typing import Any

from precast.errors import UsageError
from precast.wire.layout import Layout

SENSORS = ("sim", "bme280", "ds18b20", "battery")
SLEEP_MODES = ("none", "light", "deep")
SECRETS_NAME = "precast_secrets.py"
DEFAULT_SEQ_FILE = "precast_seq"
DEFAULT_SEQ_RESERVE = 1000
DEFAULT_SEQ_WRITE_MS = 2000  # firmware seqstore: about one reservation written per 2 s
DEFAULT_WATCHDOG_MS = 30000


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _sensors(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    for n in names:
        if n not in SENSORS:
            raise argparse.ArgumentTypeError(
                f"unknown sensor {n!r} (choose from {', '.join(SENSORS)})"
            )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a sensor named twice in {text!r}")
    if "sim" in names and len(names) > 1:
        raise argparse.ArgumentTypeError("sim fills every field: it does not combine")
    return names


def _ratio(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"divider ratio {v} is outside 1..100")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add build's board options (--sensor, pins, --sleep, --watchdog-ms, --seq-*, --secrets)."""
    g = p.add_argument_group("board")
    g.add_argument(
        "--sensor",
        type=_sensors,
        default=("sim",),
        metavar="NAME[,NAME]",
        help=f"what fills the fields: {', '.join(SENSORS)}; several real ones "
        "comma-separated, e.g. bme280,battery (default sim)",
    )
    g.add_argument("--i2c", type=_int, default=0, metavar="ID", help="I2C controller (default 0)")
    g.add_argument("--i2c-sda", type=_int, default=21, metavar="PIN", help="default 21")
    g.add_argument("--i2c-scl", type=_int, default=22, metavar="PIN", help="default 22")
    g.add_argument("--i2c-freq", type=_int, default=100000, metavar="HZ", help="default 100000")
    g.add_argument(
        "--bme280-addr",
        type=_int,
        default=0x76,
        choices=(0x76, 0x77),
        metavar="ADDR",
        help="0x76 (SDO low, default) or 0x77",
    )
    g.add_argument("--onewire-pin", type=_int, default=4, metavar="PIN", help="default 4")
    g.add_argument(
        "--battery-pin",
        type=_int,
        default=35,
        metavar="PIN",
        help="ADC pin behind the divider (default 35)",
    )
    g.add_argument(
        "--battery-divider",
        type=_ratio,
        default=2.0,
        metavar="RATIO",
        help="battery voltage over pin voltage (default 2: 100k over 100k)",
    )
    g.add_argument(
        "--sleep",
        choices=SLEEP_MODES,
        default="none",
        help="between readings: none (time.sleep_ms), light (machine.lightsleep) "
        "or deep (machine.deepsleep; the board reboots per reading)",
    )
    g.add_argument(
        "--watchdog-ms",
        type=_int,
        default=DEFAULT_WATCHDOG_MS,
        metavar="MS",
        help="machine.WDT timeout where the port has one; 0 turns it off "
        f"(default {DEFAULT_WATCHDOG_MS})",
    )
    g.add_argument(
        "--seq-file",
        default=DEFAULT_SEQ_FILE,
        metavar="NAME",
        help="file on the board that keeps the seq across resets ('' to start "
        f"every boot at 0; default {DEFAULT_SEQ_FILE})",
    )
    g.add_argument(
        "--seq-reserve",
        type=_int,
        default=None,
        metavar="R",
        help="seqs reserved per flash write: a reset skips up to R (default "
        f"{DEFAULT_SEQ_RESERVE}, growing at high rates so that the flash is written "
        f"about every {DEFAULT_SEQ_WRITE_MS // 1000} s)",
    )
    g.add_argument(
        "--secrets",
        metavar="FILE",
        help=f"a Python file with WIFI_SSID and WIFI_PASSWORD, copied into DIR as "
        f"{SECRETS_NAME} (never listed)",
    )


def _opt(options: Any, name: str, default: Any) -> Any:
    return getattr(options, name, default)


def _claim(lay: Layout, taken: set[int], prefixes: tuple[str, ...], exact: bool) -> list[int]:
    out = []
    for i, s in enumerate(lay.fields):
        name = s.name.lower()
        hit = name in prefixes if exact else name.startswith(prefixes)
        if hit and i not in taken:
            out.append(i)
    return out


def _need(lay: Layout, i: int, sensor: str, scales: tuple[float, ...], what: str) -> None:
    f = lay.fields[i].field
    if f.type == "f32" or f.scale not in scales or f.offset != 0:
        want = " or ".join(str(x) for x in scales)
        raise UsageError(
            f"field {f.name!r} ({f.type}, scale {f.scale}, offset {f.offset}): {sensor} gives "
            f"{what}, so the field needs an integer type, scale {want} and offset 0"
        )


def sensor_entries(names: tuple[str, ...], lay: Layout) -> dict[str, Any]:
    """Config entries that tell each driver which fields (slots) it fills."""
    out: dict[str, Any] = {}
    taken: set[int] = set()
    for name in names:
        if name == "sim":
            continue
        if name == "bme280":
            slots = []
            for q, (scale, what) in {
                "temperature": (0.01, "0.01 degC"),
                "humidity": (0.01, "0.01 %RH"),
                "pressure": (1, "Pa"),
            }.items():
                hit = _claim(lay, taken, (q,), exact=True)
                if hit:
                    _need(lay, hit[0], name, (scale,), what)
                    taken.add(hit[0])
                slots.append(hit[0] if hit else -1)
            if slots == [-1, -1, -1]:
                raise UsageError("bme280: the template has no temperature, humidity or pressure")
            out["BME280_SLOTS"] = tuple(slots)
        elif name == "ds18b20":
            hit = _claim(lay, taken, ("temperature",), exact=False)
            if not hit:
                raise UsageError("ds18b20: the template has no free temperature... field")
            for i in hit:
                _need(lay, i, name, (0.01, 0.0625), "0.01 degC (or 1/16 degC raw)")
            scales = {lay.fields[i].field.scale for i in hit}
            if len(scales) > 1:
                raise UsageError("ds18b20: its temperature fields need one scale, 0.01 or 0.0625")
            taken.update(hit)
            out["DS18B20_SLOTS"] = tuple(hit)
            out["DS18B20_RAW"] = scales == {0.0625}
        elif name == "battery":
            hit = _claim(lay, taken, ("battery", "vbat"), exact=False)
            if not hit:
                raise UsageError("battery: the template has no free battery... or vbat... field")
            _need(lay, hit[0], name, (1,), "mV")
            taken.add(hit[0])
            out["BATTERY_SLOT"] = hit[0]
    return out


def config_entries(options: Any, lay: Layout) -> dict[str, Any]:
    """precast_config.py's board entries for build's options."""
    names: tuple[str, ...] = _opt(options, "sensor", ("sim",))
    if isinstance(names, str):  # a caller that passed the name itself
        names = _sensors(names)
    sleep = _opt(options, "sleep", "none")
    seq_file = _opt(options, "seq_file", DEFAULT_SEQ_FILE) or None
    reserve = _opt(options, "seq_reserve", None)
    # No R given: the board's store grows its reservation at high rates (SEQ_WRITE_MS).
    write_ms = DEFAULT_SEQ_WRITE_MS if reserve is None else 0
    if reserve is None:
        reserve = DEFAULT_SEQ_RESERVE
    if reserve < 1:
        raise UsageError(f"--seq-reserve must be 1 or more, got {reserve}")
    if sleep == "deep" and seq_file is None:
        raise UsageError("--sleep deep reboots every reading: it needs a --seq-file")
    entries: dict[str, Any] = {
        "SENSOR": ",".join(names),
        "SLEEP": sleep,
        "WATCHDOG_MS": _opt(options, "watchdog_ms", DEFAULT_WATCHDOG_MS),
        "SEQ_FILE": seq_file,
        "SEQ_RESERVE": reserve,
        "SEQ_WRITE_MS": write_ms,
    }
    if "bme280" in names:
        entries.update(
            I2C_ID=_opt(options, "i2c", 0),
            I2C_SDA=_opt(options, "i2c_sda", 21),
            I2C_SCL=_opt(options, "i2c_scl", 22),
            I2C_FREQ=_opt(options, "i2c_freq", 100000),
            BME280_ADDR=_opt(options, "bme280_addr", 0x76),
        )
    if "ds18b20" in names:
        entries["ONEWIRE_PIN"] = _opt(options, "onewire_pin", 4)
    if "battery" in names:
        entries["BATTERY_PIN"] = _opt(options, "battery_pin", 35)
        entries["BATTERY_RATIO_MILLI"] = round(_opt(options, "battery_divider", 2.0) * 1000)
    entries.update(sensor_entries(names, lay))
    return entries


def write_secrets(options: Any, out: Path) -> Path | None:
    """Copy --secrets into out as precast_secrets.py (mode 0600); its path, or None.

    The file is checked (Python, WIFI_SSID a string) without its contents ever
    appearing in a message, and it is not part of build's listing.
    """
    src = _opt(options, "secrets", None)
    dst = out / SECRETS_NAME
    if not src:
        return None
    try:
        text = Path(src).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--secrets {src}: cannot read it ({type(e).__name__})") from None
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise UsageError(f"--secrets {src}: not Python (line {e.lineno})") from None
    names = {
        t.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    ssid = names.get("WIFI_SSID")
    if not (isinstance(ssid, ast.Constant) and isinstance(ssid.value, str) and ssid.value):
        raise UsageError(f'--secrets {src}: needs WIFI_SSID = "..." (and WIFI_PASSWORD)')
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(dst, 0o600)
    return dst
