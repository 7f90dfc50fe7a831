"""`precast dissector`, judged by tshark itself on pcaps that `precast send` and `simulate` write.

Every field tshark shows must equal what precast.codec decodes from the same
bytes, the CRC verdict must match the codec's, bad frames must carry expert
info and never a Lua error (tshark exits 0 on a broken script, so its
stderr and the expert messages are read too).
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit import KEY_HEX, TEMPLATES, precast
from precast import Layout, compile_template, load_templates
from precast.cli import main as precast_main
from precast.view.dissector import field_abbrev
from precast.wire.codec import Codec, Reading, to_units
from precast.wire.pcap import PcapWriter, read_frames
from precast.wire.template import Template
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap
from sender_kit import need
from strategies import raws, templates

KEY = bytes.fromhex(KEY_HEX)
SHIPPED = [compile_template(t) for t in load_templates([TEMPLATES])]
BASE_FIELDS = [
    "udp.dstport",
    "precast.magic",
    "precast.template",
    "precast.device",
    "precast.seq",
    "precast.check",
    "precast.check_ok",
    "precast.check.bad",
    "precast.short",
    "precast.length",
    "precast.magic.bad",
    "_ws.expert.message",
]


def dissect(lua: Path, pcap: Path, layouts: Sequence[Layout]) -> list[dict[str, list[str]]]:
    """tshark's fields per frame (JSON), after asserting it printed no Lua error anywhere."""
    tshark = need("tshark", "tshark")
    names = {field_abbrev(s.name) for lay in layouts for s in lay.fields}
    args = [a for f in [*BASE_FIELDS, *sorted(names)] for a in ("-e", f)]
    r = subprocess.run(
        [tshark, "-n", "-X", f"lua_script:{lua}", "-r", str(pcap), "-T", "json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    noise = [ln for ln in r.stderr.splitlines() if ln and not ln.startswith("Running as user")]
    assert r.returncode == 0 and not noise, r.stderr
    docs: list[dict[str, Any]] = json.loads(r.stdout)
    layers = [d["_source"]["layers"] for d in docs]
    for n, layer in enumerate(layers, 1):
        msgs = layer.get("_ws.expert.message", [])
        assert not [m for m in msgs if "Lua" in m], (n, msgs)
    return layers


def exact_frames(lua: Path, pcap: Path, frames: list[bytes], codec: Codec) -> None:
    """Every decodable frame matches a display filter of its exact values (doubles, ==)."""
    tshark = need("tshark", "tshark")
    terms = []
    for n, frame in enumerate(frames, 1):
        r = codec.decode(frame)
        if isinstance(r, Reading):
            # repr names the double exactly; the filter syntax takes 1e16, not 1e+16.
            eq = [f"{field_abbrev(k)} == {v!r}".replace("e+", "e") for k, v in r.fields.items()]
            terms.append(f"(frame.number == {n} && precast.seq == {r.seq} && {' && '.join(eq)})")
    assert terms
    cmd = [tshark, "-n", "-X", f"lua_script:{lua}", "-r", str(pcap), "-Y", " || ".join(terms)]
    out = subprocess.run(
        [*cmd, "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == len(terms), (out.stdout, out.stderr)


def write_lua(tmp: Path, *templates_: str | Path, port: int | None = None) -> Path:
    """`precast dissector` run as a user runs it."""
    out = tmp / "precast.lua"
    extra = ["--port", str(port)] if port else []
    r = precast("dissector", *map(str, templates_), "-o", str(out), *extra)
    assert r.returncode == 0, r.stderr
    return out


def assert_matches_codec(layers: list[dict[str, list[str]]], frames: list[bytes], codec: Codec):
    """Each frame as tshark shows it equals the codec's decode; returns the codec's verdicts."""
    assert len(layers) == len(frames)
    verdicts = []
    for n, (layer, frame) in enumerate(zip(layers, frames, strict=True), 1):
        r = codec.decode(frame)
        verdicts.append(r)
        lay = codec.layouts[int(layer["precast.template"][0])]
        assert int(layer["precast.device"][0]) == int.from_bytes(frame[46:50], "big")
        assert int(layer["precast.seq"][0]) == int.from_bytes(frame[50:54], "big")
        if isinstance(r, Reading):
            assert (r.template, r.device, r.seq) == (
                lay.template.id,
                int(layer["precast.device"][0]),
                int(layer["precast.seq"][0]),
            )
            for name, want in r.fields.items():
                # tshark prints a double with 15 significant digits (DBL_DIG); exact_frames
                # compares all 17 with a display filter.
                got = float(layer[field_abbrev(name)][0])
                assert got == float(f"{want:.15g}"), (n, name, got, want)
        if lay.template.mic:
            assert "precast.check_ok" not in layer  # a MIC is shown, never judged
            assert layer["precast.check"][0]
        else:
            ok = layer["precast.check_ok"] == ["1"]
            assert ok == isinstance(r, Reading), (n, r, layer)
            assert ("precast.check.bad" in layer) == (not ok), (n, layer)
    return verdicts


def test_shipped_templates_from_send_and_simulate(tmp_path: Path) -> None:
    lua = write_lua(tmp_path, TEMPLATES)
    codec = Codec(SHIPPED, key=KEY)
    frames: list[bytes] = []
    values = {
        "env-node": ["temperature=-12.34", "humidity=99.99", "pressure=101325", "battery=3300"],
        "minimal": ["value=65535"],
        "power-meter": [
            "energy=4000000000",
            "power=-1234.5",
            "voltage=230.05",
            "power_factor=0.97",
        ],
    }
    for lay in SHIPPED:
        pcap = tmp_path / f"{lay.template.name}.pcap"
        send_in_process(
            str(TEMPLATES / f"{lay.template.name}.toml"),
            "--device",
            "4000000001",
            "--seq",
            "4294967290",
            "--count",
            "3",
            "--key",
            KEY_HEX,
            "--pcap",
            str(pcap),
            "--no-progress",
            *values[lay.template.name],
        )
        frames += read_frames(pcap)
    pcap = tmp_path / "sent.pcap"
    merge(pcap, frames)
    verdicts = assert_matches_codec(dissect(lua, pcap, SHIPPED), frames, codec)
    assert len(frames) == 9 and all(isinstance(v, Reading) for v in verdicts)
    exact_frames(lua, pcap, frames, codec)
    pcap = tmp_path / "fleet.pcap"
    run_in_process(
        "simulate",
        "--templates",
        str(TEMPLATES),
        "--devices",
        "6",
        "--rate",
        "4000",
        "--duration",
        "0.05",
        "--seed",
        "3",
        "--key",
        KEY_HEX,
        "--pcap",
        str(pcap),
        "--no-progress",
    )
    got = list(read_frames(pcap))
    verdicts = assert_matches_codec(dissect(lua, pcap, SHIPPED), got, codec)
    assert len(got) >= 100 and all(isinstance(v, Reading) for v in verdicts)
    assert {v.template for v in verdicts if isinstance(v, Reading)} == {1, 2, 3}


def test_corrupted_frames_get_a_checksum_error(tmp_path: Path) -> None:
    lua = write_lua(tmp_path, TEMPLATES)
    pcap = tmp_path / "bad.pcap"
    run_in_process(
        "simulate",
        "--templates",
        str(TEMPLATES / "env-node.toml"),
        str(TEMPLATES / "minimal.toml"),
        "--devices",
        "4",
        "--rate",
        "4000",
        "--duration",
        "0.05",
        "--corrupt",
        "0.4",
        "--seed",
        "5",
        "--pcap",
        str(pcap),
        "--no-progress",
    )
    frames = list(read_frames(pcap))
    layers = dissect(lua, pcap, SHIPPED)
    verdicts = assert_matches_codec(layers, frames, Codec(SHIPPED))
    bad = [lay for lay, v in zip(layers, verdicts, strict=True) if not isinstance(v, Reading)]
    assert len(bad) >= 20 and len(bad) < len(frames)
    for layer in bad:
        assert layer["precast.check_ok"] == ["0"]
        assert any(m.startswith("Wrong CRC-16") for m in layer["_ws.expert.message"])


def udp_frame(payload: bytes, port: int = 20547) -> Ether:
    """A frame scapy builds (its own lengths and checksums) around a payload."""
    return (
        Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
        / IP(src="192.0.2.2", dst="192.0.2.1", flags="DF")
        / UDP(sport=port, dport=port)
        / Raw(payload)
    )


def test_truncated_and_overlong_datagrams_are_malformed_not_lua_errors(tmp_path: Path) -> None:
    lua = write_lua(tmp_path, TEMPLATES)
    pkts, expect = [], []
    for lay in SHIPPED:
        full = bytes(lay.payload)
        for cut in [*range(1, lay.payload_len), lay.payload_len + 1]:
            data = (full + b"\x00")[:cut]
            # Each cut both on the template's port and on another one (the heuristic's).
            for port in (20547, 40000):
                if port == 40000 and cut < 4:
                    continue  # the heuristic needs magic, version and template id
                pkts.append(udp_frame(data, port))
                expect.append((lay, cut))
    pcap = tmp_path / "cut.pcap"
    wrpcap(str(pcap), pkts)
    layers = dissect(lua, pcap, SHIPPED)
    assert len(layers) == len(expect)
    for layer, (lay, cut) in zip(layers, expect, strict=True):
        assert "precast.magic" in layer, (lay.template.name, cut)
        key = "precast.short" if cut < 14 else "precast.length"
        assert key in layer, (lay.template.name, cut, layer)
        if cut >= 4 and not lay.template.mic:
            assert layer["precast.check_ok"] == ["0"], (lay.template.name, cut)
        assert "precast.check.bad" not in layer  # no CRC is judged on a frame of the wrong length


def test_heuristic_finds_precast_on_any_port_and_only_precast(tmp_path: Path) -> None:
    lua = write_lua(tmp_path, TEMPLATES, port=40001)
    env = next(lay for lay in SHIPPED if lay.template.name == "env-node")
    good = read_frames_of(tmp_path, env)
    pkts = []
    for port in (40000, 40001, 20547):
        for frame in good:
            e = Ether(frame)
            e[UDP].sport = e[UDP].dport = port
            del e[UDP].chksum
            pkts.append(e)
    not_ours = [
        b"\x51\x10\x00\x01" + bytes(20),  # bad magic
        b"\x50\x20\x00\x01" + bytes(20),  # version 2
        b"\x50\x10\x00\x63" + bytes(20),  # template 99: not in the script
    ]
    for data in not_ours:
        pkts += [udp_frame(data, 40000), udp_frame(data, 40001)]
    pcap = tmp_path / "ports.pcap"
    wrpcap(str(pcap), pkts)
    layers = dissect(lua, pcap, SHIPPED)
    codec = Codec(SHIPPED)
    found = layers[: 3 * len(good)]
    assert_matches_codec(found, [bytes(p) for p in pkts[: 3 * len(good)]], codec)
    rest = layers[3 * len(good) :]
    for i, layer in enumerate(rest):
        port = 40000 if i % 2 == 0 else 40001
        assert layer["udp.dstport"] == [str(port)]
        # 40000: only the heuristic, which refuses them; 40001: registered by --port.
        assert ("precast.magic" in layer) == (port == 40001), (i, layer)
    assert "precast.magic.bad" in rest[1]


def read_frames_of(tmp: Path, lay: Layout) -> list[bytes]:
    pcap = tmp / "env.pcap"
    values = ["temperature=21.5", "humidity=40.25", "pressure=101325", "battery=3000"]
    send_in_process(
        str(TEMPLATES / "env-node.toml"),
        "--device",
        "7",
        "--count",
        "4",
        "--pcap",
        str(pcap),
        "--no-progress",
        *values,
    )
    return list(read_frames(pcap))


def to_toml(t: Template) -> str:
    """A template file for a parsed template (the strategies make them in memory)."""
    n = t.network
    lines = [f"id = {t.id}", f'name = "{t.name}"', f'check = "{t.check}"', "", "[network]"]
    for k in ("src_mac", "dst_mac", "src_ip", "dst_ip"):
        lines.append(f'{k} = "{getattr(n, k)}"')
    # src_port = dst_port: tshark's UDP tries the lower port's dissector first, and a random
    # source port may belong to another protocol (README: what the dissector cannot show).
    lines += [f"src_port = {n.dst_port}", f"dst_port = {n.dst_port}"]
    lines += [f"ttl = {n.ttl}", f"dscp = {n.dscp}"]
    for f in t.fields:
        lines += ["", "[[field]]", f'name = "{f.name}"', f'type = "{f.type}"']
        if f.type != "f32" or f.scale != 1 or f.offset != 0:
            lines += [f"scale = {f.scale!r}", f"offset = {f.offset!r}"]
        lines.append(f'unit = "{f.unit}"')
    return "\n".join(lines) + "\n"


def run_in_process(*args: str) -> None:
    """A `precast` command through its entry point, in this process (a subprocess costs 1 s)."""
    old = signal.getsignal(signal.SIGTERM)  # send and simulate turn SIGTERM into Ctrl-C
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = precast_main(list(args))
    finally:
        signal.signal(signal.SIGTERM, old)
    assert rc == 0, out.getvalue()


def send_in_process(*args: str) -> None:
    run_in_process("send", *args)


def merge(path: Path, frames: Sequence[bytes]) -> None:
    with PcapWriter(path) as w:
        for f in frames:
            w.write(f)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_templates(tmp_path_factory: Any, data: st.DataObject) -> None:
    tmp: Path = tmp_path_factory.mktemp("gen")
    lays = data.draw(
        st.lists(templates(max_fields=8), min_size=4, max_size=4, unique_by=lambda x: x.template.id)
    )
    frames: list[bytes] = []
    files = []
    for i, lay in enumerate(lays):
        path = tmp / f"t{i}.toml"
        path.write_text(to_toml(lay.template))
        files.append(path)
        raw = data.draw(raws(lay))
        values = [f"{s.name}={to_units(s, r)!r}" for s, r in zip(lay.fields, raw, strict=True)]
        pcap = tmp / f"t{i}.pcap"
        device = data.draw(st.integers(0, 0xFFFFFFFF))
        seq = data.draw(st.integers(0, 0xFFFFFFFD))
        send_in_process(
            str(path),
            "--device",
            str(device),
            "--seq",
            str(seq),
            "--count",
            "2",
            "--key",
            KEY_HEX,
            "--pcap",
            str(pcap),
            "--no-progress",
            *values,
        )
        frames += read_frames(pcap)
    merged = tmp / "all.pcap"
    merge(merged, frames)
    lua = write_lua(tmp, *files)
    compiled = [compile_template(t) for t in load_templates(files)]
    codec = Codec(compiled, KEY)
    verdicts = assert_matches_codec(dissect(lua, merged, compiled), frames, codec)
    assert all(isinstance(v, Reading) for v in verdicts), verdicts
    exact_frames(lua, merged, frames, codec)


def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: Any) -> None:
    assert precast_main(["dissector", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    assert precast_main(["dissector", str(TEMPLATES), "-o", str(tmp_path / "no" / "x.lua")]) == 2
    assert "cannot write" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        precast_main(["dissector", str(TEMPLATES), "--port", "70000"])
    assert e.value.code == 2 and "out of range" in capsys.readouterr().err


def test_header_faults_are_expert_info(tmp_path: Path) -> None:
    lua = write_lua(tmp_path, TEMPLATES)
    env = next(lay for lay in SHIPPED if lay.template.name == "env-node")
    good = bytes(env.payload)
    cases = {
        "Magic 0x51, not 0x50": b"\x51" + good[1:],
        "Version 2, this dissector knows 1": b"\x50\x20" + good[2:],
        "Reserved flag bits 0x4 set": b"\x50\x14" + good[2:],
        "Template env-node uses crc16": b"\x50\x11" + good[2:],
        "Template 99 is not known": b"\x50\x10\x00\x63" + good[4:],
    }
    pcap = tmp_path / "faults.pcap"
    wrpcap(str(pcap), [udp_frame(p) for p in cases.values()])
    layers = dissect(lua, pcap, SHIPPED)
    for (want, _), layer in zip(cases.items(), layers, strict=True):
        assert want in layer["_ws.expert.message"], (want, layer)


def test_delayed_frames_show_their_age_and_when_they_were_taken(tmp_path: Path) -> None:
    """tshark reads the age where the protocol puts it; taken at = capture time - age."""
    import datetime as dt

    from precast import encode_raw

    lua = write_lua(tmp_path, TEMPLATES)
    codec = Codec(SHIPPED, key=KEY)
    by_name = {lay.template.name: lay for lay in SHIPPED}
    ts = 1_764_930_000.25  # capture times, to the microsecond
    cases = [
        (by_name["minimal"], [7], 90_000),
        (by_name["minimal"], [8], 0),
        (by_name["env-node"], [2145, 4050, 101325, 3300], 3_600_123),
        (by_name["power-meter"], [1, -2, 3, 0.5], 1),
    ]
    frames = [encode_raw(lay, raw, 9, 100 + i, KEY, age) for i, (lay, raw, age) in enumerate(cases)]
    frames.append(encode_raw(by_name["minimal"], [5], 9, 200))  # a live one between
    bad = bytearray(frames[0])
    bad[-1] ^= 1  # a delayed frame with a wrong CRC
    frames.append(bytes(bad))
    pcap = tmp_path / "delayed.pcap"
    with PcapWriter(pcap) as w:
        for i, f in enumerate(frames):
            w.write(f, ts + i)
    layers = dissect(lua, pcap, SHIPPED)
    verdicts = assert_matches_codec(layers, frames, codec)
    assert [isinstance(v, Reading) for v in verdicts] == [True] * 5 + [False]
    tshark = need("tshark", "tshark")
    out = subprocess.run(
        [tshark, "-n", "-X", f"lua_script:{lua}", "-r", str(pcap), "-T", "fields",
         "-e", "precast.age", "-e", "_ws.col.Info", "-e", "precast.taken_at"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    for i, (age_s, info, taken) in enumerate(rows):
        age = struct.unpack(">I", frames[i][-4 - (2 if i != 3 else 8) :][:4])[0]
        if i == 4:  # the live frame: no age, no time of taking
            assert (age_s, taken) == ("", "") and "taken at" not in info, rows[i]
            continue
        assert int(age_s) == age
        want = dt.datetime.fromtimestamp(ts + i, dt.UTC) - dt.timedelta(milliseconds=age)
        stamp = want.strftime("%Y-%m-%d %H:%M:%S.") + f"{want.microsecond // 1000:03d}"
        assert f"taken at {stamp} UTC" in info, (info, stamp)
        whole, frac = taken.removesuffix(" UTC").rsplit(".", 1)  # "Dec  5, 2025 10:18:30.25..."
        got = dt.datetime.strptime(" ".join(whole.split()), "%b %d, %Y %H:%M:%S")
        got = got.replace(tzinfo=dt.UTC) + dt.timedelta(microseconds=int(frac[:6]))
        assert got == want, (taken, want)
