"""Headless Chromium: the live alerts page shows an alert inserted into RethinkDB, as text."""
import time

import pytest

from tests.webapp.conftest import make_alert
from tools.browser import browser_processes, chromium_driver, still_running
from tools.server import ServerProcess

pytestmark = pytest.mark.integration


def test_alerts_page_shows_an_inserted_alert_without_reload(settings, rethinkdb_ready, house_id, insert_alert):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with ServerProcess(settings, {"SSE_HEARTBEAT_S": 0.5}) as server:
        driver = chromium_driver()
        try:
            driver.get(f"{server.url}/alerts?house_id={house_id}")
            WebDriverWait(driver, 15).until(ec.text_to_be_present_in_element((By.ID, "feed-status"), "live"))
            time.sleep(0.3)  # the page's stream has subscribed (first bytes sent after the subscription)
            evil = '<img src=x onerror="document.title=1">'
            alert = insert_alert(make_alert(house_id, appliance=evil))
            row = WebDriverWait(driver, 5).until(
                ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-alert-id="{alert["id"]}"]')))
            assert evil in row.text  # shown as text ...
            assert not driver.find_elements(By.CSS_SELECTOR, "#alerts img")  # ... never as markup
            insert_alert(dict(alert, state="closed", updated_ts_s=alert["updated_ts_s"] + 1))
            # the page replaces the row when the update arrives: a row found just before is stale
            WebDriverWait(driver, 5, ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: "closed" in d.find_element(By.CSS_SELECTOR, f'tr[data-alert-id="{alert["id"]}"]').text)
        finally:
            processes = browser_processes(driver)
            driver.quit()
    assert len(processes) > 1  # chromedriver and Chromium's processes
    assert still_running(processes) == []
