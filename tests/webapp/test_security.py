"""The Host check and the security headers."""
import pytest

from webapp import create_app, shutdown
from webapp.security import trusted_hosts

pytestmark = pytest.mark.integration


def test_a_host_that_names_another_site_is_refused(client):
    # a DNS-rebinding page reaches the loopback server with its own name in Host
    response = client.get("/api/houses", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert client.get("/houses/h1", headers={"Host": "evil.example"}).status_code == 400  # a page, too
    assert client.get("/login", headers={"Host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/houses", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/api/houses", headers={"Host": "localhost:8000"}).status_code == 200


def test_pages_and_answers_carry_the_security_headers(client, house_id):
    for url in [f"/houses/{house_id}", "/api/houses", "/login", "/static/app.css"]:
        headers = client.get(url).headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], url
        assert "script-src 'self'" in headers["Content-Security-Policy"], url
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY", url


def test_a_signed_in_users_answers_are_kept_by_no_cache(client, anonymous, house_id):
    for url in [f"/houses/{house_id}", "/api/houses", "/api/me/notifications", f"/api/houses/{house_id}/daily"]:
        assert client.get(url).headers["Cache-Control"] == "no-store", url
    assert "no-store" not in client.get("/static/app.css").headers.get("Cache-Control", "")  # its own caching
    assert "Cache-Control" not in anonymous.get("/login").headers  # nobody's data


def test_trusted_hosts_from_the_settings(settings, monkeypatch):
    assert trusted_hosts(None, "127.0.0.2") == ["localhost", "127.0.0.1", "127.0.0.2"]
    assert trusted_hosts(None, "0.0.0.0") == ["localhost", "127.0.0.1"]
    assert trusted_hosts([], "127.0.0.1") is None  # any host: a proxy in front checks it
    with pytest.raises(ValueError, match="JSON list"):
        trusted_hosts("dash.example.org", "127.0.0.1")
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "TRUSTED_HOSTS": [".example.org"]})
    try:
        client = app.test_client()
        assert client.get("/login", headers={"Host": "dash.example.org"}).status_code == 200
        assert client.get("/login", headers={"Host": "localhost"}).status_code == 400
    finally:
        shutdown(app)
