"""Accounts and access: every route of the URL map refuses anonymous and other households'
requests and serves the right ones; the live feed keeps to a household's houses; sign-in,
CSRF, the sign-in rate limit, token revocation and the `flask users` commands."""
from __future__ import annotations

import json
import os
import re
import stat
import time
import uuid

import pytest

from tests.webapp.conftest import bearer, make_alert
from tests.webapp.test_alerts import open_stream, wait_for
from webapp import accounts, auth, create_app, shutdown

pytestmark = pytest.mark.integration

# Endpoints anyone may ask, and those only admins may (they span houses).
PUBLIC = {"static", "api.openapi", "auth.login", "auth.logout"}
ADMIN_ONLY = {"pages.overview", "api.overview", "pages.zips", "api.zip_day", "pages.appliance", "api.appliance_day"}
# Any signed-in user; the answer holds only the user's own houses (checked below).
OWN_SCOPE = {"api.houses"}
# ?house_id= names the house; without it the user's own houses.
HOUSE_QUERY = {"alerts.page", "alerts.stream", "api.alerts"}
# The blueprints whose every endpoint this test classifies; others' endpoints are checked for a
# policy and for refusing anonymous requests.
CLASSIFIED = ("pages", "api", "alerts", "pulse", "auth")
NOW_MS = int(time.time() * 1000)
TARIFF = {"currency": "EUR", "default_rate_per_kwh": 0.25}


def new_house(cassandra_session) -> str:
    name = f"h-{uuid.uuid4().hex[:10]}"
    cassandra_session.execute("INSERT INTO houses (house_id, zip, tz, lat, lon) VALUES (%s, %s, %s, %s, %s)",
                              (name, "02139", "America/New_York", 42.36, -71.09))
    return name


def store_points(cassandra_session, meter_id: str, points) -> None:
    from webapp.pulse import day_of_ms
    for stamp_ms, ms in points:
        cassandra_session.execute("INSERT INTO pulse_points (meter_id, day, stamp_ms, ms) VALUES (%s, %s, %s, %s)",
                                  (meter_id, day_of_ms(stamp_ms), stamp_ms, ms))
        cassandra_session.execute("INSERT INTO pulse_days (meter_id, day) VALUES (%s, %s)",
                                  (meter_id, day_of_ms(stamp_ms)))


@pytest.fixture
def world(settings, cassandra_session, rethinkdb_ready):
    """Two houses with a pulse meter each, their two households and an admin, in an app whose
    caches keep nothing (so an opened or closed meter counts at once)."""
    ours, theirs = new_house(cassandra_session), new_house(cassandra_session)
    meter, open_meter = f"{ours}-1", f"{ours}-2"
    for meter_id in (meter, open_meter, f"{theirs}-1"):
        store_points(cassandra_session, meter_id, [[NOW_MS - 5000, 1000], [NOW_MS - 4000, 1000]])
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "SECRET_KEY": "k" * 64, "AUTH_CACHE_TTL_S": 0,
                      "PULSE_DEFAULT_METER": meter, "PULSE_METER_ALIASES": {"7": meter},
                      "BLIP_MAX_WAIT_S": 0.2, "BLIP_KEEPALIVE_S": 0.1, "SSE_HEARTBEAT_S": 0.2})
    store = app.extensions["smw_cassandra"]
    made = {}
    for key, role, houses in (("ours", "household", [ours]), ("theirs", "household", [theirs]),
                              ("admin", "admin", [])):
        name = f"{key}-{uuid.uuid4().hex[:8]}"
        accounts.create_user(store, name, role, frozenset(houses), None, accounts.hash_password("pw-" + name))
        made[key] = (name, accounts.new_token(store, name, "tests"))
    yield {"app": app, "store": store, "ours": ours, "theirs": theirs, "meter": meter, "open_meter": open_meter,
           "users": made}
    accounts.close_meter(store, open_meter)
    for name, _token in made.values():
        accounts.delete_user(store, name)
    shutdown(app)


def sample_values(rule, house: str, meter: str) -> dict:
    """Path values for a rule, by argument name."""
    values = {"house_id": house, "meter_id": meter, "appliance": "refrigerator", "filename": "app.css",
              "t": str(NOW_MS - 60_000), "n": "60000", "from_ms": str(NOW_MS - 60_000), "to_ms": str(NOW_MS),
              "m": "60000", "c": "5"}
    return {arg: values.get(arg, "x") for arg in rule.arguments if arg not in (rule.defaults or {})}


def requests_of(app, house: str, meter: str):
    """(endpoint, method, url) for every rule of the URL map and each of its methods."""
    for rule in app.url_map.iter_rules():
        _domain, path = rule.build(sample_values(rule, house, meter), append_unknown=False)
        if rule.endpoint in HOUSE_QUERY:
            path += f"?house_id={house}"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, path


def ask(client, method: str, url: str, token: str | None = None):
    headers = bearer(token) if token else {}
    body = json.dumps(TARIFF) if method == "PUT" else None
    response = client.open(url, method=method, headers=headers, data=body, buffered=False)
    status, location = response.status_code, response.headers.get("Location", "")
    response.close()  # streams (SSE, /blip) end here
    return status, location


def refused_anonymously(status: int, location: str, url: str) -> bool:
    if status == 401:
        return True
    return status == 302 and location.startswith("/login?next=") and url.split("?")[0] in location


def test_every_endpoint_has_an_access_policy(world):
    assert auth.unguarded(world["app"]) == []


def test_an_endpoint_without_a_policy_is_refused(world):
    app = world["app"]
    app.add_url_rule("/api/forgotten", "forgotten", lambda: {"secret": 1})
    _name, token = world["users"]["admin"]
    response = app.test_client().get("/api/forgotten", headers=bearer(token))
    assert response.status_code == 403 and "no access policy" in response.get_json()["error"]


def test_every_route_refuses_strangers_and_other_households_and_serves_its_owner(world):
    app, ours, meter = world["app"], world["ours"], world["meter"]
    client = app.test_client()
    tokens = {key: token for key, (_name, token) in world["users"].items()}
    checked, failures = set(), []
    for endpoint, method, url in requests_of(app, ours, meter):
        if endpoint in PUBLIC:
            continue
        checked.add(endpoint)
        status, location = ask(client, method, url)
        if not refused_anonymously(status, location, url):
            failures.append(("anonymous", method, url, status))
        if not endpoint.startswith(CLASSIFIED):
            continue
        status, _ = ask(client, method, url, tokens["theirs"])
        expected_other = 200 if endpoint in OWN_SCOPE else 403
        if status != expected_other:
            failures.append(("other household", method, url, status))
        owner = tokens["admin"] if endpoint in ADMIN_ONLY else tokens["ours"]
        status, _ = ask(client, method, url, owner)
        if status != 200:
            failures.append(("owner", method, url, status))
        if endpoint in ADMIN_ONLY and ask(client, method, url, tokens["ours"])[0] != 403:
            failures.append(("household on an admin route", method, url))
    assert failures == []
    assert {"pages.house", "api.put_house_tariff", "alerts.stream", "pulse.blip", "pulse.last_default",
            "pulse.range_", "api.overview"} <= checked


def test_guessed_ids_of_another_house_are_refused(world):
    client, theirs = world["app"].test_client(), world["theirs"]
    _name, token = world["users"]["ours"]
    for url in (f"/houses/{theirs}", f"/api/houses/{theirs}/daily", f"/api/alerts?house_id={theirs}",
                f"/alerts/stream?house_id={theirs}", f"/last/{theirs}-1", f"/since/{theirs}-1/0",
                f"/blip/{theirs}-1", f"/last/{theirs}-1/60000"):
        assert client.get(url, headers=bearer(token), buffered=False).status_code == 403, url


def test_own_scope_answers_hold_only_the_users_houses(world, insert_alert):
    client, ours, theirs = world["app"].test_client(), world["ours"], world["theirs"]
    _name, token = world["users"]["ours"]
    insert_alert(make_alert(ours))
    insert_alert(make_alert(theirs))
    assert [h["house_id"] for h in client.get("/api/houses", headers=bearer(token)).get_json()["houses"]] == [ours]
    alerts = client.get("/api/alerts", headers=bearer(token)).get_json()["alerts"]
    assert alerts and {a["house_id"] for a in alerts} == {ours}
    _name, admin_token = world["users"]["admin"]
    world["app"].config["HOUSE_LIMIT"] = 1_000_000  # the test keyspace gathers every test's houses
    everyone = {h["house_id"] for h in client.get("/api/houses", headers=bearer(admin_token)).get_json()["houses"]}
    assert {ours, theirs} <= everyone


def test_unauthenticated_answers_say_how_to_authenticate(world):
    client = world["app"].test_client()
    response = client.get(f"/api/houses/{world['ours']}")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in response.get_json()
    response = client.get(f"/api/houses/{world['ours']}", headers=bearer("not-a-token"))
    assert response.status_code == 401 and "invalid_token" in response.headers["WWW-Authenticate"]
    response = client.get(f"/api/houses/{world['ours']}", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert response.status_code == 401
    page = client.get(f"/houses/{world['ours']}?from=2024-03-01")
    assert page.status_code == 302
    assert page.headers["Location"] == f"/login?next=/houses/{world['ours']}?from%3D2024-03-01"


def test_pulse_routes_of_an_open_meter_answer_without_credentials_and_closed_ones_do_not(world):
    app, store, open_meter = world["app"], world["store"], world["open_meter"]
    client = app.test_client()
    urls = [url for endpoint, _method, url in requests_of(app, world["ours"], open_meter)
            if endpoint.startswith("pulse.") and "<" not in url and f"/{open_meter}" in url]
    assert len(urls) == 10  # every multi-meter route
    assert all(client.get(url, buffered=False).status_code == 401 for url in urls)  # closed by default
    accounts.open_meter(store, open_meter, accounts.networks(["127.0.0.1/32"]))
    for url in urls:
        response = client.get(url, buffered=False)
        assert response.status_code == 200, (url, response.status_code)
        response.close()
    assert client.get(f"/last/{world['meter']}").status_code == 401  # the house's other meter stays closed
    accounts.open_meter(store, open_meter, accounts.networks(["10.0.0.0/8", "::1/128"]))
    assert client.get(f"/last/{open_meter}").status_code == 401  # not from 127.0.0.1
    assert client.get(f"/last/{open_meter}", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    accounts.close_meter(store, open_meter)
    assert all(client.get(url, buffered=False).status_code == 401 for url in urls)


def test_a_meter_opened_through_its_alias_serves_the_single_meter_and_alias_forms(world):
    client, store = world["app"].test_client(), world["store"]
    assert client.get("/last/7").status_code == 401
    accounts.open_meter(store, world["meter"], accounts.networks(accounts.EVERYONE))
    try:
        assert client.get("/last/7").get_json() == [NOW_MS - 4000, 1000]
        assert client.get("/last").get_json() == [NOW_MS - 4000, 1000]
        since_first_ms = int(time.time() * 1000) - (NOW_MS - 6000)  # NOW_MS is when the module was loaded
        assert len(client.get(f"/last/{since_first_ms}").get_json()) == 2  # the default meter's last points
    finally:
        accounts.close_meter(store, world["meter"])


def test_the_sse_stream_never_carries_another_households_alert(world, insert_alert):
    app, ours, theirs = world["app"], world["ours"], world["theirs"]
    before_theirs = insert_alert(make_alert(theirs))
    before_ours = insert_alert(make_alert(ours))
    mine = app.test_client()
    mine.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {world['users']['ours'][1]}"
    everyone = app.test_client()
    everyone.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {world['users']['admin'][1]}"
    streams = {}
    for key, client in (("mine", mine), ("admin", everyone)):
        stream, events = open_stream(client, "/alerts/stream")
        seen = []
        wait_for(events, lambda kind, value: (seen.append(value[1]["id"]) if kind == "alert" else None)
                 or (kind == "comment" and value == "ready"), 5)
        streams[key] = (stream, events, seen)
    assert before_ours["id"] in streams["mine"][2] and before_theirs["id"] not in streams["mine"][2]
    assert {before_ours["id"], before_theirs["id"]} <= set(streams["admin"][2])
    insert_alert(make_alert(theirs))
    last = insert_alert(make_alert(ours))
    for key in ("mine", "admin"):
        _stream, events, seen = streams[key]
        wait_for(events, lambda kind, value: (seen.append(value[1]["id"]) if kind == "alert" else None)
                 or (kind == "alert" and value[1]["id"] == last["id"]), 2)
    admin_live = [i for i in streams["admin"][2] if i.startswith(theirs)]
    assert len(admin_live) >= 2  # the admin's stream carried both of theirs
    assert not [i for i in streams["mine"][2] if i.startswith(theirs)]
    for stream, _events, _seen in streams.values():
        stream.close()
    # a resume with Last-Event-ID replays only the household's alerts too
    resumed, events = open_stream(mine, "/alerts/stream", {"Last-Event-ID": str(NOW_MS - 60_000)})
    replayed = []
    wait_for(events, lambda kind, value: (replayed.append(value[1]["house_id"]) if kind == "alert" else None)
             or (kind == "comment" and value == "ready"), 5)
    resumed.close()
    assert ours in replayed and theirs not in replayed


def sign_in(client, name: str, password: str, next_url: str = ""):
    form = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token,
                                       "next": next_url})


def test_password_sign_in_sets_a_protected_session_cookie_and_goes_on(world):
    client = world["app"].test_client()
    name, _token = world["users"]["ours"]
    response = sign_in(client, name, "pw-" + name, f"/houses/{world['ours']}/live")
    assert response.status_code == 302 and response.headers["Location"] == f"/houses/{world['ours']}/live"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("smw_session=") and "Secure" in cookie and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert client.get(f"/houses/{world['ours']}").status_code == 200
    assert client.get(f"/houses/{world['theirs']}").status_code == 403
    assert client.get("/").status_code == 403
    assert "pw-" not in response.get_data(as_text=True)


def test_a_wrong_password_and_an_offsite_next_are_refused(world):
    client = world["app"].test_client()
    name, _token = world["users"]["ours"]
    response = sign_in(client, name, "wrong password")
    assert response.status_code == 200 and "wrong user name or password" in response.get_data(as_text=True)
    assert client.get(f"/api/houses/{world['ours']}").status_code == 401
    response = sign_in(client, name, "pw-" + name, "//evil.example/steal")
    assert response.headers["Location"] == f"/houses/{world['ours']}"  # the user's home instead


def test_session_requests_that_change_state_need_the_csrf_token(world):
    client, ours = world["app"].test_client(), world["ours"]
    name, token = world["users"]["ours"]
    assert sign_in(client, name, "pw-" + name).status_code == 302
    put = client.put(f"/api/houses/{ours}/tariff", data=json.dumps(TARIFF), content_type="application/json")
    assert put.status_code == 400 and "CSRF" in put.get_json()["error"]
    page = client.get(f"/houses/{ours}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    put = client.put(f"/api/houses/{ours}/tariff", data=json.dumps(TARIFF), content_type="application/json",
                     headers={"X-CSRFToken": csrf})
    assert put.status_code == 200, put.get_json()
    assert client.post("/logout").status_code == 400  # a forged sign-out is refused too
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get(f"/houses/{ours}").status_code == 302  # signed out
    # a Bearer request carries no cookie: nothing to forge, no CSRF token needed
    put = world["app"].test_client().put(f"/api/houses/{ours}/tariff", data=json.dumps(TARIFF), headers=bearer(token))
    assert put.status_code == 200


def test_sign_in_failures_are_limited_per_user_and_per_address(world):
    client = world["app"].test_client()
    name, _token = world["users"]["ours"]
    for _ in range(5):
        assert sign_in(client, name, "guess").status_code == 200
    response = sign_in(client, name, "pw-" + name)  # the right password, too late
    assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 300
    other = world["users"]["theirs"][0]
    remote = {"REMOTE_ADDR": "10.9.9.9"}
    elsewhere = world["app"].test_client()
    elsewhere.environ_base.update(remote)
    assert sign_in(elsewhere, other, "pw-" + other).status_code == 302  # another user from elsewhere: fine
    for n in range(5):
        assert sign_in(elsewhere, f"nobody-{n}", "guess").status_code == 200
    assert sign_in(elsewhere, other, "pw-" + other).status_code == 429  # this address guessed too much


def test_a_revoked_token_stops_working_within_the_cache_ttl(settings, cassandra_session, rethinkdb_ready, house_id):
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "SECRET_KEY": "k" * 64, "AUTH_CACHE_TTL_S": 1.0})
    store = app.extensions["smw_cassandra"]
    name = f"cache-{uuid.uuid4().hex[:8]}"
    try:
        accounts.create_user(store, name, "household", frozenset([house_id]), None, None)
        token = accounts.new_token(store, name, "script")
        client = app.test_client()
        assert client.get(f"/api/houses/{house_id}", headers=bearer(token)).status_code == 200
        assert accounts.revoke_token(store, name, "script")
        assert client.get(f"/api/houses/{house_id}", headers=bearer(token)).status_code == 200  # cached
        time.sleep(1.1)
        assert client.get(f"/api/houses/{house_id}", headers=bearer(token)).status_code == 401
        rows = cassandra_session.execute("SELECT count(*) FROM api_tokens WHERE token_sha256 = %s",
                                         (accounts.token_digest(token),)).one()
        assert rows[0] == 0
    finally:
        accounts.delete_user(store, name)
        shutdown(app)


def test_only_the_tokens_digest_is_stored(world, cassandra_session):
    name, token = world["users"]["ours"]
    rows = list(cassandra_session.execute("SELECT token_sha256 FROM api_tokens_by_user WHERE username = %s", (name,)))
    assert [r.token_sha256 for r in rows] == [accounts.token_digest(token)]
    assert len(token) >= 43  # 32 random bytes
    hashed = cassandra_session.execute("SELECT password_hash FROM users WHERE username = %s", (name,)).one()[0]
    assert hashed.startswith("$argon2id$") and "pw-" not in hashed


def test_the_secret_key_is_made_once_and_private(tmp_path):
    first = auth.secret_key(str(tmp_path / "data"))
    path = tmp_path / "data" / auth.SECRET_KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert auth.secret_key(str(tmp_path / "data")) == first and len(first) >= 64
    assert [p.name for p in (tmp_path / "data").iterdir()] == [auth.SECRET_KEY_FILE]  # no temporary left


def test_loopback_addresses():
    assert all(auth.is_loopback(h) for h in ("127.0.0.1", "127.0.0.9", "::1", "[::1]", "localhost"))
    assert not any(auth.is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "example.org", "::"))


def test_a_server_beyond_loopback_without_secure_cookies_warns(settings, monkeypatch, caplog):
    from webapp import __main__ as main_module

    served = []
    monkeypatch.setenv("SMW_WEB_SESSION_COOKIE_SECURE", "false")
    monkeypatch.setattr(main_module, "serve_app", lambda args: served.append(args.host))
    main_module.main(["--host", "0.0.0.0", "--port", "1"])
    assert served == ["0.0.0.0"]
    assert any("SESSION_COOKIE_SECURE off" in r.getMessage() for r in caplog.records)
    caplog.clear()
    main_module.main(["--host", "127.0.0.1", "--port", "1"])
    assert not any("SESSION_COOKIE_SECURE" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- the commands

def test_users_commands_manage_users_tokens_and_meters(app, runner, tmp_path, house_id, cassandra_session):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    store = app.extensions["smw_cassandra"]
    secret = tmp_path / "pw"
    secret.write_text("a long enough password\n")
    try:
        result = runner.invoke(args=["users", "create", name, "--house", house_id, "--email", "x@example.org",
                                     "--password-file", str(secret)])
        assert result.exit_code == 0, result.output
        assert accounts.check_password(store, name, "a long enough password").houses == {house_id}
        result = runner.invoke(args=["users", "grant", name, "h-other-1", "h-other-2"])
        assert result.exit_code == 0 and "h-other-1" in result.output
        assert runner.invoke(args=["users", "revoke", name, "h-other-2"]).exit_code == 0
        assert accounts.get_user(store, name).houses == {house_id, "h-other-1"}
        result = runner.invoke(args=["users", "token", name, "--name", "script"])
        token = result.stdout.strip().splitlines()[-1]
        assert result.exit_code == 0 and accounts.token_user(store, accounts.token_digest(token)).username == name
        again = runner.invoke(args=["users", "token", name, "--name", "script"])
        assert again.exit_code == 1 and "labelled 'script'" in again.output
        listing = runner.invoke(args=["users", "list"]).output
        assert re.search(rf"{name}\thousehold\tx@example.org\thouses: {house_id}, h-other-1\ttokens: script", listing)
        assert runner.invoke(args=["users", "revoke-token", name, "script"]).exit_code == 0
        assert accounts.token_user(store, accounts.token_digest(token)) is None
        result = runner.invoke(args=["users", "open-meter", f"{house_id}-1", "--from", "192.168.1.7/24"])
        assert result.exit_code == 0 and "192.168.1.0/24" in result.output
        assert [str(n) for n in accounts.meter_networks(store, f"{house_id}-1")] == ["192.168.1.0/24"]
        assert runner.invoke(args=["users", "close-meter", f"{house_id}-1"]).exit_code == 0
        assert accounts.meter_networks(store, f"{house_id}-1") == ()
        assert runner.invoke(args=["users", "delete", name]).exit_code == 0
        assert accounts.get_user(store, name) is None
    finally:
        accounts.delete_user(store, name)
        accounts.close_meter(store, f"{house_id}-1")


def test_a_generated_password_is_printed_once_and_works(app, runner):
    name = f"gen-{uuid.uuid4().hex[:8]}"
    store = app.extensions["smw_cassandra"]
    try:
        result = runner.invoke(args=["users", "create", name, "--role", "admin", "--generate-password"])
        assert result.exit_code == 0, result.output
        password = re.search(r"password \(shown once\): (\S+)", result.output).group(1)
        assert accounts.check_password(store, name, password).is_admin
    finally:
        accounts.delete_user(store, name)


@pytest.mark.parametrize("args, message", [
    (["create", "bad name!"], "user name"),
    (["create", "someone", "--role", "admin", "--house", "h1"], "--house is for household users"),
    (["create", "someone", "--password-file", "/nonexistent/pw"], "cannot read the password file"),
    (["create", "someone", "--house", "bad house"], "house id"),
    (["grant", "nobody-at-all", "h1"], "no user 'nobody-at-all'"),
    (["token", "nobody-at-all"], "no user"),
    (["revoke-token", "nobody-at-all", "--all"], "no user"),
    (["delete", "nobody-at-all"], "no user"),
    (["open-meter", "m-1", "--from", "300.1.1.1/8"], "CIDR"),
    (["close-meter", "bad meter"], "meter id"),
])
def test_command_mistakes_are_one_clear_line(runner, args, message):
    result = runner.invoke(args=["users", *args])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message in lines[-1] and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["create", "grant", "revoke", "token", "revoke-token", "list", "delete",
                                     "open-meter", "close-meter"])
def test_every_command_has_help(runner, command):
    result = runner.invoke(args=["users", command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output and len(result.output.splitlines()) > 3


def test_pages_carry_the_csrf_token_their_scripts_send(world, insert_alert):
    from tests.webapp.conftest import make_alert
    client, ours = world["app"].test_client(), world["ours"]
    name, _token = world["users"]["ours"]
    assert sign_in(client, name, "pw-" + name).status_code == 302
    alert = insert_alert(make_alert(ours))
    page = client.get(f"/alerts?house_id={ours}").get_data(as_text=True)
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)  # what alerts.js sends
    assert client.post(f"/api/alerts/{alert['id']}/ack").status_code == 400
    acked = client.post(f"/api/alerts/{alert['id']}/ack", headers={"X-CSRFToken": csrf})
    assert acked.status_code == 200 and acked.get_json()["username"] == name
