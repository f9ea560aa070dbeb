"""Error responses: JSON for the APIs, a plain page for browsers, never a stack trace."""
from __future__ import annotations

import logging

from cassandra import DriverException, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from flask import Flask, jsonify, make_response, render_template, request
from rethinkdb.errors import ReqlDriverError, ReqlError
from werkzeug.exceptions import HTTPException

from smw import cql

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/alerts/stream", "/blip", "/last", "/since", "/aggregate", "/hourly", "/minutely",
                 "/range", "/usage")


class BadParameter(ValueError):
    """A request parameter that is missing, malformed or out of range (HTTP 400)."""


def wants_json() -> bool:
    return request.blueprint in ("api", "pulse") or request.path.startswith(JSON_PREFIXES)


def _respond(status: int, message: str):
    if wants_json():
        return jsonify(error=message, status=status), status
    return render_template("error.html", status=status, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(BadParameter)
    def bad_parameter(exc):
        return _respond(400, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc):
        response = make_response(_respond(exc.code or 500, exc.description or exc.name))
        for name, value in exc.get_headers():  # WWW-Authenticate, Retry-After, Allow
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(NoHostAvailable)
    @app.errorhandler(cql.Unavailable)
    @app.errorhandler(RequestExecutionException)
    @app.errorhandler(DriverException)
    @app.errorhandler(ReqlDriverError)
    @app.errorhandler(ReqlError)
    def store_unavailable(exc):
        log.error("store error on %s: %s", request.path, exc)
        return _respond(503, "a data store is not answering; try again shortly")

    @app.errorhandler(Exception)
    def unexpected(exc):
        log.exception("unhandled error on %s", request.path)
        return _respond(500, "internal error")
