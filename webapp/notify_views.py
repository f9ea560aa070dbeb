"""A user's notification settings and delivery history; acknowledging alerts and muting them.

Every route needs a signed-in user (`flask.g.user`); a user acts only on the houses they may see."""
from __future__ import annotations

import datetime as dt
import time

from flask import Blueprint, abort, current_app, g, jsonify, render_template, request

from webapp import auth, params, queries
from webapp import notifications as rules
from webapp.alert_store import table
from webapp.db import cassandra, get_rethinkdb
from webapp.errors import BadParameter

bp = Blueprint("notify", __name__)

MAX_BODY_BYTES = 16384
MAX_ACK_IDS = 200


def current_user():
    """The signed-in user, or a 401."""
    user = g.get("user")
    if user is None:
        abort(401, "sign in first")
    return user


def json_body() -> object:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadParameter(f"the body must be at most {MAX_BODY_BYTES} bytes")
    body = request.get_json(silent=True)
    if body is None:
        raise BadParameter("the body must be JSON (Content-Type: application/json)")
    return body


def visible_house(user, house_id: str) -> str:
    """A house the user may see; another is answered as unknown (404), not as forbidden."""
    params.name("house_id", house_id)
    if not rules.may_see(user, house_id):
        abort(404, f"no house {house_id}")
    return house_id


def visible_houses(user) -> list[str]:
    if user.is_admin:
        return [h["house_id"] for h in queries.houses(cassandra(), current_app.config["HOUSE_LIMIT"])]
    return sorted(user.houses)


@bp.get("/settings/notifications")
def settings_page():
    """The signed-in user's notification settings and delivery history."""
    user = current_user()
    return render_template("notifications.html", user=user, kinds=rules.KINDS, severities=list(rules.SEVERITY_RANK))


@bp.get("/api/me/notifications")
def get_settings():
    """The signed-in user's notification settings (the webhook secret is never shown)."""
    user = current_user()
    return jsonify(username=user.username, **rules.load_settings(cassandra(), user.username).public())


@bp.put("/api/me/notifications")
def put_settings():
    """Change the signed-in user's notification settings; fields left out keep their values."""
    user = current_user()
    store = cassandra()
    try:
        settings = rules.parse_settings(json_body(), rules.load_settings(store, user.username), user.is_admin)
    except rules.Invalid as exc:
        raise BadParameter(str(exc)) from None
    rules.save_settings(store, user.username, settings, dt.datetime.now(dt.timezone.utc))
    return jsonify(username=user.username, **settings.public())


@bp.get("/api/me/deliveries")
def deliveries():
    """The signed-in user's latest deliveries, newest first (?limit=, 50, at most 500)."""
    user = current_user()
    limit = params.integer("limit", request.args.get("limit"), 50, 1, 500)
    return jsonify(deliveries=rules.deliveries(cassandra(), user.username, limit))


@bp.post("/api/alerts/<alert_id>/ack")
def ack(alert_id):
    """Acknowledge an alert (the first acknowledgement is kept and answered)."""
    user = current_user()
    params.name("alert_id", alert_id)
    doc = table(current_app.config["SMW_SETTINGS"]).get(alert_id).run(get_rethinkdb())
    if not isinstance(doc, dict) or not isinstance(doc.get("house_id"), str) or not rules.may_see(user, doc["house_id"]):
        abort(404, f"no alert {alert_id}")
    return jsonify(rules.ack(cassandra(), alert_id, doc["house_id"], user.username, time.time()))


@bp.get("/api/acks")
def acks():
    """Acknowledgements of the alerts named by ?alert_id= (repeated, at most 200) in houses the user may see."""
    user = current_user()
    ids = request.args.getlist("alert_id")
    if not 0 < len(ids) <= MAX_ACK_IDS:
        raise BadParameter(f"give 1-{MAX_ACK_IDS} alert_id parameters")
    for alert_id in ids:
        params.name("alert_id", alert_id)
    found = rules.acks(cassandra(), list(dict.fromkeys(ids)))
    return jsonify(acks=[a for a in found if rules.may_see(user, a["house_id"])])


@bp.post("/api/mutes")
def create_mute():
    """Mute a house, or one appliance of it, for duration_s (or until until_ts_s)."""
    user = current_user()
    now_s = time.time()
    try:
        mute = rules.parse_mute(json_body(), now_s)
    except rules.Invalid as exc:
        raise BadParameter(str(exc)) from None
    visible_house(user, mute["house_id"])
    rules.save_mute(cassandra(), mute, user.username, now_s)
    return jsonify({**mute, "created_by": user.username, "created_ts_s": round(now_s, 3)}), 201


@bp.get("/api/mutes")
def list_mutes():
    """The mutes in force or to come in the houses the user may see (?house_id= for one)."""
    user = current_user()
    house_id = request.args.get("house_id")
    houses = [visible_house(user, house_id)] if house_id else visible_houses(user)
    now_s = time.time()
    found = [m for m in rules.mutes_of_houses(cassandra(), houses) if m["until_ts_s"] > now_s]
    return jsonify(mutes=sorted(found, key=lambda m: (m["house_id"], m["from_ts_s"])))


@bp.delete("/api/mutes/<mute_id>")
def delete_mute(mute_id):
    """End a mute now."""
    user = current_user()
    params.name("mute_id", mute_id)
    store = cassandra()
    house_id = rules.mute_house(store, mute_id)
    if house_id is None or not rules.may_see(user, house_id):
        abort(404, f"no mute {mute_id}")
    rules.delete_mute(store, house_id, mute_id)
    return "", 204


auth.register({
    "notify.settings_page": auth.signed_in,
    "notify.get_settings": auth.signed_in,
    "notify.put_settings": auth.signed_in,
    "notify.deliveries": auth.signed_in,
    # the views keep to the houses the user sees (the alert's, the body's, the mute's)
    "notify.ack": auth.signed_in,
    "notify.acks": auth.signed_in,
    "notify.create_mute": auth.signed_in,
    "notify.list_mutes": auth.house_query,
    "notify.delete_mute": auth.signed_in,
})
