"""Write PNGs of the main pages (for the README) from sample data in a separate namespace.

    python -m tools.screenshots [--out docs/screenshots] [--namespace smw_screens]
"""
from __future__ import annotations

import argparse
import logging
import secrets
import time
from pathlib import Path

from smw import config, cql, init
from tools import sample
from tools.browser import chromium_driver
from tools.server import ServerProcess, make_user

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(config.ROOT / "docs" / "screenshots"))
    parser.add_argument("--namespace", default="smw_screens", help="Cassandra keyspace and RethinkDB db for the sample")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = config.load().replace(cassandra_keyspace=args.namespace, rethinkdb_db=args.namespace)
    handle, session = cql.connect(settings, keyspace=False)
    try:
        cql.apply_schema(session, settings)
        init.create_rethinkdb(settings)
        houses = sample.seed(session, settings)
    finally:
        handle.shutdown()
    password = secrets.token_urlsafe(12)
    admin, _token = make_user(settings, "admin", password=password, name="screenshots")
    pages = {"overview": "/", "house": f"/houses/{houses[0]}", "appliance": "/appliances/refrigerator",
             "zips": "/zips", "alerts": "/alerts", "live_power": f"/houses/{houses[0]}/live"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ServerProcess(settings) as server:
        driver = chromium_driver(1280, 1000)
        try:
            sign_in(driver, server.url, admin, password)
            for name, path in pages.items():
                driver.get(server.url + path)
                time.sleep(2.0)  # charts draw after their API answers
                target = out / f"{name}.png"
                driver.save_screenshot(str(target))
                print(f"wrote {target}")
        finally:
            driver.quit()


def sign_in(driver, url: str, username: str, password: str) -> None:
    """Sign in through the login form, as a person does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 15).until(lambda d: "/login" not in d.current_url)


if __name__ == "__main__":
    main()
