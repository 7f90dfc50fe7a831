"""Pictures of Home Assistant's frontend for `make ha`: headless Chromium, logged in.

Home Assistant's frontend (the home-assistant-frontend wheel, served by the
instance itself: no network) keeps its login in localStorage `hassTokens`.
Chromium is driven through its DevTools protocol (a websocket): a page of
Home Assistant's origin gets the tokens onboarding gave, then the page to
shoot is opened and waited for until its text (across the shadow roots the
frontend renders into) holds what the caller names; the PNG is Chromium's
own capture. Debian's `chromium` package is the browser.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

WIDTH, HEIGHT = 1280, 760

# The page's text, through every shadow root (the frontend is web components all down).
_TEXT = """
(() => {
  const walk = (n) => {
    let t = "";
    if (n.shadowRoot) t += walk(n.shadowRoot);
    for (const c of n.childNodes) t += c.nodeType === 3 ? c.textContent + " " : walk(c);
    return t;
  };
  return walk(document.body || document);
})()
"""


def chromium() -> str | None:
    """The browser's path, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Page:
    """One Chromium tab, spoken to over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self.ids)
        await self.ws.send_json({"id": i, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    async def text(self) -> str:
        r = await self.call("Runtime.evaluate", expression=_TEXT, returnByValue=True)
        return str(r.get("result", {}).get("value", ""))


async def shoot(
    url: str,
    tokens: dict[str, Any],
    shots: list[tuple[str, list[str], Path]],
    timeout: float = 60.0,
) -> list[Path]:
    """Log in with `tokens` (onboarding's) and, per (path, words, png), open url + path,
    wait until the page shows every word, and write its picture."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("no chromium (Debian: apt-get install chromium)")
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="precast-chromium-")
    argv = [exe, "--headless=new", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}", "about:blank"]  # fmt: skip
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = []
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    r = await http.get(f"http://127.0.0.1:{port}/json/list")
                    pages = [t for t in await r.json() if t["type"] == "page"]
                    if pages:
                        break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium's DevTools did not answer")
                await asyncio.sleep(0.2)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call(  # the picture's size exactly, whatever the window's frame
                    "Emulation.setDeviceMetricsOverride",
                    width=WIDTH,
                    height=HEIGHT,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                # Any page of the origin will do to set its localStorage.
                await page.call("Page.navigate", url=f"{url}/manifest.json")
                await asyncio.sleep(0.5)
                expires = int(time.time() * 1000) + 1000 * int(tokens["expires_in"])
                stored = {**tokens, "hassUrl": url, "clientId": f"{url}/", "expires": expires}
                login = json.dumps(json.dumps(stored))
                await page.call(
                    "Runtime.evaluate", expression=f"localStorage.setItem('hassTokens', {login})"
                )
                for path, words, png in shots:
                    await page.call("Page.navigate", url=url + path)
                    end = time.monotonic() + timeout
                    while True:
                        text = await page.text()
                        if all(w in text for w in words):
                            break
                        if time.monotonic() > end:
                            missing = [w for w in words if w not in text]
                            raise RuntimeError(f"{path}: never showed {missing}: {text[:300]!r}")
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(1.5)  # the cards' fade-in
                    shot = await page.call("Page.captureScreenshot", format="png")
                    png.parent.mkdir(parents=True, exist_ok=True)
                    png.write_bytes(base64.b64decode(shot["data"]))
                    written.append(png)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return written
