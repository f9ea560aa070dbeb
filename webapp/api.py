"""The JSON API behind every page (see /api/openapi.json)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import time

import orjson
from flask import Blueprint, Response, abort, current_app, g, jsonify, request, send_from_directory

from webapp import params, queries, tariff
from webapp.alert_store import alerts_for_house, alerts_for_houses, open_alerts, recent_alerts
from webapp.auth import visible_houses
from webapp.db import cassandra, get_rethinkdb
from webapp.errors import BadParameter

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

CSV_FIELDS = ["house_id", "day", "meter", "label", "appliance", "energy_kwh", "coverage"]
MAX_METERS = 8
MAX_TARIFF_BODY_BYTES = 16384


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def known_house(house_id: str) -> dict:
    found = queries.house(cassandra(), params.name("house_id", house_id))
    if found is None:
        abort(404, f"no house {house_id}")
    return found


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document of the JSON API."""
    return send_from_directory(current_app.static_folder, "openapi.json", mimetype="application/json")


@bp.get("/houses")
def houses():
    """Every house the user sees (at most HOUSE_LIMIT)."""
    limit = current_app.config["HOUSE_LIMIT"]
    own = visible_houses(g.user)
    if own is None:
        return jsonify(houses=queries.houses(cassandra(), limit))
    found = [queries.house(cassandra(), house_id) for house_id in sorted(own)[:limit]]
    return jsonify(houses=[h for h in found if h is not None])


@bp.get("/overview")
def overview():
    """Houses with yesterday's kWh, open alerts and the top consumers."""
    alerts = open_alerts(get_rethinkdb(), limit=100)
    return jsonify(queries.overview(cassandra(), alerts, current_app.config["HOUSE_LIMIT"], now_utc()))


@bp.get("/houses/<house_id>")
def house(house_id):
    """One house's metadata."""
    return jsonify(known_house(house_id))


@bp.get("/houses/<house_id>/daily")
def house_daily(house_id):
    """A house's daily kWh per appliance, mains and untracked over ?from=&to= (cached DAILY_CACHE_TTL_S)."""
    params.name("house_id", house_id)
    start, end = params.day_range(request.args, current_app.config["MAX_RANGE_DAYS"])
    cache = current_app.extensions["smw_daily_cache"]
    key = (house_id, start, end)
    body = cache.get(key)
    if body is None:
        known = current_app.extensions["smw_known_houses"]
        found = queries.house_daily(cassandra(), house_id, start, end, house_known=house_id in known)
        if found is None:
            abort(404, f"no house {house_id}")
        known.add(house_id)
        body = orjson.dumps(found)
        cache.put(key, body)
    return Response(body, mimetype="application/json")


@bp.get("/houses/<house_id>/daily.csv")
def house_daily_csv(house_id):
    """CSV export of a house's daily kWh per meter and untracked energy over ?from=&to=."""
    known_house(house_id)
    start, end = params.day_range(request.args, current_app.config["MAX_RANGE_DAYS"])
    store = cassandra()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(queries.daily_rows(store, house_id, start, end), key=lambda r: (queries.day_of(r.day), r.meter)):
        writer.writerow({"house_id": house_id, "day": queries.day_of(row.day).isoformat(), "meter": row.meter,
                         "label": csv_text(row.label), "appliance": csv_text(row.appliance),
                         "energy_kwh": row.energy_kwh, "coverage": row.coverage})
    for row in sorted(queries.totals_rows(store, house_id, start, end), key=lambda r: queries.day_of(r.day)):
        writer.writerow({"house_id": house_id, "day": queries.day_of(row.day).isoformat(), "meter": "",
                         "label": "", "appliance": "untracked", "energy_kwh": row.untracked_kwh,
                         "coverage": row.coverage})
    filename = f"{house_id}_{start.isoformat()}_{end.isoformat()}_daily_kwh.csv"
    return Response(buffer.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def csv_text(value: str | None) -> str:
    """Text for a spreadsheet cell: a leading = + - @ would be read as a formula."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value or ""


@bp.get("/houses/<house_id>/thresholds")
def house_thresholds(house_id):
    """A house's power thresholds per meter."""
    known_house(house_id)
    return jsonify(house_id=house_id, thresholds=queries.thresholds(cassandra(), house_id))


@bp.get("/houses/<house_id>/cost")
def house_cost(house_id):
    """Cost per appliance over ?from=&to=, each hour at the house's tariff in force then."""
    found = known_house(house_id)
    start, end = params.day_range(request.args, current_app.config["MAX_COST_DAYS"])
    try:
        return jsonify(queries.cost(cassandra(), house_id, found["tz"], start, end, configured_tariff(house_id)))
    except tariff.Unpriceable as exc:
        raise BadParameter(str(exc)) from None


def configured_tariff(house_id: str) -> tariff.Version:
    """The house's configured tariff: its own in HOUSE_TARIFFS, else the global TARIFF."""
    own, default = current_app.extensions["smw_tariffs"]
    return own.get(house_id, default)


def parse_configured_tariffs(state) -> None:
    """Validate TARIFF and HOUSE_TARIFFS once, when the app is made: a bad one stops the start-up."""
    config = state.app.config
    default = tariff.Version.configured(tariff.Tariff.from_config(config["TARIFF"]), "config-default")
    houses_spec = config.get("HOUSE_TARIFFS") or {}
    if not isinstance(houses_spec, dict):
        raise tariff.TariffError('HOUSE_TARIFFS must be a JSON object {"<house id>": {tariff}, ...}')
    own = {house_id: tariff.Version.configured(tariff.Tariff.from_config(spec, f"HOUSE_TARIFFS[{house_id}]"))
           for house_id, spec in houses_spec.items()}
    state.app.extensions["smw_tariffs"] = (own, default)


bp.record_once(parse_configured_tariffs)


@bp.get("/houses/<house_id>/tariff")
def house_tariff(house_id):
    """The tariff in force at ?at_ts_s= (default now), the configured one and the latest ?limit= history entries."""
    known_house(house_id)
    at_s = params.seconds("at_ts_s", request.args.get("at_ts_s"), time.time())
    if not tariff.MIN_EFFECTIVE_S <= at_s <= tariff.MAX_EFFECTIVE_S:
        raise BadParameter("at_ts_s must be between 2000-01-01 and 2100-01-01 (epoch seconds)")
    limit = params.integer("limit", request.args.get("limit"), 50, 1, 500)
    store = cassandra()
    configured = configured_tariff(house_id)
    versions = queries.tariff_versions(store, house_id, at_s, at_s + 1)
    return jsonify(house_id=house_id, at_ts_s=at_s,
                   in_force=tariff.in_force(versions, configured, at_s).as_dict(),
                   configured=configured.as_dict(),
                   history=[v.as_dict() for v in queries.tariff_history(store, house_id, limit)])


@bp.put("/houses/<house_id>/tariff")
def put_house_tariff(house_id):
    """Add a tariff to a house's history, in force from effective_from_ts_s (default now) until a later one."""
    known_house(house_id)
    body = b"" if (request.content_length or 0) > MAX_TARIFF_BODY_BYTES else \
        request.stream.read(MAX_TARIFF_BODY_BYTES + 1)  # never more than the limit into memory
    if not body or len(body) > MAX_TARIFF_BODY_BYTES:
        raise BadParameter(f"the body must be a JSON object of 1 to {MAX_TARIFF_BODY_BYTES} bytes")
    try:
        spec = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadParameter("the body must be JSON: {\"currency\": \"USD\", \"default_rate_per_kwh\": 0.15, "
                           "\"periods\": [...], \"effective_from_ts_s\": ...}") from None
    try:
        new_tariff = tariff.Tariff.from_spec(spec, extra=("effective_from_ts_s",))
        effective_s = tariff.epoch_seconds(spec.get("effective_from_ts_s", round(time.time(), 3)),
                                           "effective_from_ts_s")
    except tariff.TariffError as exc:
        raise BadParameter(str(exc)) from None
    version = tariff.Version(effective_s, None, new_tariff, "api", announced_s=round(time.time(), 3))
    queries.put_tariff(cassandra(), house_id, version)
    log.info("house %s: tariff in %s from %s set through the API", house_id, new_tariff.currency, effective_s)
    return jsonify(house_id=house_id, stored=version.as_dict())


@bp.get("/houses/<house_id>/power")
def house_power(house_id):
    """Power of ?meter=1,2 over [from_ts_s, to_ts_s): raw, per minute or per hour by the span."""
    known_house(house_id)
    meters = meter_list(request.args.get("meter", "1,2"))
    to_ts_s = params.seconds("to_ts_s", request.args.get("to_ts_s"), time.time())
    from_ts_s = params.seconds("from_ts_s", request.args.get("from_ts_s"), to_ts_s - 20 * 60)
    if from_ts_s >= to_ts_s:
        raise BadParameter("from_ts_s must be before to_ts_s")
    if to_ts_s - from_ts_s > queries.POWER_MAX_SPAN_S:
        raise BadParameter(f"a span is at most {queries.POWER_MAX_SPAN_S // 86400} days")
    return jsonify(queries.power(cassandra(), house_id, meters, from_ts_s, to_ts_s))


def meter_list(text: str) -> list[int]:
    parts = text.split(",")
    if not 1 <= len(parts) <= MAX_METERS:
        raise BadParameter(f"meter takes 1 to {MAX_METERS} comma-separated channel numbers")
    return sorted({params.digits("meter", part, 1, 9999) for part in parts})


@bp.get("/houses/<house_id>/alerts")
def house_alerts(house_id):
    """A house's alert history, newest first (Cassandra), ?limit= up to 500."""
    params.name("house_id", house_id)
    limit = params.integer("limit", request.args.get("limit"), 50, 1, 500)
    return jsonify(house_id=house_id, alerts=queries.alert_history(cassandra(), house_id, limit))


@bp.get("/appliances/<appliance>")
def appliance_day(appliance):
    """One appliance's daily kWh across houses on ?day= (default: the newest complete day with data)."""
    params.name("appliance", appliance)
    day = params.day("day", request.args.get("day")) if request.args.get("day") else \
        queries.default_appliance_day(cassandra(), appliance, now_utc())
    return jsonify(queries.appliance_day(cassandra(), appliance, day, current_app.config["HOUSE_LIMIT"]))


@bp.get("/zips")
def zip_day():
    """Daily kWh per zip code on ?day= (default: the newest complete day with data)."""
    day = params.day("day", request.args.get("day")) if request.args.get("day") else \
        queries.default_zip_day(cassandra(), now_utc())
    return jsonify(queries.zip_day(cassandra(), day, 100000))


@bp.get("/alerts")
def alerts():
    """Live alerts from RethinkDB, newest first: ?house_id=, ?state=open|closed, ?limit= up to 500;
    without ?house_id=, of every house the user sees."""
    limit = params.integer("limit", request.args.get("limit"), 50, 1, 500)
    state = request.args.get("state")
    if state not in (None, "open", "closed"):
        raise BadParameter("state must be open or closed")
    house_id = request.args.get("house_id")
    conn = get_rethinkdb()
    own = visible_houses(g.user)
    if house_id is not None:
        found = alerts_for_house(conn, params.name("house_id", house_id), limit)
        if state:
            found = [a for a in found if a.get("state") == state]
    elif own is not None:
        found = alerts_for_houses(conn, sorted(own)[:current_app.config["HOUSE_LIMIT"]], limit)
        if state:
            found = [a for a in found if a.get("state") == state]
    elif state == "open":
        found = open_alerts(conn, limit)
    else:
        found = recent_alerts(conn, limit)
        if state:
            found = [a for a in found if a.get("state") == state]
    return jsonify(alerts=found)
