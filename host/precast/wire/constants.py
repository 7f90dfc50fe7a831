"""The wire format's numbers, in one place (docs/PROTOCOL.md says what each means).

Frame: Ethernet II (14 bytes), IPv4 without options (20), UDP (8), then the
precast payload: magic, version and flags, template id, device id, seq, the
fields, and a CRC-16 or a truncated AES-CMAC. Every module that reads or writes
frames (template, layout, codec, the firmware build) takes its offsets here; the
firmware's own copies are held against these by tests/firmware/test_firmware_constants.py.
"""

from __future__ import annotations

# ---- the frame: Ethernet II, IPv4 (no options), UDP ----------------------------------------
ETH_LEN = 14
IP_LEN = 20
UDP_LEN = 8
IP_OFFSET = ETH_LEN  # 14
UDP_OFFSET = ETH_LEN + IP_LEN  # 34
PAYLOAD_OFFSET = ETH_LEN + IP_LEN + UDP_LEN  # 42
IP_CSUM_OFFSET = IP_OFFSET + 10  # 24
UDP_LEN_OFFSET = UDP_OFFSET + 4  # 38
UDP_CSUM_OFFSET = UDP_OFFSET + 6  # 40
ETHERTYPE_IPV4 = 0x0800
IPPROTO_UDP = 17
IP_FLAGS_DF = 0x4000
ETH_MIN_FRAME = 60  # Ethernet's minimum frame without the FCS; the MAC (or driver) pads
# Largest UDP payload that fits a 1500-byte MTU: 1500 - 20 (IPv4) - 8 (UDP).
MAX_PAYLOAD = 1472
DEFAULT_PORT = 20547  # "PC"

# ---- the payload header --------------------------------------------------------------------
MAGIC = 0x50  # 'P'
VERSION = 1  # high nibble of byte 1
FLAG_MIC = 0x01  # low nibble of byte 1: bit 0 = MIC present
FLAG_DELAYED = 0x02  # bit 1 = delayed: a u32 age (ms from taking to sending) before the check
FLAGS_RESERVED = 0x0C  # bits 2-3 reserved (0)
OFF_MAGIC = 0
OFF_VERFLAGS = 1
OFF_TEMPLATE = 2
OFF_DEVICE = 4
OFF_SEQ = 8
HEADER_LEN = 12
OFF_FIELDS = HEADER_LEN
# The first payload byte whose value differs per device or reading.
VARIABLE_FROM = OFF_DEVICE
U32_MAX = 0xFFFFFFFF
AGE_LEN = 4  # a delayed frame's age: u32 milliseconds, saturating at U32_MAX

# ---- the check at the end ------------------------------------------------------------------
CHECKS: dict[str, int] = {"crc16": 2, "cmac4": 4, "cmac8": 8}  # name -> bytes on the wire
CRC16_INIT = 0xFFFF  # CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0
CRC16_POLY = 0x1021

# ---- the reasons a receiver refuses a frame, in the order it checks ------------------------
SHORT = "short"
MAGIC_BAD = "magic"
VERSION_BAD = "version"
FLAGS_BAD = "flags"
UNKNOWN_TEMPLATE = "unknown-template"
CHECK_KIND = "check-kind"
LENGTH = "length"
CRC = "crc"
MIC = "mic"
NO_KEY = "no-key"
REASONS = (
    SHORT,
    MAGIC_BAD,
    VERSION_BAD,
    FLAGS_BAD,
    UNKNOWN_TEMPLATE,
    CHECK_KIND,
    LENGTH,
    CRC,
    MIC,
    NO_KEY,
)
