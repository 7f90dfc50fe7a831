"""WiFi in station mode (ESP32, Pico W: network.WLAN) from `precast_secrets.py`.

board.wifi_up calls it where the port has a network module (never on the
unix port); the secrets module is put on the device by `precast build
--secrets` or deploy and never enters the repository:

    WIFI_SSID = "my-network"
    WIFI_PASSWORD = "..."
    WIFI_TIMEOUT_MS = 20000  # optional
"""

import time


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
        if status in _fatal_statuses(network):
            print("precast: WiFi %r: %s" % (ssid, _status_text(network, status)))
            wlan.disconnect()
            return False
        if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
            print("precast: WiFi %r: no connection after %d ms (status %s)"
                  % (ssid, timeout_ms, _status_text(network, status)))  # fmt: skip
            wlan.disconnect()
            return False
        if wdt is not None:
            wdt.feed()
        time.sleep_ms(100)
    print("precast: WiFi %r up, address %s" % (ssid, wlan.ifconfig()[0]))
    return True


# The ports' names for failed connections; rp2 reports negative numbers without names.
_STATUS_NAMES = (
    ("STAT_WRONG_PASSWORD", -3, "wrong password"),
    ("STAT_NO_AP_FOUND", -2, "no access point with that SSID"),
    ("STAT_CONNECT_FAIL", -1, "connection failed"),
)


def _fatal_statuses(network):
    return [getattr(network, name, code) for name, code, _ in _STATUS_NAMES]


def _status_text(network, status):
    for name, code, text in _STATUS_NAMES:
        if status == getattr(network, name, code):
            return text
    return str(status)
