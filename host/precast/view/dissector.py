"""`precast dissector`: write a Lua dissector for Wireshark and tshark from templates.

The generated script (Wireshark 3.6 and later; Lua 5.2 to 5.4) holds a table
of the given templates and one generic dissector that reads it. It is
registered on each template's UDP destination port (and any --port), and
as a heuristic dissector on UDP: a datagram whose first bytes are magic
0x50, version 1 and a known template id is taken on any port.

Fields (display filters): precast.magic, precast.version, precast.flags,
precast.template (the id, its name beside it), precast.device, precast.seq,
precast.field.<name> (the value in units, a double; the raw integer and the
unit are in the tree as precast.raw and precast.unit), precast.check and, for
CRC-16 templates, precast.check_ok. A delayed frame (flag bit 1) has
precast.age (milliseconds from taking to sending) and precast.taken_at (the
capture time minus the age, generated), and "taken at" in the info column. A
field in units is computed as codec.to_units does (docs/PROTOCOL.md: raw *
scale + offset, rounded to the scale's decimals; an f32 field is its value,
shown as the shortest decimal that names the same float32), so tshark shows
what `precast decode` does.

Expert info: a wrong CRC (checksum, error); a datagram too short, or not
of its template's length (malformed, error); bad magic or version, reserved
flags, a MIC flag that does not match the template's check, an unknown
template (protocol). A MIC needs the device's key, which the dissector does
not have: it is shown and marked not verified. Nothing in a datagram can
make the script raise a Lua error: every read is bounded by the captured
length first.
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from precast.args import examples
from precast.errors import UsageError
from precast.wire.layout import Layout, load_layouts

# Largest integer a double holds exactly: (raw * m + o) / d is exact below it.
_EXACT = 2**53


def _lua_str(s: str) -> str:
    """A Lua string literal (templates' names and units are UTF-8 TOML strings)."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ch.isascii():
            out.append(ch)
        else:
            out.extend(f"\\{b:03d}" for b in ch.encode("utf-8"))
    out.append('"')
    return "".join(out)


def field_abbrev(name: str) -> str:
    """The display filter field of a template field: precast.field.<name>.

    Wireshark takes only ASCII letters, digits, '_', '-' and '.' in a field's
    name, so any other character of a (Unicode) identifier becomes _uXXXX.
    """
    return "precast.field." + "".join(
        ch if ch.isascii() and (ch.isalnum() or ch == "_") else f"_u{ord(ch):04x}" for ch in name
    )


def _lua_num(x: float | int) -> str:
    return str(x) if isinstance(x, int) else repr(float(x))


def _units_rule(layout: Layout, i: int) -> dict[str, Any]:
    """How field i becomes units, as the collector's row builder does it (same doubles)."""
    s = layout.fields[i]
    f = s.field
    ints = type(f.scale) is int and type(f.offset) is int
    if f.type == "f32":
        return {"mode": "f32", "scale": f.scale, "offset": f.offset}
    if ints and f.scale == 1 and f.offset == 0:
        return {"mode": "raw"}
    if ints or not s.digits:
        return {"mode": "lin", "scale": f.scale, "offset": f.offset}
    d = 10**s.digits
    m = Decimal(repr(f.scale)) * d
    o = Decimal(repr(f.offset)) * d
    lo, hi = f.range
    assert lo is not None and hi is not None
    biggest = max(abs(lo), abs(hi)) * abs(int(m)) + abs(int(o))
    if m != int(m) or o != int(o) or biggest >= _EXACT:
        # Too many digits for exact doubles: raw * scale + offset, off by an ulp at worst.
        return {"mode": "lin", "scale": f.scale, "offset": f.offset}
    return {"mode": "div", "m": int(m), "o": int(o), "d": d}


def _template_entry(layout: Layout) -> str:
    t = layout.template
    fields = []
    for i, s in enumerate(layout.fields):
        f = s.field
        rule = _units_rule(layout, i)
        items = {
            "name": _lua_str(f.name),
            "abbr": _lua_str(field_abbrev(f.name)),
            "type": _lua_str(f.type),
            "off": str(s.offset),
            "size": str(f.size),
            "unit": _lua_str(f.unit),
            "mode": _lua_str(rule.pop("mode")),
        }
        items.update({k: _lua_num(v) for k, v in rule.items()})
        fields.append("{" + ", ".join(f"{k} = {v}" for k, v in items.items()) + "}")
    body = ",\n      ".join(fields)
    return (
        f"  [{t.id}] = {{\n"
        f"    name = {_lua_str(t.name)}, check = {_lua_str(t.check)}, mic = {str(t.mic).lower()},\n"
        f"    plen = {layout.payload_len}, check_off = {layout.check_offset}, "
        f"check_len = {layout.check_len},\n"
        f"    fields = {{\n      {body},\n    }},\n"
        f"  }},"
    )


_LUA_BODY = r"""
-- Everything below reads the TEMPLATES table above; nothing in it depends on a template.

local MAGIC, VERSION, FLAG_MIC, HEADER_LEN, AGE_LEN = 0x50, 1, 0x01, 12, 4

local bxor
if bit32 then
  bxor = bit32.bxor
elseif bit then
  bxor = bit.bxor
else  -- Lua 5.3+: the operator, compiled only where it exists
  bxor = load("return function(a, b) return a ~ b end")()
end

-- CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection), table-driven.
local CRC_TABLE = {}
for i = 0, 255 do
  local c = i * 256
  for _ = 1, 8 do
    if c >= 0x8000 then c = bxor((c * 2) % 0x10000, 0x1021) else c = (c * 2) % 0x10000 end
  end
  CRC_TABLE[i] = c
end

local function crc16(tvb, n)
  local crc = 0xFFFF
  local bytes = tvb:range(0, n):bytes()
  for i = 0, n - 1 do
    local idx = bxor(math.floor(crc / 256), bytes:get_index(i))
    crc = bxor((crc % 256) * 256, CRC_TABLE[idx])
  end
  return crc
end

local names = {}
for id, t in pairs(TEMPLATES) do names[id] = t.name end

local p = Proto("precast", "precast sensor readings")
local pf = {
  magic = ProtoField.uint8("precast.magic", "Magic", base.HEX),
  version = ProtoField.uint8("precast.version", "Version", base.DEC, nil, 0xF0),
  flags = ProtoField.uint8("precast.flags", "Flags", base.HEX, nil, 0x0F),
  template = ProtoField.uint16("precast.template", "Template", base.DEC, names),
  device = ProtoField.uint32("precast.device", "Device", base.DEC),
  seq = ProtoField.uint32("precast.seq", "Sequence number", base.DEC),
  age = ProtoField.uint32("precast.age", "Age (ms from taking to sending)", base.DEC),
  taken_at = ProtoField.absolute_time("precast.taken_at", "Taken at", base.UTC),
  raw = ProtoField.int64("precast.raw", "Raw value", base.DEC),
  unit = ProtoField.string("precast.unit", "Unit"),
  crc = ProtoField.uint16("precast.check", "Check (CRC-16)", base.HEX),
  mic = ProtoField.bytes("precast.check", "Check (MIC)"),
  check_ok = ProtoField.bool("precast.check_ok", "Check correct"),
  computed = ProtoField.uint16("precast.check_computed", "Computed CRC-16", base.HEX),
}
local field_pf = {}
for _, t in pairs(TEMPLATES) do
  for _, f in ipairs(t.fields) do
    if not field_pf[f.name] then
      field_pf[f.name] = ProtoField.double(f.abbr, f.name)
    end
  end
end
local all = {}
for _, v in pairs(pf) do all[#all + 1] = v end
for _, v in pairs(field_pf) do all[#all + 1] = v end
p.fields = all

local ex = {
  bad_crc = ProtoExpert.new("precast.check.bad", "Wrong CRC-16",
    expert.group.CHECKSUM, expert.severity.ERROR),
  short = ProtoExpert.new("precast.short", "Too short for a precast datagram",
    expert.group.MALFORMED, expert.severity.ERROR),
  length = ProtoExpert.new("precast.length", "Length does not fit the template",
    expert.group.MALFORMED, expert.severity.ERROR),
  magic = ProtoExpert.new("precast.magic.bad", "Not precast's magic 0x50",
    expert.group.PROTOCOL, expert.severity.ERROR),
  version = ProtoExpert.new("precast.version.bad", "Unknown precast version",
    expert.group.PROTOCOL, expert.severity.ERROR),
  flags = ProtoExpert.new("precast.flags.reserved", "Reserved flag bits set",
    expert.group.PROTOCOL, expert.severity.ERROR),
  kind = ProtoExpert.new("precast.check.kind", "MIC flag does not match the template's check",
    expert.group.PROTOCOL, expert.severity.ERROR),
  unknown = ProtoExpert.new("precast.template.unknown", "Template not in this dissector",
    expert.group.PROTOCOL, expert.severity.WARN),
}
local all_ex = {}
for _, v in pairs(ex) do all_ex[#all_ex + 1] = v end
p.experts = all_ex

-- The shortest decimal (6..9 digits) naming the same float32: codec's _f32_repr.
local function f32_repr(x, raw_bytes)
  if x ~= x or x == math.huge or x == -math.huge then return x end
  for digits = 6, 9 do
    local y = tonumber(string.format("%." .. digits .. "g", x))
    if Struct.pack(">f", y) == raw_bytes then return y end
  end
  return x
end

local function read_field(tvb, f)
  local r = tvb:range(f.off, f.size)
  if f.type == "f32" then
    local x = f32_repr(r:float(), r:raw())
    if f.scale ~= 1 or f.offset ~= 0 then x = x * f.scale + f.offset end
    return r, nil, x
  end
  local raw
  if f.type:sub(1, 1) == "i" then raw = r:int() else raw = r:uint() end
  local v
  if f.mode == "raw" then
    v = raw
  elseif f.mode == "lin" then
    v = raw * f.scale + f.offset
  else  -- "div": (raw * m + o) / d, exact in doubles, so the same as rounding to d's digits
    v = (raw * f.m + f.o) / f.d
  end
  return r, raw, v
end

local function fmt(v)
  if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%d", v) end
  return string.format("%.17g", v)
end

local function dissect(tvb, pinfo, tree)
  local n = tvb:len()
  pinfo.cols.protocol:set("precast")
  local root = tree:add(p, tvb:range(0, n))
  if n < 4 then  -- what there is of the header, then the complaint
    if n >= 1 then root:add(pf.magic, tvb:range(0, 1)) end
    if n >= 2 then
      root:add(pf.version, tvb:range(1, 1))
      root:add(pf.flags, tvb:range(1, 1))
    end
    root:add_proto_expert_info(ex.short,
      string.format("%d of %d header bytes: too short", n, HEADER_LEN))
    pinfo.cols.info:set(string.format("precast, too short (%d bytes)", n))
    return n
  end
  root:add(pf.magic, tvb:range(0, 1))
  local magic = tvb:range(0, 1):uint()
  local vf = tvb:range(1, 1):uint()
  root:add(pf.version, tvb:range(1, 1))
  local flags_item = root:add(pf.flags, tvb:range(1, 1))
  local delayed = math.floor(vf / 2) % 2 == 1
  if vf % 2 == 1 then flags_item:append_text(" (MIC)") end
  if delayed then flags_item:append_text(" (delayed)") end
  local id = tvb:range(2, 2):uint()
  local titem = root:add(pf.template, tvb:range(2, 2))
  if magic ~= MAGIC then
    root:add_proto_expert_info(ex.magic, string.format("Magic 0x%02x, not 0x50", magic))
  end
  if math.floor(vf / 16) ~= VERSION then
    root:add_proto_expert_info(ex.version,
      string.format("Version %d, this dissector knows 1", math.floor(vf / 16)))
  end
  if math.floor((vf % 16) / 4) ~= 0 then
    flags_item:add_proto_expert_info(ex.flags,
      string.format("Reserved flag bits 0x%x set", vf % 16 - vf % 4))
  end
  local t = TEMPLATES[id]
  if t == nil then
    titem:add_proto_expert_info(ex.unknown, string.format("Template %d is not known", id))
  end
  if n >= 8 then root:add(pf.device, tvb:range(4, 4)) end
  if n >= 12 then root:add(pf.seq, tvb:range(8, 4)) end
  local info = string.format("%s device %s seq %s", t and t.name or ("template " .. id),
    n >= 8 and tostring(tvb:range(4, 4):uint()) or "?",
    n >= 12 and tostring(tvb:range(8, 4):uint()) or "?")
  if n < HEADER_LEN + 2 then
    root:add_proto_expert_info(ex.short,
      string.format("%d bytes: too short, precast needs at least %d", n, HEADER_LEN + 2))
    if t and not t.mic then root:add(pf.check_ok, false):set_generated() end
    pinfo.cols.info:set("precast " .. info .. " [too short]")
    return n
  end
  if t == nil then
    pinfo.cols.info:set("precast " .. info .. " [unknown template]")
    return n
  end
  root:append_text(string.format(", %s (%d), device %d, seq %d", t.name, id,
    tvb:range(4, 4):uint(), tvb:range(8, 4):uint()))
  if (vf % 2 == 1) ~= t.mic then
    flags_item:add_proto_expert_info(ex.kind,
      string.format("Template %s uses %s", t.name, t.check))
  end
  -- A delayed frame: the age sits where the live frame's check does, the check 4 bytes on.
  local plen, c = t.plen, t.check_off
  if delayed then plen, c = t.plen + AGE_LEN, t.check_off + AGE_LEN end
  if n ~= plen then
    root:add_proto_expert_info(ex.length,
      string.format("%d bytes, template %s (%d)%s needs %d", n, t.name, id,
        delayed and " delayed" or "", plen))
  end
  if tvb:reported_len() > n then
    root:add_proto_expert_info(ex.length,
      string.format("only %d of %d bytes captured", n, tvb:reported_len()))
  end
  for _, f in ipairs(t.fields) do
    if f.off + f.size > n then break end
    local r, raw, v = read_field(tvb, f)
    local item = root:add(field_pf[f.name], r, v)
    if f.unit ~= "" then item:append_text(" " .. f.unit) end
    if raw ~= nil then
      item:append_text(" (raw " .. fmt(raw) .. ")")
      item:add(pf.raw, r, Int64.new(raw))
    end
    if f.unit ~= "" then item:add(pf.unit, f.unit):set_generated() end
  end
  if delayed and t.check_off + AGE_LEN <= n then
    local age = tvb:range(t.check_off, AGE_LEN):uint()
    local item = root:add(pf.age, tvb:range(t.check_off, AGE_LEN))
    item:append_text(string.format(" (%.3f s)", age / 1000))
    -- the capture's clock minus the age, to the millisecond
    local ms = math.floor(pinfo.abs_ts * 1000 + 0.5) - age
    local secs = math.floor(ms / 1000)
    root:add(pf.taken_at, NSTime.new(secs, (ms - secs * 1000) * 1000000)):set_generated()
    info = info .. string.format(" delayed %.3f s, taken at %s.%03d UTC", age / 1000,
      os.date("!%Y-%m-%d %H:%M:%S", secs), ms - secs * 1000)
  end
  if t.mic then
    if c + t.check_len <= n then
      local item = root:add(pf.mic, tvb:range(c, t.check_len))
      item:append_text(" [not verified: the MIC needs the device's key]")
    end
    pinfo.cols.info:set("precast " .. info .. " (MIC not verified)")
  else
    local good = false
    if n == plen then
      local want = crc16(tvb, c)
      local got = tvb:range(c, 2):uint()
      good = want == got
      local item = root:add(pf.crc, tvb:range(c, 2))
      local ok = root:add(pf.check_ok, good)
      ok:set_generated()
      if good then
        item:append_text(" [correct]")
      else
        item:append_text(string.format(" [wrong: computed 0x%04x]", want))
        root:add(pf.computed, want):set_generated()
        item:add_proto_expert_info(ex.bad_crc,
          string.format("Wrong CRC-16: 0x%04x, computed 0x%04x", got, want))
      end
    else
      root:add(pf.check_ok, false):set_generated()
    end
    pinfo.cols.info:set("precast " .. info .. (good and "" or " [bad check]"))
  end
  return n
end

function p.dissector(tvb, pinfo, tree)
  return dissect(tvb, pinfo, tree)
end

local function heuristic(tvb, pinfo, tree)
  if tvb:len() < 4 then return false end
  if tvb:range(0, 1):uint() ~= MAGIC then return false end
  if math.floor(tvb:range(1, 1):uint() / 16) ~= VERSION then return false end
  if TEMPLATES[tvb:range(2, 2):uint()] == nil then return false end
  dissect(tvb, pinfo, tree)
  return true
end

local udp_port = DissectorTable.get("udp.port")
for _, port in ipairs(PORTS) do udp_port:add(port, p) end
p:register_heuristic("udp", heuristic)
"""


def lua_dissector(layouts: list[Layout], ports: list[int]) -> str:
    """The Lua source of a dissector for these compiled templates, on these UDP ports."""
    by_id: dict[int, Layout] = {}
    for lay in layouts:
        by_id.setdefault(lay.template.id, lay)
    want = sorted({lay.template.network.dst_port for lay in by_id.values()} | set(ports))
    names = ", ".join(f"{lay.template.name} ({lay.template.id})" for lay in by_id.values())
    entries = "\n".join(_template_entry(lay) for lay in by_id.values())
    return (
        "-- precast dissector for Wireshark 3.6+ (Lua 5.2+), written by `precast dissector`.\n"
        f"-- Templates: {names}.\n"
        "-- Load it with: tshark -X lua_script:precast.lua ... (or copy it to your Wireshark\n"
        "-- personal plugins folder). Regenerate it when a template changes.\n\n"
        f"local TEMPLATES = {{\n{entries}\n}}\n"
        f"local PORTS = {{{', '.join(map(str, want))}}}\n" + _LUA_BODY
    )


def _port(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} is out of range 1..65535")
    return n


def cmd_dissector(args: argparse.Namespace) -> int:
    """`precast dissector`: write the Lua script to -o FILE or stdout."""
    layouts = load_layouts(args.template)
    lua = lua_dissector(layouts, args.port or [])
    if args.output in (None, "-"):
        sys.stdout.write(lua)
        return 0
    try:
        Path(args.output).write_text(lua, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e.strerror}") from None
    print(f"wrote {args.output}: {len(layouts)} templates", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add the `dissector` command."""
    d = sub.add_parser(
        "dissector",
        help="write a Wireshark/tshark Lua dissector for templates",
        description="Write a Lua dissector (Wireshark 3.6 and later) covering the given "
        "templates: registered on each template's UDP destination port and any --port, plus a "
        "heuristic on every UDP port for datagrams that start with precast's magic, version and "
        "a known template id. It shows each field in units (precast.field.NAME), checks CRC-16 "
        "(precast.check_ok) and marks MICs not verified.",
        epilog=examples(
            "precast dissector templates -o precast.lua",
            "tshark -X lua_script:precast.lua -r capture.pcap -V",
            "precast dissector templates/env-node.toml --port 5000 -o precast.lua",
        ),
    )
    d.add_argument("template", nargs="+", help="template .toml file or directory")
    d.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    d.add_argument(
        "--port",
        type=_port,
        action="append",
        metavar="N",
        help="also register on this UDP port (repeatable)",
    )
    d.set_defaults(func=cmd_dissector)
