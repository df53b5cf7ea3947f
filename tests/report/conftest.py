"""The report's browser: a real headless Chromium (only the report's tests open a page)."""

from __future__ import annotations

import os

import pytest

#: Flags of the headless browser: CI runs as root (no sandbox), and nothing may reach the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium():
    """A real headless Chromium, Debian's ``chromium`` package driven by Playwright (never a downloaded one).

    Missing browser or Playwright: a skip whose reason says how to install it; with ``CI=true`` a failure.
    """
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = None
    if path is None:
        missing = "no chromium browser: apt-get update && apt-get install -y chromium"
    elif sync_playwright is None:
        missing = 'no playwright: pip install -e ".[tests]" (the browser is the system\'s chromium)'
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
