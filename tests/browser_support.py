"""Finding headless Chromium for the browser tests, as scripts/setup.sh does (`command -v
chromium`, `command -v chromedriver`), with Debian's paths as the fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

INSTALL_HINT = ("needs chromium and chromedriver on PATH (scripts/setup.sh --dev installs "
                "Debian's chromium and chromium-driver)")


def _find(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    debian = Path("/usr/bin") / name
    return str(debian) if debian.exists() else None


CHROMIUM, CHROMEDRIVER = _find("chromium"), _find("chromedriver")
FOUND = CHROMIUM is not None and CHROMEDRIVER is not None


def chrome(profile: Path, window: str):
    """A headless Chromium driven by selenium, with its own profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--window-size={window}",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
