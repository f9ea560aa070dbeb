"""HTML pages; each draws its data from the JSON API with the vendored uPlot charts."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, abort, current_app, render_template, request

from webapp import params, queries
from webapp.db import cassandra

bp = Blueprint("pages", __name__)


@bp.get("/")
def overview():
    """Overview: houses, yesterday's kWh, open alerts, top consumers."""
    return render_template("overview.html")


@bp.get("/houses/<house_id>")
def house(house_id):
    """A house: daily kWh per appliance, shares, thresholds, cost and alert history."""
    found = queries.house(cassandra(), params.name("house_id", house_id))
    if found is None:
        abort(404, f"no house {house_id}")
    store = cassandra()
    return render_template(
        "house.html", house=found,
        thresholds=queries.thresholds(store, house_id),
        alerts=queries.alert_history(store, house_id, 20),
        from_day=request.args.get("from", ""), to_day=request.args.get("to", ""),
    )


@bp.get("/houses/<house_id>/live")
def live(house_id):
    """A house's live power (last 20 minutes) and its zoomable history."""
    found = queries.house(cassandra(), params.name("house_id", house_id))
    if found is None:
        abort(404, f"no house {house_id}")
    return render_template("live.html", house=found, thresholds=queries.thresholds(cassandra(), house_id))


@bp.get("/appliances/<appliance>")
def appliance(appliance):
    """One appliance across houses on a day."""
    params.name("appliance", appliance)
    return render_template("appliance.html", appliance=appliance, day=request.args.get("day", ""))


@bp.get("/zips")
def zips():
    """Daily totals per zip code."""
    return render_template("zips.html", day=request.args.get("day", ""))


@bp.app_template_filter("ts")
def format_ts(epoch_s, tz: str | None = None):
    """Epoch seconds as a timestamp with its zone: in `tz` (a house's data in the house's
    zone) when given and known, else UTC."""
    if epoch_s is None:
        return ""
    zone = dt.timezone.utc
    if tz:
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            zone = dt.timezone.utc
    return dt.datetime.fromtimestamp(epoch_s, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


@bp.app_context_processor
def inject_tariff():
    settings = current_app.config["SMW_SETTINGS"]
    # Which data the pages show: the demo's namespace is not the pipeline's own.
    return {"currency": current_app.config["TARIFF"].get("currency", "USD"),
            "data_source": f"keyspace {settings.cassandra_keyspace} · alerts {settings.rethinkdb_db}"}
