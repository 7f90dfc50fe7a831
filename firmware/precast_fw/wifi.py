"""WiFi in station mode (ESP32, Pico W: network.WLAN) from `precast_secrets.py`.

board.wifi_up calls it where the port has a network module (never on the
unix port); the secrets module is put on the device by `precast build
--secrets` or deploy and never enters the repository:

    WIFI_SSID = "my-network"
    WIFI_PASSWORD = "..."
    WIFI_TIMEOUT_MS = 20000  # optional
"""

import time

# The ports' names for failed connections; rp2 reports negative numbers without names.
_FAILED = (
    ("STAT_WRONG_PASSWORD", -3, "wrong password"),
    ("STAT_NO_AP_FOUND", -2, "no access point with that SSID"),
    ("STAT_CONNECT_FAIL", -1, "connection failed"),
)


def up(network, timeout_ms=None, wdt=None):
    """Connect to the secrets' WiFi through the port's `network` module (True when up)."""
    try:
        import precast_secrets as secrets  # type: ignore[import-not-found]  # put on boards by build
    except ImportError:
        print("precast: no precast_secrets.py on the board: build with --secrets FILE")
        return False
    ssid = getattr(secrets, "WIFI_SSID", None)
    if not ssid:
        print("precast: precast_secrets.py has no WIFI_SSID")
        return False
    if timeout_ms is None:
        timeout_ms = getattr(secrets, "WIFI_TIMEOUT_MS", 20000)
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return True
    wlan.connect(ssid, getattr(secrets, "WIFI_PASSWORD", ""))
    start = time.ticks_ms()
    while not wlan.isconnected():
        status = wlan.status()
        why = None
        for name, code, text in _FAILED:
            if status == getattr(network, name, code):
                why = text
        if why is None and time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
            why = "no connection after %d ms (status %s)" % (timeout_ms, status)
        if why is not None:
            print("precast: WiFi %r: %s" % (ssid, why))
            wlan.disconnect()
            return False
        if wdt is not None:
            wdt.feed()
        time.sleep_ms(100)
    print("precast: WiFi %r up, address %s" % (ssid, wlan.ifconfig()[0]))
    return True
