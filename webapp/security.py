"""What protects the pages inside a browser: the Host check and the security headers.

The Host check (Flask's TRUSTED_HOSTS) answers 400 to a request whose Host header names
another site, which is what a DNS-rebinding page would send to reach a loopback-bound
server. By default the trusted names are localhost, 127.0.0.1 and the address in
SMW_WEB_HOST; set SMW_WEB_TRUSTED_HOSTS='["dash.example.org"]' to serve other names
(a leading dot trusts every subdomain), or '[]' to trust every Host (only behind a proxy
that checks it).

Every answer carries a Content-Security-Policy that allows this site's own scripts,
styles, images and connections only, and no framing (frame-ancestors 'none'; X-Frame-Options
for older browsers), X-Content-Type-Options: nosniff and Referrer-Policy: same-origin. An answer
to a signed-in user (a session or an API token) that sets no caching of its own is
Cache-Control: no-store: a household's pages and data are kept by no browser or proxy cache,
and a page reloaded after a change always reads it again.
"""
from __future__ import annotations

import os

from flask import Flask, Response, g, request
from werkzeug.exceptions import SecurityError

LOOPBACK_HOSTS = ["localhost", "127.0.0.1"]
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
                           "frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def trusted_hosts(configured, bind_host: str | None) -> list[str] | None:
    """The Host names the app answers: the configured list ([] = any, then None for Flask), else
    the loopback names and the address the server listens on."""
    if configured is not None:
        if not isinstance(configured, list) or not all(isinstance(h, str) and h for h in configured):
            raise ValueError('TRUSTED_HOSTS must be a JSON list of host names, e.g. ["dash.example.org"]')
        return configured or None
    hosts = list(LOOPBACK_HOSTS)
    if bind_host and bind_host not in WILDCARD_HOSTS and bind_host not in hosts:
        hosts.append(bind_host)
    return hosts


def init_app(app: Flask) -> None:
    app.config["TRUSTED_HOSTS"] = trusted_hosts(app.config.get("TRUSTED_HOSTS"),
                                                os.environ.get("SMW_WEB_HOST", "127.0.0.1"))

    def refuse_untrusted_host():
        # Before every other hook: with an untrusted Host Flask has no URL adapter, so neither the
        # sign-in redirect nor the error page (both build URLs) could be made.
        if isinstance(request.routing_exception, SecurityError):
            return Response("400 Bad Request: this server does not answer for that host name\n", 400,
                            mimetype="text/plain")
        return None

    app.before_request_funcs.setdefault(None, []).insert(0, refuse_untrusted_host)

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if g.get("user") is not None and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response
