"""Boards: what runs on a device, and the host's tools to put it there.

- build.py     `precast build`: the firmware bundle for one device
- hardware.py  sensors, pins and board options of a bundle
- deploy.py    `precast deploy` and `precast monitor`: mpremote to a board
- virtual.py   `precast board`: the MicroPython unix port as a virtual board over TCP
The firmware itself is MicroPython, in firmware/precast_fw (shipped as precast.firmware).
"""
