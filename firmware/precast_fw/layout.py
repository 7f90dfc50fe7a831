"""Every number the hot path shares, named: the wire format's, Sender.params', the sim's state.

The wire numbers are docs/PROTOCOL.md's and the host's
(precast.wire.constants); tests/firmware/test_firmware_constants.py holds each
`NAME = const(N)` here against the host's value of NAME, and every module's
copy of a name against this one. No module imports this one: each repeats
the names it uses as a private `_NAME = const(N)`, which the compiler folds
into the code and which leaves no global behind (an imported name is a
dictionary entry in both modules and a lookup at every use, and viper folds
only its own module's const(): a ptr index must be a machine int). So no
bundle carries this module; it is the list the copies are held to.

Frame: Ethernet II (14) | IPv4 (20) | UDP (8) | payload. Payload: magic,
version << 4 | flags, template id (2), device (4), seq (4), fields, check.
"""

from micropython import const

# Frame offsets.
UDP_CSUM_OFFSET = const(40)  # the UDP checksum, big-endian
PAYLOAD_OFFSET = const(42)  # Ethernet 14 + IPv4 20 + UDP 8
# Payload offsets.
OFF_MAGIC = const(0)
OFF_VERFLAGS = const(1)
OFF_SEQ = const(8)
OFF_FIELDS = const(12)
# The same, from the frame's start: what seal() patches.
FRAME_SEQ = const(50)  # PAYLOAD_OFFSET + OFF_SEQ
FRAME_FIELDS = const(54)  # PAYLOAD_OFFSET + OFF_FIELDS
# Header bytes.
MAGIC = const(0x50)
VERSION = const(1)  # the high nibble of payload byte 1
FLAG_MIC = const(0x01)  # the low nibble: the check is a CMAC
FLAG_DELAYED = const(0x02)  # a delayed frame: the age (u32 ms) after the fields
# tpl.CHECK_KIND (the generated template): 0 a CRC-16, 1 a CMAC of tpl.CHECK_LEN bytes.
CHECK_CRC16 = const(0)
CRC16_LEN = const(2)
CRC16_POLY = const(0x1021)  # CRC-16/CCITT-FALSE: init 0xFFFF, no reflection, xorout 0
AES_BLOCK = const(16)  # AES-128-CMAC works in blocks of 16 bytes (RFC 4493)

# Sender.params, an array('I'): what seal() reads (and P_SEQ, which it counts up).
P_SEQ = const(0)  # the next seq; counts up (mod 2**32) in the array, never a big int
P_FIELDS = const(1)  # fields seal() writes (0: the template's pack() wrote them)
P_CHECK = const(2)  # check offset in the payload
P_CHECK_LEN = const(3)
P_CRC_INIT = const(4)  # CRC state after payload [0, 8) (the host bakes it in)
P_PARTIAL = const(5)  # one's-complement sum of pseudo-header, UDP header, payload [0, 8)
P_MAC = const(6)  # 1: the check is a CMAC of sender.mac
P_PLEN = const(7)
P_SIZES = const(8)  # one size (1, 2, 4) per field from here

# sensors.sim's state, an array('I'): the xorshift state, the field count, then per field
# S_STRIDE slots from S_FIELDS. Values are stored plus S_BIAS, so that nothing in the array
# is negative (a ptr32 load is unsigned on a 64-bit port).
S_X = const(0)
S_N = const(1)
S_FIELDS = const(2)
S_V = const(0)  # the walk's value (without noise)
S_LO = const(1)
S_HI = const(2)
S_DRIFT = const(3)  # raw units per reading, turning at the edges
S_NOISE = const(4)  # noise amplitude: +-S_NOISE raw units
S_STRIDE = const(5)
S_BIAS = const(0x10000000)  # 2**28: values within +-2**28 stay small ints on any port

