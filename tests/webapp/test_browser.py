"""Headless Chromium: a household signs in through the login form, sees its house and its live
alerts (an alert inserted into RethinkDB appears as text, another house's never does), saves
its notification settings, and cannot open another house."""
import time
import uuid

import pytest

from tests.webapp.conftest import make_alert
from tools.browser import browser_processes, chromium_driver, still_running
from tools.server import ServerProcess, make_user

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PASSWORD = "a household's own password"


def test_a_household_signs_in_and_sees_its_live_alerts_its_settings_and_no_other_house(
        settings, rethinkdb_ready, cassandra_session, house_id, insert_alert):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    other = f"h-{uuid.uuid4().hex[:10]}"
    cassandra_session.execute("INSERT INTO houses (house_id, zip, tz) VALUES (%s, '02139', 'America/New_York')",
                              (other,))
    name, _token = make_user(settings, "household", [house_id], password=PASSWORD)
    with ServerProcess(settings, {"SSE_HEARTBEAT_S": 0.5}) as server:
        driver = chromium_driver()
        try:
            driver.get(f"{server.url}/alerts")
            WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "sign-in")))
            assert "/login?next=/alerts" in driver.current_url
            driver.find_element(By.ID, "username").send_keys(name)
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "sign-in").click()
            WebDriverWait(driver, 15).until(ec.text_to_be_present_in_element((By.ID, "feed-status"), "live"))
            assert driver.current_url == f"{server.url}/alerts"
            assert driver.find_element(By.ID, "signed-in-as").text == name
            cookie = driver.get_cookie("smw_session")  # Secure, and kept by Chromium on http://127.0.0.1
            assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
            time.sleep(0.3)  # the page's stream has subscribed (first bytes sent after the subscription)
            theirs = insert_alert(make_alert(other))
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
            assert not driver.find_elements(By.CSS_SELECTOR, f'tr[data-alert-id="{theirs["id"]}"]')
            assert other not in driver.find_element(By.ID, "alerts").text

            # its notification settings: saved from the form (a cookie session: the page's CSRF token)
            driver.get(f"{server.url}/settings/notifications")
            # its fields are enabled once the saved settings fill them
            email = WebDriverWait(driver, 10).until(ec.element_to_be_clickable((By.NAME, "email")))
            email.clear()
            email.send_keys(f"{name}@example.org")
            driver.find_element(By.CSS_SELECTOR, "#notify-form button[type=submit]").click()
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "save-status").text == "saved"
                                            or d.find_element(By.ID, "save-status").text.startswith("not saved"))
            assert driver.find_element(By.ID, "save-status").text == "saved"
            driver.refresh()  # the form is filled from GET /api/me/notifications
            try:
                WebDriverWait(driver, 10).until(
                    lambda d: d.find_element(By.NAME, "email").get_attribute("value") == f"{name}@example.org")
            except TimeoutException:
                field = driver.find_element(By.NAME, "email").get_attribute("value")
                status = driver.find_element(By.ID, "save-status").text
                raise AssertionError(f"after a reload the e-mail field holds {field!r}, status {status!r}") from None

            driver.get(f"{server.url}/houses/{house_id}")
            assert house_id in driver.find_element(By.TAG_NAME, "h1").text
            driver.get(f"{server.url}/houses/{other}")
            assert driver.find_element(By.TAG_NAME, "h1").text == "Error 403"
            assert other not in driver.find_element(By.TAG_NAME, "main").text.replace(f"{name} may not see", "")
        finally:
            processes = browser_processes(driver)
            driver.quit()
    assert len(processes) > 1  # chromedriver and Chromium's processes
    assert still_running(processes) == []
