"""Install the pinned Home Assistant in a venv of its own (build/ha/venv), for `make ha`.

As Home Assistant's own container does: its wheel's package_constraints.txt
pins every library it shares with its integrations, plus `josepy<2` (acme,
a dependency of hass-nabucasa, breaks on josepy 2). The integrations the test
loads have their requirements in their manifests; `hass --skip-pip` then never
installs at run time. Done once: a stamp file names what was installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

HA_VERSION = "2024.3.3"  # the newest release that runs on Python 3.11
ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "ha"
VENV = BUILD / "venv"
PYTHON = VENV / "bin" / "python"
# What configuration.yaml loads, and the MQTT platforms' imports (camera needs numpy).
DOMAINS = [
    "api", "websocket_api", "config", "onboarding", "frontend", "mqtt", "sensor",
    "binary_sensor", "http", "energy", "recorder", "hardware", "backup", "camera",
]  # fmt: skip


def _pip(*args: str) -> None:
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
        check=True,
    )


def requirements(components: Path) -> list[str]:
    """The requirements of DOMAINS and every integration they depend on, from the manifests."""
    seen: set[str] = set()
    reqs: set[str] = set()
    todo = list(DOMAINS)
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        manifest = json.loads((components / d / "manifest.json").read_text())
        reqs.update(manifest.get("requirements", []))
        todo += manifest.get("dependencies", [])
    return sorted(reqs)


def install() -> Path:
    """The venv's python, installing first if the stamp does not say HA_VERSION."""
    stamp = BUILD / "installed"
    if stamp.exists() and stamp.read_text().strip() == HA_VERSION and PYTHON.exists():
        return PYTHON
    BUILD.mkdir(parents=True, exist_ok=True)
    print(f"make ha: installing Home Assistant {HA_VERSION} in {VENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wheels = BUILD / "wheels"
    subprocess.run(
        [str(PYTHON), "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
         f"homeassistant=={HA_VERSION}", "-d", str(wheels)],
        check=True,
    )  # fmt: skip
    (wheel,) = wheels.glob(f"homeassistant-{HA_VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as z:
        pins = z.read("homeassistant/package_constraints.txt").decode()
    constraints = BUILD / "constraints.txt"
    constraints.write_text(pins + "josepy<2\n")
    _pip("-c", str(constraints), str(wheel))
    site = Path(
        subprocess.run(
            [str(PYTHON), "-c", "import homeassistant as h; print(h.__path__[0])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    _pip("-c", str(constraints), *requirements(site / "components"))
    stamp.write_text(HA_VERSION + "\n")
    return PYTHON


if __name__ == "__main__":
    print(install())
