"""Helpers for driving the app in headless Chromium: a waitress server in a thread and a driver.

Used by the browser test, `make screenshots` and `make bench-web`."""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading

from waitress import create_server

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The network is closed: without these Chromium waits on refused connections.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900"]


class ServerThread:
    """The app served by waitress on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(self, app, threads: int = 32):
        self.server = create_server(app, host="127.0.0.1", port=0, threads=threads,
                                    connection_limit=max(100, threads * 2), ident="smw")
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.close()


def chromium_driver(width: int = 1280, height: int = 900):
    """A headless Chromium WebDriver with a fresh profile (removed when the driver quits)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="smw-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(width, height)
    original_quit = driver.quit

    def quit_and_clean():
        try:
            original_quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver
