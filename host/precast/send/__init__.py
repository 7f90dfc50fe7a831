"""Sending from the host: frames in batches, paced, through a transport.

- engine.py     token bucket, pump, progress, transport options, the summary line
- batch.py      many frames patched at once with numpy
- send.py       `precast send`: one device's readings
- fleet.py      `precast simulate`: many devices, with faults on demand
- bridge.py     `precast bridge`: SLIP-framed payloads from a serial port, as frames
- transports/   raw AF_PACKET, UDP, pcap file, memory (one per module)
"""
