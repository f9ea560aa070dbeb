"""A headless Chromium WebDriver for the browser test and `make screenshots`.

Serve the app with `tools.server.ServerProcess` and point the driver at its url."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The network is closed: without these Chromium waits on refused connections.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900"]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root_pid: int) -> dict[int, int]:
    """{pid: start time} of every living descendant of a process (from /proc, Linux only)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None and found[0] != "Z":
                children.setdefault(found[1], []).append((int(entry), found[2]))
    tree, todo = {}, [root_pid]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            tree[pid] = started
            todo.append(pid)
    return tree


def _kill_leftovers(processes: dict[int, int], wait_s: float = 5.0) -> list[int]:
    """SIGKILL those of the given processes (pid: start time) still running after wait_s; their pids."""
    deadline = time.monotonic() + wait_s
    while (left := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 2.0  # SIGKILL is delivered asynchronously
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def browser_processes(driver) -> dict[int, int]:
    """{pid: start time} of the chromedriver the driver's service started and all its descendants."""
    process = driver.service.process
    if process is None or (found := _stat(process.pid)) is None:
        return {}
    return {process.pid: found[2], **descendants(process.pid)}


def still_running(processes: dict[int, int]) -> list[int]:
    """Those of the given processes (pid: start time) still running; the start time guards
    against a pid the kernel has reused meanwhile."""
    return [pid for pid, started in processes.items()
            if (found := _stat(pid)) is not None and found[0] != "Z" and found[2] == started]


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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # driver.get_log("browser"): the console
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(width, height)
    original_quit = driver.quit

    def quit_and_clean():
        # Chromium's processes are children of the chromedriver the service started; noted
        # before quit(), because once chromedriver exits they are orphans nobody waits for.
        started = browser_processes(driver)
        try:
            original_quit()
        finally:
            killed = _kill_leftovers(started)
            if killed:
                log.warning("killed %d chromium processes left after quit: %s", len(killed), killed)
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver
