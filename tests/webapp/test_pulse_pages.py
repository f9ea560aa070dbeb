"""Headless Chromium on a page that speaks to the pulse-meter API as the original pages do.

The page (tests/webapp/pages/pulse_pages.html) is served from another origin, as pages
of the original deployments often were, so every request goes through CORS. Like those pages,
it sends no credentials: the meter is opened to anonymous reads (`flask --app webapp users
open-meter`), as a deployment serving such pages does."""
import functools
import http.server
import threading
import time
from pathlib import Path

import pytest

from tools.browser import chromium_driver
from tools.server import ServerProcess, free_port
from webapp import accounts
from webapp.db import CassandraStore

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PAGES = Path(__file__).parent / "pages"
QUIET_S = 35  # longer than the 30 s after which the earlier /blip gave up with an empty 204


@pytest.fixture
def page_origin():
    """The pages folder served over HTTP on another port: another origin than the API."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAGES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def opened(settings, pulse_meter):
    """The pulse meter, open to anonymous reads from this machine."""
    meter_id, store = pulse_meter
    cassandra = CassandraStore(settings)
    accounts.open_meter(cassandra, meter_id, accounts.networks(["127.0.0.1/32"]))
    yield meter_id, store
    accounts.close_meter(cassandra, meter_id)
    cassandra.shutdown()


def state(driver) -> dict:
    return driver.execute_script("return window.pulsePage")


def test_original_pages_requests_all_succeed_and_blip_survives_a_quiet_period(settings, opened, page_origin):
    from selenium.webdriver.support.ui import WebDriverWait

    meter_id, store = opened
    now_ms = int(time.time() * 1000)
    # three hours of blinks every 3 s (two pages of /since), and one a week over the year
    store([[now_ms - 3 * 3_600_000 + 3000 * i, 3000] for i in range(3600)] +
          [[now_ms - week * 7 * 86_400_000, 2500] for week in range(1, 52)])
    web = {"PULSE_DEFAULT_METER": meter_id, "PULSE_METER_ALIASES": {"1": meter_id}, "BLIP_KEEPALIVE_S": 10}
    with ServerProcess(settings, web) as server:
        driver = chromium_driver()
        try:
            driver.get(f"{page_origin}/pulse_pages.html?api={server.url}&meter=1")
            WebDriverWait(driver, 60).until(lambda d: state(d)["ready"] or state(d)["failures"])
            found = state(driver)
            assert found["failures"] == []
            answered = [entry for entry in found["log"] if not entry["url"].startswith("/blip")]
            assert len(answered) == 19 and all(entry["ok"] and entry["status"] == 200 for entry in answered)
            assert len(found["series"]["live"]) >= 300 and len(found["series"]["hourly"]) >= 50
            history = [e["url"] for e in found["log"] if e["url"].startswith("/since/1/")]
            assert len(history) == 2  # 3600 points: a page of 2000, then one of 1600
            time.sleep(QUIET_S)  # no blink: both long polls wait
            for step in range(2):
                stamp_ms = int(time.time() * 1000)
                store([[stamp_ms, 1500 + step]])
                WebDriverWait(driver, 10).until(lambda d: state(d)["failures"] or (
                    len(state(d)["blips"]["single"]) > step and len(state(d)["blips"]["multi"]) > step))
                assert state(driver)["failures"] == []
            found = state(driver)
            assert found["blips"]["single"][-1] == found["blips"]["multi"][-1] == [stamp_ms, 1501]
            assert found["failures"] == []
            blip_answers = [entry for entry in found["log"] if entry["url"].startswith("/blip")]
            assert len(blip_answers) == 6  # two answered polls and a waiting one, each form
            assert all(entry["ok"] for entry in blip_answers if entry["status"] is not None)
            drawn = driver.execute_script(
                "const c = document.getElementById('graph');"
                "const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                "let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i]) n++; return n;")
            assert drawn > 1000
            console = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
            assert console == []
        finally:
            driver.quit()
