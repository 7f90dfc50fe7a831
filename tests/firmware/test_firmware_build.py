"""`precast build`: the bundle's files, its options, its errors, and --mpy on the unix port."""

from __future__ import annotations

from pathlib import Path

import pytest
from firmware_kit import UdpSink, build, counts
from kit import KEY_HEX, TEMPLATES, precast, run_bundle
from precast.wire.codec import Codec, Reading
from precast.wire.layout import load_layouts

CONSTANTS = r"""
import precast_template as t
print(len(t.FRAME), t.PAYLOAD_LEN, t.OFF_CHECK, t.CHECK_LEN, t.FIELD_COUNT, t.DST_IP, t.DST_PORT,
      t.CHECK_KIND)
"""


@pytest.mark.usefixtures("mp_port")
def test_firmware_build_writes_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = precast(
        "build",
        str(TEMPLATES / "power-meter.toml"),
        "--device",
        "0x10",
        "--key",
        KEY_HEX,
        "--out",
        str(out),
        "--collector",
        "127.0.0.1:4000",
    )
    assert r.returncode == 0, r.stderr
    listed = {Path(line) for line in r.stdout.split()}
    names = [
        "main.py",
        "precast_template.py",
        "precast_config.py",
        "precast_fw/app.py",
        "precast_fw/sender.py",
        "precast_fw/sensors/sim.py",
    ]
    for name in names:
        assert (out / name).is_file()
        assert out / name in listed
    lay = load_layouts([TEMPLATES / "power-meter.toml"])[0]
    got = run_bundle(out, CONSTANTS).stdout.split()
    # The names no code on the board reads are private const(), for the reader of the file.
    source = (out / "precast_template.py").read_text()
    assert f"_TEMPLATE_ID = const({lay.id})" in source and "_DEVICE = const(16)" in source
    assert f"_FRAME_LEN = const({lay.frame_len})" in source
    want = [
        lay.frame_len,
        lay.payload_len,
        lay.check_offset,
        lay.check_len,
        len(lay.fields),
        "127.0.0.1",
        4000,
        1,
    ]
    assert got == [str(w) for w in want]
    config = (out / "precast_config.py").read_text()
    assert f"KEY = {bytes.fromhex(KEY_HEX)!r}" in config
    assert "TRANSPORT = 'udp'" in config


def test_firmware_build_errors_are_one_line(tmp_path: Path) -> None:
    to = ["--collector", "127.0.0.1"]
    cases = [
        ([str(TEMPLATES / "power-meter.toml"), "--device", "1", *to], "a key is needed"),
        (
            [str(TEMPLATES / "minimal.toml"), "--device", "1", "--transport", "packet", *to],
            "--iface",
        ),
        (
            [str(TEMPLATES / "minimal.toml"), "--device", "1", "--collector", "nohost.invalid"],
            "cannot resolve 'nohost.invalid'",
        ),
        ([str(tmp_path / "none.toml"), "--device", "1"], "no such file"),
        # the first-hour trap: no --collector, and the template's dst_ip is RFC 5737's
        ([str(TEMPLATES / "env-node.toml"), "--device", "1"], "a documentation address"),
        ([str(TEMPLATES / "minimal.toml"), "--device", "1"], "give --collector HOST[:PORT]"),
    ]
    for args, why in cases:
        r = precast("build", *args, "--out", str(tmp_path / "b"))
        assert r.returncode == 2, (args, r.stderr)
        assert why in r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_build_resolves_a_collector_host_name_and_says_where_readings_go(tmp_path: Path) -> None:
    r = precast(
        "build",
        str(TEMPLATES / "minimal.toml"),
        "--device",
        "1",
        "--out",
        str(tmp_path / "b"),
        "--collector",
        "localhost:4000",
    )
    assert r.returncode == 0, r.stderr
    assert "readings go to 127.0.0.1:4000 (localhost)" in r.stderr
    tpl = (tmp_path / "b" / "precast_template.py").read_text()
    assert "DST_IP = '127.0.0.1'" in tpl and "DST_PORT = const(4000)" in tpl


ARCH = {"mp64": "x64", "mp32": "x86"}  # each unix port's native code


def test_firmware_build_mpy_runs(tmp_path: Path, mp_port: str) -> None:
    sink = UdpSink()
    try:
        out = tmp_path / "b"
        files = build(
            out,
            TEMPLATES / "env-node.toml",
            "--device",
            "8",
            "--mpy",
            "--march",
            ARCH[mp_port],
            "--collector",
            sink.collector,
            "--count",
            "20",
            "--interval-ms",
            "0",
        )
        assert not list((out / "precast_fw").rglob("*.py"))
        assert (out / "precast_fw" / "viper.mpy").is_file()
        assert not (out / "precast_fw" / "plain.mpy").exists()  # viper loads on this arch
        assert (out / "precast_template.mpy").is_file()
        assert not (out / "precast_template.py").exists()
        assert set(files) == {out / "main.py", *out.rglob("*.mpy")}
        r = run_bundle(out)
        assert r.returncode == 0, r.stdout + r.stderr
        assert counts(r.stdout)["sent"] == 20
        got = sink.drain()
    finally:
        sink.close()
    codec = Codec(load_layouts([TEMPLATES / "env-node.toml"]))
    assert [r.seq for r in map(codec.decode, got) if isinstance(r, Reading)] == list(range(20))


def test_firmware_build_mpy_for_another_arch_says_so(tmp_path: Path, mp_port: str) -> None:
    """viper.mpy of the other port's arch: no plain.py to fall back on, and words that say why."""
    out = tmp_path / "b"
    other = ARCH["mp32" if mp_port == "mp64" else "mp64"]
    build(out, TEMPLATES / "env-node.toml", "--device", "8", "--mpy", "--march", other)
    r = run_bundle(out)
    assert r.returncode != 0
    assert "viper does not load on this port" in r.stderr + r.stdout
    assert "build for this board's --march" in r.stderr + r.stdout


def test_firmware_build_mpy_without_arch_keeps_viper_source(tmp_path: Path) -> None:
    out = tmp_path / "b"
    build(out, TEMPLATES / "minimal.toml", "--device", "8", "--mpy")
    assert (out / "precast_fw" / "viper.py").is_file()
    assert (out / "precast_fw" / "sender.mpy").is_file()
    # a rebuild without --mpy leaves no stale .mpy beside the sources
    build(out, TEMPLATES / "minimal.toml", "--device", "8")
    assert not list(out.rglob("*.mpy"))
