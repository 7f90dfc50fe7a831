"""Template files: the shipped ones load, and every kind of bad one gets one clear line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from kit import TEMPLATES, precast
from precast import TemplateError, compile_template, load_template, load_templates

GOOD = """
id = 9
[[field]]
name = "v"
type = "u16"
"""


def test_shipped_templates_load_and_match_the_issue() -> None:
    env = load_template(TEMPLATES / "env-node.toml")
    assert [(f.name, f.type, f.scale, f.unit) for f in env.fields] == [
        ("temperature", "i16", 0.01, "degC"),
        ("humidity", "u16", 0.01, "%"),
        ("pressure", "u32", 1, "Pa"),
        ("battery", "u16", 1, "mV"),
    ]
    assert env.payload_len == 12 + 10 + 2
    minimal = load_template(TEMPLATES / "minimal.toml")
    assert [f.type for f in minimal.fields] == ["u16"]
    power = load_template(TEMPLATES / "power-meter.toml")
    assert {"u32", "i32", "f32"} <= {f.type for f in power.fields}
    assert len(load_templates([TEMPLATES])) == 3


def test_defaults_fill_the_network_table(tmp_path: Path) -> None:
    p = tmp_path / "t.toml"
    p.write_text(GOOD)
    t = load_template(p)
    assert t.check == "crc16" and t.name == "t"
    n = t.network
    assert (n.src_port, n.dst_port, n.ttl, n.dscp) == (20547, 20547, 64, 0)
    assert (n.dst_mac, n.dst_ip, n.src_ip) == ("ff:ff:ff:ff:ff:ff", "192.0.2.1", "192.0.2.2")


BAD = [
    ("not toml", "id = = 3", None, "not valid TOML"),
    ("unknown top key", "colour = 1\n" + GOOD, "colour", "unknown key"),
    ("unknown type", GOOD.replace("u16", "i64"), "field[0].type", "unknown type 'i64'"),
    ("unknown field key", GOOD + "bits = 3\n", "field[0].bits", "unknown key"),
    (
        "duplicate field",
        GOOD + '[[field]]\nname = "v"\ntype = "u8"\n',
        "field[1].name",
        "duplicate",
    ),
    ("id too big", GOOD.replace("id = 9", "id = 65536"), "id", "out of range"),
    ("id negative", GOOD.replace("id = 9", "id = -1"), "id", "out of range"),
    ("id missing", GOOD.replace("id = 9", ""), "id", "missing"),
    ("bad mac", GOOD + '[network]\nsrc_mac = "02:00:00:00:01"\n', "network.src_mac", "bad MAC"),
    ("bad ip", GOOD + '[network]\ndst_ip = "192.0.2.300"\n', "network.dst_ip", "bad IPv4"),
    ("bad port", GOOD + "[network]\ndst_port = 70000\n", "network.dst_port", "out of range"),
    ("port zero", GOOD + "[network]\nsrc_port = 0\n", "network.src_port", "out of range"),
    ("bad dscp", GOOD + "[network]\ndscp = 64\n", "network.dscp", "out of range"),
    ("bad check", 'check = "md5"\n' + GOOD, "check", "unknown check"),
    ("no fields", "id = 1\n", "field", "at least one"),
    ("zero scale", GOOD.replace('type = "u16"', 'type = "u16"\nscale = 0'), "field[0].scale", ""),
    ("bad name", GOOD.replace('name = "v"', 'name = "2v"'), "field[0].name", "identifier"),
    # issue 17's template: an f32 carries its value in units, so no scale and no offset
    (
        "scale on f32",
        GOOD.replace('type = "u16"', 'type = "f32"\nscale = 0.001\noffset = 273.15'),
        "field[0].scale",
        "not allowed on f32",
    ),
    (
        "offset on f32",
        GOOD + '[[field]]\nname = "w"\ntype = "f32"\noffset = 273.15\n',
        "field[1].offset",
        "not allowed on f32",
    ),
    ("scale 1 on f32", GOOD.replace('"u16"', '"f32"\nscale = 1'), "field[0].scale", "on f32"),
    (
        "bad device class",
        GOOD + 'device_class = "temprature"\n',
        "field[0].device_class",
        "unknown device class 'temprature'",
    ),
    ("device class list", GOOD + "device_class = [1]\n", "field[0].device_class", "a non-empty"),
    # What Home Assistant 2024.3 warns about or refuses (wire/sensor_classes.py)
    (
        "unit against device class",
        GOOD + 'unit = "mV"\ndevice_class = "battery"\n',
        "field[0].unit",
        "'mV' is not a unit of device class 'battery' ('%')",
    ),
    (
        "device class needs a unit",
        GOOD + 'device_class = "temperature"\n',
        "field[0].unit",
        "device class 'temperature' needs a unit: one of 'K', '°C', '°F'",
    ),
    ("unitless class", GOOD + 'unit = "pH"\ndevice_class = "ph"\n', "field[0].unit", "no unit"),
    (
        "impossible state class",
        GOOD + 'unit = "kWh"\nstate_class = "measurement"\n',
        "field[0].state_class",
        "'measurement' is impossible for device class 'energy' (Home Assistant wants total or "
        "total_increasing)",
    ),
    (
        "monetary is a total",
        GOOD + 'unit = "EUR"\ndevice_class = "monetary"\nstate_class = "total_increasing"\n',
        "field[0].state_class",
        "impossible for device class 'monetary'",
    ),
    *(
        (
            f"non-numeric {dc}",
            GOOD + f'device_class = "{dc}"\n',
            "field[0].device_class",
            "a field is a number",
        )
        for dc in ("timestamp", "date", "enum")
    ),
    *(
        (
            f"not in 2024.3: {dc}",
            GOOD + f'device_class = "{dc}"\n',
            "field[0].device_class",
            "not a numeric sensor device class of Home Assistant 2024.3.3",
        )
        for dc in (
            "area",
            "blood_glucose_concentration",
            "conductivity",
            "energy_distance",
            "reactive_energy",
            "wind_direction",
        )
    ),
    ("precision", GOOD + "precision = 11\n", "field[0].precision", "out of range 0..10"),
    ("precision float", GOOD + "precision = 1.5\n", "field[0].precision", "an integer"),
    ("empty label", GOOD + 'label = " "\n', "field[0].label", "a non-empty string"),
    (
        "bad state class",
        GOOD + 'state_class = "counter"\n',
        "field[0].state_class",
        "unknown state class 'counter' (expected measurement, total, total_increasing)",
    ),
    (
        "too big",
        "id = 1\n" + "".join(f'[[field]]\nname = "f{i}"\ntype = "u32"\n' for i in range(366)),
        "field",
        "over the 1472-byte maximum",
    ),
]


@pytest.mark.parametrize(("case", "text", "key", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_template_one_line_exit_2(
    tmp_path: Path, case: str, text: str, key: str | None, reason: str
) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(TemplateError) as ei:
        load_template(p)
    assert ei.value.key == key
    assert reason in ei.value.reason
    r = precast("compile", str(p))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(p) in lines[0] and (key or "") in lines[0] and reason in lines[0]
    assert "Traceback" not in r.stderr


def test_device_and_state_class_are_optional_and_kept(tmp_path: Path) -> None:
    p = tmp_path / "t.toml"
    p.write_text(GOOD + 'unit = "%"\ndevice_class = "battery"\nstate_class = "measurement"\n')
    f = load_template(p).fields[0]
    assert (f.device_class, f.state_class) == ("battery", "measurement")
    p.write_text(GOOD + 'precision = 0\nlabel = "CO2"\n')
    f = load_template(p).fields[0]
    assert (f.device_class, f.state_class, f.precision, f.label) == ("", "", 0, "CO2")


def test_largest_payload_fits(tmp_path: Path) -> None:
    # The delayed frame (P + 4) must fit: 12 header + 363 * 4 + u16 + CRC = 1468, 1472 delayed.
    text = "id = 1\n" + "".join(f'[[field]]\nname = "f{i}"\ntype = "u32"\n' for i in range(363))
    text += '[[field]]\nname = "last"\ntype = "u16"\n'
    p = tmp_path / "big.toml"
    p.write_text(text)
    lay = compile_template(load_template(p))
    assert (lay.payload_len, lay.late.payload_len) == (1468, 1472)
    p.write_text(text + '[[field]]\nname = "one"\ntype = "u8"\n')
    with pytest.raises(TemplateError, match="over the 1472-byte maximum"):
        load_template(p)


def test_duplicate_ids_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "b.toml").write_text(GOOD)
    r = precast("compile", str(tmp_path))
    assert r.returncode == 2 and "id 9 is also used by" in r.stderr


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    r = precast("compile", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = precast("compile", str(tmp_path))
    assert r.returncode == 2 and "no *.toml" in r.stderr
