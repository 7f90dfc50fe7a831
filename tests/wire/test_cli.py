"""The precast CLI as other tools use it: compile --json, encode, decode; errors as one line."""

from __future__ import annotations

import json

from kit import KEY_HEX, TEMPLATES, precast

ENV = str(TEMPLATES / "env-node.toml")
PM = str(TEMPLATES / "power-meter.toml")
VALUES = ["temperature=-12.34", "humidity=55.5", "pressure=98765", "battery=3712"]


def test_compile_json_contract() -> None:
    r = precast("compile", ENV, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"frame", "payload_offset", "payload_length", "fields"} <= doc.keys()
    assert doc["payload_offset"] == 42 and doc["payload_length"] == 24
    assert len(bytes.fromhex(doc["frame"])) == 42 + 24
    assert [(f["name"], f["offset"], f["type"]) for f in doc["fields"]] == [
        ("temperature", 12, "i16"),
        ("humidity", 14, "u16"),
        ("pressure", 16, "u32"),
        ("battery", 20, "u16"),
    ]
    # a directory compiles every template in it
    docs = json.loads(precast("compile", str(TEMPLATES), "--json").stdout)
    assert sorted(d["template"] for d in docs) == [1, 2, 3]


def test_compile_human_output() -> None:
    r = precast("compile", str(TEMPLATES))
    assert r.returncode == 0 and "env-node" in r.stdout and "cmac8" in r.stdout
    lines = r.stdout.splitlines()
    head = lines.index("  offset  type field (units = raw x scale + offset)")  # headed columns
    assert lines[head + 1].split()[:3] == ["12", "i16", "temperature"], lines[head + 1]


def test_a_key_for_a_crc_template_is_said_unused() -> None:
    key = "000102030405060708090a0b0c0d0e0f"
    r = precast("encode", ENV, "--device", "42", "--seq", "7", "--key", key, *VALUES)
    assert r.returncode == 0 and "--key unused: template 'env-node' is checked by crc16" in (
        r.stderr
    ), r.stderr
    plain = precast("encode", ENV, "--device", "42", "--seq", "7", *VALUES)
    assert r.stdout == plain.stdout and plain.stderr == ""  # the same frame, the key unused


def test_encode_then_decode_round_trip() -> None:
    r = precast("encode", ENV, "--device", "42", "--seq", "7", *VALUES)
    assert r.returncode == 0, r.stderr
    hexframe = r.stdout.strip()
    assert len(bytes.fromhex(hexframe)) == 66
    d = precast("decode", str(TEMPLATES), hexframe)
    assert d.returncode == 0, d.stderr
    assert json.loads(d.stdout) == {
        "template": 1,
        "device": 42,
        "seq": 7,
        "fields": {"temperature": -12.34, "humidity": 55.5, "pressure": 98765, "battery": 3712},
    }


def test_payload_only_and_stdin_and_mic() -> None:
    pv = ["energy=5", "power=-12.5", "voltage=229.99", "power_factor=0.875"]
    r = precast(
        "encode", PM, "--device", "1", "--seq", "2", "--key", KEY_HEX, "--payload-only", *pv
    )
    assert r.returncode == 0, r.stderr
    payload = r.stdout.strip()
    assert len(bytes.fromhex(payload)) == 12 + 14 + 8
    d = precast("decode", PM, "--key", KEY_HEX, input=payload + "\n" + payload + "\n")
    lines = [json.loads(x) for x in d.stdout.splitlines()]
    assert d.returncode == 0 and len(lines) == 2
    assert lines[0]["fields"] == {
        "energy": 5,
        "power": -12.5,
        "voltage": 229.99,
        "power_factor": 0.875,
    }
    wrong = precast("decode", PM, "--key", "00" * 16, payload)
    assert wrong.returncode == 1 and json.loads(wrong.stdout) == {"error": "mic"}


def test_decode_reports_each_bad_input_and_exits_1() -> None:
    good = precast("encode", ENV, "--device", "1", "--seq", "1", *VALUES).stdout.strip()
    r = precast("decode", ENV, good, "zz", "5010", good[:-2] + "00")
    assert r.returncode == 1
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 4
    assert out[0]["seq"] == 1
    assert out[1]["error"].startswith("not hex")
    assert out[2]["error"].startswith("short")
    assert out[3]["error"].startswith("crc")


def test_encode_errors_are_one_line_exit_2() -> None:
    cases = [
        ([*VALUES[:3]], "missing field 'battery'"),
        ([*VALUES, "colour=3"], "unknown field 'colour'"),
        (["temperature=999", *VALUES[1:]], "out of range"),
        (["temperature", *VALUES[1:]], "expected NAME=VALUE"),
        (["temperature=warm", *VALUES[1:]], "not a number"),
    ]
    for values, msg in cases:
        r = precast("encode", ENV, "--device", "1", "--seq", "1", *values)
        assert r.returncode == 2, (values, r)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
    r = precast(
        "encode",
        PM,
        "--device",
        "1",
        "--seq",
        "1",
        "energy=1",
        "power=1",
        "voltage=1",
        "power_factor=1",
    )
    assert r.returncode == 2 and "key is needed" in r.stderr
    r = precast("encode", ENV, "--device", "-1", "--seq", "1", *VALUES)
    assert r.returncode == 2 and "out of range" in r.stderr
    r = precast("encode", ENV, "--device", "1", "--seq", "1", "--key", "abc", *VALUES)
    assert r.returncode == 2 and "key" in r.stderr
