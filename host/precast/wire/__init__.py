"""The wire format (docs/PROTOCOL.md): what every other part of precast is built on.

- constants.py  the format's numbers: offsets, lengths, magic, version, flags, reasons
- header.py     the payload header as a named record: its one definition and parse
- template.py   a TOML template, parsed and validated
- layout.py     a template compiled once: the whole frame, offsets, partial checksums
- codec.py      encode and patch frames; decode to a Reading or a Rejected reason
- checks.py     CRC-16/CCITT-FALSE, AES-CMAC, the Internet checksum
- validator.py  the receiver's fast path to the codec's verdict
- units.py      what a unit means: the values a real sensor of that kind gives
- pcap.py       pcap files; slip.py SLIP framing for serial links
"""
