"""docs/PROTOCOL.md's examples are true: its frames against the codec, its vectors against judges.

The document is parsed, not copied: the example commands, the hex dumps, the
byte-by-byte tables, the CRC parameters and check value, and the RFC 4493
vector are read out of docs/PROTOCOL.md. Judges besides precast itself:
crcmod built from the parameters the document states, the `cryptography`
package's AES-CMAC, and scapy's IPv4 and UDP checksums.
"""

from __future__ import annotations

import json
import re
import shlex
import struct

import crcmod
import crcmod.predefined
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from kit import ROOT, precast
from precast import Codec, Reading, compile_template, load_template
from precast.collect.tracker import TRACKER_REASONS
from precast.wire.checks import cmac, crc16
from precast.wire.codec import Rejected
from precast.wire.constants import REASONS
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

DOC = (ROOT / "docs" / "PROTOCOL.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```$", DOC, re.M | re.S)


def section(title: str) -> str:
    """The text of the section whose heading is title, up to the next heading of any level."""
    m = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#)", DOC, re.M | re.S)
    assert m, f"docs/PROTOCOL.md has no section {title!r}"
    return m.group(1)


def commands() -> list[list[str]]:
    """The documented `precast encode` command lines, in order."""
    return [shlex.split(body) for lang, body in BLOCKS if lang == "sh" and "encode" in body]


def values(argv: list[str]) -> dict[str, float]:
    return {k: float(v) for k, v in (a.split("=") for a in argv if "=" in a)}


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def run_encode(argv: list[str]) -> bytes:
    assert argv[:2] == ["precast", "encode"], argv
    args = [str(ROOT / a) if a.startswith("templates/") else a for a in argv[2:]]
    r = precast("encode", *args)
    assert r.returncode == 0, r.stderr
    return bytes.fromhex(r.stdout.strip())


def hexdump(which: int = 0) -> bytes:
    """An example frame from its offset-by-offset dump (0: the live one, 1: the delayed one)."""
    dumps = [b for lang, b in BLOCKS if lang == "text" and re.match(r"0000  ", b)]
    assert len(dumps) == 2, "docs/PROTOCOL.md has one live and one delayed example frame"
    dump = dumps[which]
    out = b""
    for line in dump.splitlines():
        off, _, data = line.partition("  ")
        assert int(off, 16) == len(out), line
        out += bytes.fromhex(data)
    return out


def table(title: str) -> list[tuple[int, int, bytes, str, str]]:
    """(first, last, bytes, field, value) of each row of the byte table under title."""
    rows = []
    for line in section(title).splitlines():
        m = re.match(r"\| (\d+)(?:–(\d+))? \| ([0-9a-f ]+) \| (.*?) \| (.*?) \|$", line)
        if m:
            a = int(m.group(1))
            b = int(m.group(2) or a)
            rows.append((a, b, bytes.fromhex(m.group(3)), m.group(4), m.group(5)))
    assert rows, title
    return rows


def check_table(data: bytes, rows: list[tuple[int, int, bytes, str, str]]) -> None:
    """Every byte explained once, in order, each row's bytes the data's, raw values right."""
    at = 0
    for a, b, hexed, name, value in rows:
        assert a == at, f"row {name!r} starts at {a}, the previous ended at {at - 1}"
        assert data[a : b + 1] == hexed, name
        at = b + 1
        raw = re.match(r"(?:raw )?(−?\d+)(?: ×| [A-Za-z%])", value)
        if raw and re.search(r", [ui]\d+$", name):
            signed = name.endswith(("i8", "i16", "i32"))
            want = int(raw.group(1).replace("−", "-"))
            assert int.from_bytes(hexed, "big", signed=signed) == want, (name, value)
    assert at == len(data), f"the table explains {at} of {len(data)} bytes"


def test_crc_vector_holds_for_crcmod_and_precast() -> None:
    text = section("CRC-16 (`crc16`, flag bit 0 clear)")

    def stated(name: str) -> int:
        m = re.search(rf"{name} `0x([0-9A-F]+)`", text)
        assert m, f"the CRC section states no {name}"
        return int(m.group(1), 16)

    poly, init, xor = stated("polynomial"), stated("initial value"), stated("final XOR")
    m = re.search(r"`(\d+)`\) is \*\*`0x([0-9A-F]{4})`\*\*", text)
    assert m and m.group(1) == "123456789" and m.group(2) == "29B1"
    check = int(m.group(2), 16)
    from_doc = crcmod.mkCrcFun(0x10000 | poly, initCrc=init, rev=False, xorOut=xor)
    named = crcmod.predefined.mkCrcFun("crc-ccitt-false")
    for crc in (from_doc, named, crc16):
        assert crc(b"123456789") == check


def test_cmac_vector_holds_for_cryptography_and_precast() -> None:
    (block,) = [b for lang, b in BLOCKS if lang == "text" and b.startswith("key ")]
    v = {k: bytes.fromhex(h) for k, h in (line.split() for line in block.splitlines())}
    assert v["key"].hex() == "2b7e151628aed2a6abf7158809cf4f3c"  # RFC 4493's
    judge = CMAC(algorithms.AES(v["key"]))
    judge.update(v["message"])
    assert judge.finalize() == v["AES-CMAC"] == bytes.fromhex("070a16b46b4d4144f79bdd9dd04a287c")
    assert cmac(v["key"], v["message"], 4) == v["cmac4"] == v["AES-CMAC"][:4]
    assert cmac(v["key"], v["message"], 8) == v["cmac8"] == v["AES-CMAC"][:8]


def test_example_frame_is_what_precast_encodes_and_decodes() -> None:
    frame = hexdump()
    argv = commands()[0]
    assert run_encode(argv) == frame
    want = values(argv)
    r = precast("decode", str(ROOT / argv[2]), frame.hex())
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["template"], got["device"], got["seq"]) == (
        1,
        int(option(argv, "--device")),
        int(option(argv, "--seq")),
    )
    assert got["fields"] == want
    # and the template the document describes is the one that ships
    lay = compile_template(load_template(ROOT / argv[2]))
    assert lay.frame_len == len(frame) == 66 and lay.payload_len == 24
    text = section("An example frame")
    rows = re.findall(r"^\| (\w+) \| (\w+) \| ([\d.]+) \| (\S+) \|$", text, re.M)
    assert [(s.name, s.field.type, s.field.scale, s.field.unit) for s in lay.fields] == [
        (n, t, float(sc) if "." in sc else int(sc), u) for n, t, sc, u in rows
    ]


def test_example_frame_every_byte_explained_and_judged() -> None:
    frame = hexdump()
    check_table(frame, table("An example frame"))
    # scapy recomputes both checksums from scratch; crcmod the CRC.
    pkt = Ether(frame)
    again = pkt.copy()
    del again[IP].chksum
    del again[UDP].chksum
    again = Ether(bytes(again))
    assert pkt[IP].chksum == again[IP].chksum == 0xB6B5
    assert pkt[UDP].chksum == again[UDP].chksum == 0x8673
    crc = crcmod.predefined.mkCrcFun("crc-ccitt-false")
    assert struct.unpack(">H", frame[64:66])[0] == crc(frame[42:64]) == 0x53B1


def test_mic_example_is_what_precast_encodes_and_the_judge_signs() -> None:
    (block,) = [b for lang, b in BLOCKS if lang == "text" and b.startswith("payload ")]
    payload = bytes.fromhex(block.split()[1])
    argv = commands()[1]
    assert "--payload-only" in argv
    assert run_encode(argv) == payload
    key = bytes.fromhex(option(argv, "--key"))
    check_table(payload, table("The same with a MIC"))
    judge = CMAC(algorithms.AES(key))
    judge.update(payload[:26])
    assert judge.finalize()[:8] == payload[26:]
    lay = compile_template(load_template(ROOT / argv[2]))
    r = Codec([lay], key=key).decode(payload)
    assert isinstance(r, Reading) and (r.device, r.seq) == (9, 5)
    assert r.fields == values(argv)


def test_receiver_checks_in_the_documented_order() -> None:
    # Each frame fails its own step and every later one: the first reason wins.
    named = re.findall(r"\(`([a-z-]+)`\)", section("What a receiver checks, in order"))
    order = "short magic version flags unknown-template check-kind length crc no-key mic"
    codec_named, tracker_named = named[:10], named[10:]
    assert codec_named == order.split()
    assert set(codec_named) == set(REASONS)
    # then the books' own refusals (steps 4 and 5), each a reason the tracker really counts
    assert tracker_named and set(tracker_named) <= set(TRACKER_REASONS), tracker_named
    named = codec_named
    env = compile_template(load_template(ROOT / commands()[0][2]))
    power = compile_template(load_template(ROOT / commands()[1][2]))
    key = bytes.fromhex(option(commands()[1], "--key"))
    crc_p = hexdump()[42:]
    (block,) = [b for lang, b in BLOCKS if lang == "text" and b.startswith("payload ")]
    mic_p = bytes.fromhex(block.split()[1])

    def with_(p: bytes, at: dict[int, int]) -> bytes:
        """p with the bytes at the given offsets replaced."""
        b = bytearray(p)
        for i, v in at.items():
            b[i] = v
        return bytes(b)

    cases = [
        ("short", crc_p[:13]),
        ("magic", with_(crc_p, {0: 0x51, 1: 0x2E, 3: 99}) + b"x"),
        ("version", with_(crc_p, {1: 0x2E, 3: 99}) + b"x"),
        ("flags", with_(crc_p, {1: 0x15, 3: 99}) + b"x"),
        ("unknown-template", with_(crc_p, {1: 0x11, 3: 99}) + b"x"),
        ("check-kind", with_(crc_p, {1: 0x11}) + b"x"),
        ("length", crc_p + b"x"),
        ("crc", with_(crc_p, {12: crc_p[12] ^ 1})),
        ("no-key", with_(mic_p, {12: mic_p[12] ^ 1})),
        ("mic", with_(mic_p, {12: mic_p[12] ^ 1})),
    ]
    assert [c[0] for c in cases] == named
    for reason, data in cases:
        codec = Codec([env, power], key=None if reason == "no-key" else key)
        got = codec.decode(data)
        assert isinstance(got, Rejected) and got.reason == reason, (reason, got)


def test_readme_and_code_point_to_the_shipped_document() -> None:
    # A user can follow every pointer: README's links, and the code's citations.
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(docs/PROTOCOL\.md(#[a-z-]*)?\)", readme)
    assert links, "README does not link docs/PROTOCOL.md"
    slugs = {
        "#" + re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.*)$", DOC, re.M)
    }
    assert {a for a in links if a} <= slugs
    code = [*(ROOT / "host").rglob("*.py"), *(ROOT / "firmware").rglob("*.py")]
    for path in [ROOT / "README.md", *code]:
        for line in path.read_text().splitlines():
            assert "PROTOCOL.md" not in line.replace("docs/PROTOCOL.md", ""), (path, line)


def test_delayed_example_is_what_precast_encodes_and_every_changed_byte_is_judged() -> None:
    live, late = hexdump(0), hexdump(1)
    argv = commands()[2]
    assert "--age-ms" in argv and run_encode(argv) == late
    age = int(option(argv, "--age-ms"))
    assert len(late) == len(live) + 4
    rows = table("An example delayed frame")
    explained = set()
    for a, b, hexed, name, _ in rows:
        assert late[a : b + 1] == hexed, name
        explained |= set(range(a, b + 1))
    # every byte the table leaves out is the live frame's, and every changed byte is in it
    for i in range(len(late)):
        if i not in explained:
            assert late[i] == live[i], i
        elif i < 64:
            assert late[i] != live[i] or i in (16, 24, 25, 38, 39, 40, 41), i
    assert struct.unpack(">I", late[64:68])[0] == age == 90000
    assert late[43] & 0x0F == 0x02  # flag bit 1, no MIC
    pkt = Ether(late)
    again = pkt.copy()
    del again[IP].chksum, again[IP].len, again[UDP].chksum, again[UDP].len
    assert bytes(Ether(bytes(again))) == late
    crc = crcmod.predefined.mkCrcFun("crc-ccitt-false")
    assert struct.unpack(">H", late[68:70])[0] == crc(late[42:68])
    r = precast("decode", str(ROOT / argv[2]), late.hex())
    got = json.loads(r.stdout)
    assert got["age_ms"] == age and got["fields"] == values(argv)
    assert r"bit 1 = delayed" in DOC and "P is at most 1468" in DOC


def test_the_sequence_rules_say_all_of_the_contracts_step_5() -> None:
    """docs/PROTOCOL.md's step 5 states each rule of the wire contract's receiver step 5 (held
    to it by hand: the contract is not in this repository), and names the tracker's reasons."""
    text = " ".join(section("What a receiver checks, in order").split())
    for rule in (
        "already stored is a **duplicate**",
        "counted lost",
        "is a **late** (reordered) arrival: it is stored",
        "with a MIC, a seq below the window is a **replay**",
        "No single frame moves a device far.",
        "more than the window ahead or below the window, is held as a **candidate**",
        "backward jump of a CRC device is a **reboot**",
        "both frames are stored",
        "A CRC frame proves nothing about its sender",
        "two interleaved sequences, the one its history established keeps its books",
        "its loss only its own gaps",
        "refused as a **conflict** (`conflict`",
        "until the established sequence has been silent long enough to be taken as a reboot",
        "For a MIC device a backward jump stays a replay",
        "two consecutive frames, not one, set its position",
        "A frame identical to one already stored for the device, in any epoch, is a replay",
    ):
        assert rule.replace("*", "") in text.replace("*", ""), rule
    assert {"replay", "conflict", "jump"} <= set(re.findall(r"`([a-z-]+)`", text))
