"""precast firmware: sends sensor readings as precompiled frames, patched in place.

The host compiles a template into `precast_template` (constants: the
frame, offsets, struct format, partial sums) and writes `precast_config`;
`main.py` hands both to `app.main`. Modules:

- sender: the frame, patched per reading (seq, fields, check, UDP checksum)
- checks: the hot path (seal: seq, fields, CRC-16 or CMAC, UDP checksum; the sim's
  walk), chosen once: viper (native code, one call a reading) or plain (the fallback)
- viper, plain: the two versions of the hot path, with the same names and bytes
- layout: the numbers they share, named (wire offsets, magic, version, params slots); each
  module repeats those it uses as private const(), so no bundle carries it
- cmac: AES-128-CMAC (RFC 4493) over cryptolib's AES, subkeys computed once;
  viper_cmac: its per-reading steps as viper code (both only with a MIC)
- transport_<name>: udp, packet, serial, w5500, enc28j60 (SPI Ethernet chips: the whole
  frame, no IP stack), mem (one class `Transport` each)
- ethchip: what the two SPI Ethernet drivers share (bus, reset line, errnos, bounded waits,
  counts)
- robust: retry with backoff around a transport, counting failures
- sensors.<name>: drivers that fill a list with raw integers (sim, bme280, ds18b20,
  battery; group reads several)
- board: the watchdog, sleep between readings, WiFi through wifi (from precast_secrets)
- buses: the I2C, SPI, 1-Wire buses, ADC and output pins drivers ask for
- seqstore: the seq across resets and power loss (a flash reservation)
- deepsleep: what crosses a deep sleep (the seq's record and the backlog's ring in RTC
  memory), over seqstore and board; only a bundle built --sleep deep carries it
- app: the main loop; counts: what a run did (loaded once it is over)
"""
