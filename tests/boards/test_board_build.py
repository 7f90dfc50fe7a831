"""`precast build`'s board options: what goes into precast_config.py, what is refused, secrets."""

from __future__ import annotations

import ast
import stat
from pathlib import Path

from kit import TEMPLATES, precast

ENV = str(TEMPLATES / "env-node.toml")


def config_of(out: Path) -> dict[str, object]:
    """precast_config.py's assignments, read as literals (as the board reads them)."""
    tree = ast.parse((out / "precast_config.py").read_text())
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def build(tmp_path: Path, *args: str, template: str = ENV) -> tuple[int, str, str, Path]:
    out = tmp_path / "b"
    if "--collector" not in args:  # these tests are about the hardware options
        args = (*args, "--collector", "192.0.2.1")
    r = precast("build", template, "--device", "7", "--out", str(out), *args)
    return r.returncode, r.stdout, r.stderr, out


def write_template(tmp_path: Path, fields: str) -> str:
    p = tmp_path / "t.toml"
    p.write_text(f'id = 9\nname = "t"\n{fields}')
    return str(p)


def test_defaults_are_the_simulated_sensor_and_a_seq_file(tmp_path: Path) -> None:
    rc, _, err, out = build(tmp_path)
    assert rc == 0, err
    cfg = config_of(out)
    assert cfg["SENSOR"] == "sim"
    assert cfg["SLEEP"] == "none"
    assert cfg["SEQ_FILE"] == "precast_seq" and cfg["SEQ_RESERVE"] == 1000
    assert cfg["WATCHDOG_MS"] == 30000
    assert "I2C_SDA" not in cfg  # only the chosen sensors' pins
    for module in ("board.py", "seqstore.py", "sensors/sim.py", "transport_udp.py"):
        assert (out / "precast_fw" / module).is_file()
    for module in ("sensors/bme280.py", "sensors/ds18b20.py", "transport_w5500.py", "cmac.py"):
        assert not (out / "precast_fw" / module).exists()  # only what this board imports


def test_bme280_and_battery_fill_env_node_by_field_name(tmp_path: Path) -> None:
    rc, _, err, out = build(
        tmp_path,
        "--sensor",
        "bme280,battery",
        "--i2c-sda",
        "8",
        "--i2c-scl",
        "9",
        "--bme280-addr",
        "0x77",
        "--battery-pin",
        "34",
        "--battery-divider",
        "1.5",
        "--sleep",
        "deep",
    )
    assert rc == 0, err
    cfg = config_of(out)
    # env-node: temperature, humidity, pressure, battery
    assert cfg["SENSOR"] == "bme280,battery"
    assert cfg["BME280_SLOTS"] == (0, 1, 2)
    assert cfg["BATTERY_SLOT"] == 3
    assert (cfg["I2C_ID"], cfg["I2C_SDA"], cfg["I2C_SCL"], cfg["BME280_ADDR"]) == (0, 8, 9, 0x77)
    assert (cfg["BATTERY_PIN"], cfg["BATTERY_RATIO_MILLI"]) == (34, 1500)
    assert cfg["SLEEP"] == "deep"


def test_ds18b20_raw_or_hundredths_by_scale(tmp_path: Path) -> None:
    t = write_template(
        tmp_path,
        '[[field]]\nname = "temperature_in"\ntype = "i16"\nscale = 0.0625\n'
        '[[field]]\nname = "temperature_out"\ntype = "i16"\nscale = 0.0625\n',
    )
    rc, _, err, out = build(tmp_path, "--sensor", "ds18b20", "--onewire-pin", "15", template=t)
    assert rc == 0, err
    cfg = config_of(out)
    assert cfg["DS18B20_SLOTS"] == (0, 1) and cfg["DS18B20_RAW"] is True
    assert cfg["ONEWIRE_PIN"] == 15
    rc, _, err, out = build(tmp_path, "--sensor", "ds18b20,bme280")
    assert rc == 0, err
    cfg = config_of(out)
    # ds18b20 comes first and takes temperature; the BME280 gives humidity and pressure only
    assert cfg["DS18B20_SLOTS"] == (0,) and cfg["DS18B20_RAW"] is False
    assert cfg["BME280_SLOTS"] == (-1, 1, 2)


def test_refusals_are_one_line(tmp_path: Path) -> None:
    wrong_scale = write_template(
        tmp_path, '[[field]]\nname = "temperature"\ntype = "i16"\nscale = 0.1\n'
    )
    cases = [
        ((ENV, "--sleep", "deep", "--seq-file", ""), "needs a --seq-file"),
        ((ENV, "--sensor", "bme280,ds18b20"), "no free temperature"),
        ((str(TEMPLATES / "minimal.toml"), "--sensor", "bme280"), "no temperature, humidity"),
        ((wrong_scale, "--sensor", "bme280"), "scale 0.01"),
        ((ENV, "--sensor", "thermocouple"), "unknown sensor"),
        ((ENV, "--sensor", "sim,battery"), "does not combine"),
        ((ENV, "--seq-reserve", "0"), "1 or more"),
    ]
    for (template, *args), why in cases:
        rc, _, err, _ = build(tmp_path, *args, template=template)
        assert rc == 2, (args, err)
        assert why in err, (args, err)
        assert "Traceback" not in err


def test_secrets_are_copied_private_and_never_shown(tmp_path: Path) -> None:
    secret = "hunter2-do-not-print"
    src = tmp_path / "wifi.py"
    src.write_text(f'WIFI_SSID = "lab"\nWIFI_PASSWORD = "{secret}"\n')
    rc, listing, err, out = build(tmp_path, "--secrets", str(src))
    assert rc == 0, err
    dst = out / "precast_secrets.py"
    assert dst.read_text() == src.read_text()
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
    assert "precast_secrets" not in listing and secret not in listing + err
    # a bad file is refused without quoting it
    src.write_text(f'WIFI_PASSWORD = "{secret}"\n')
    rc, listing, err, _ = build(tmp_path, "--secrets", str(src))
    assert rc == 2 and "WIFI_SSID" in err and secret not in listing + err
    src.write_text(f'WIFI_SSID = "lab"\nWIFI_PASSWORD = {secret}"\n')  # a syntax error
    rc, listing, err, _ = build(tmp_path, "--secrets", str(src))
    assert rc == 2 and "not Python" in err and secret not in listing + err


def test_key_file_gives_the_key_kept_off_the_command_line(tmp_path: Path) -> None:
    """--key-file (as deploy and collect have it): the same bundle as --key; both is one line."""
    key = "2b7e151628aed2a6abf7158809cf4f3c"
    f = tmp_path / "k.hex"
    f.write_text(key + "\n")
    pm = str(TEMPLATES / "power-meter.toml")
    rc, _, err, out = build(tmp_path, "--key-file", str(f), template=pm)
    assert rc == 0, err
    assert config_of(out)["KEY"] == bytes.fromhex(key)
    rc, _, err, _ = build(tmp_path, "--key-file", str(f), "--key", key, template=pm)
    assert rc == 2 and "give --key or --key-file, not both" in err and err.count("\n") == 1
    rc, _, err, _ = build(tmp_path, "--key-file", str(tmp_path / "none"), template=pm)
    assert rc == 2 and "--key-file" in err and err.count("\n") == 1, err
