"""The RethinkDB feed keeps alerts in its spool while the server is unreachable, and delivers them later."""
import json

import pytest

from smw import rethink
from smw.alert import document, latest_per_id
from streaming.sinks import RethinkFeed

pytestmark = [pytest.mark.integration]


def alert(alert_id, state, seq, house_id):
    return {"id": alert_id, "kind": "overshoot", "house_id": house_id, "meter": 3, "appliance": "oven",
            "threshold_w": 100.0, "multiplier": 1.5, "peak_w": 400.0, "mean_w": 300.0, "start_ts_s": 1.7e9,
            "end_ts_s": None if state == "open" else 1.7e9 + 60, "state": state, "severity": "critical", "seq": seq}


def test_latest_per_id_keeps_the_last_row_of_each_alert():
    rows = [alert("a", "closed", 2, "h"), alert("a", "open", 1, "h"), alert("b", "open", 0, "h")]
    assert {(a["id"], a["state"]) for a in latest_per_id(rows)} == {("a", "closed"), ("b", "open")}


def test_unreachable_rethinkdb_spools_then_delivers(rethinkdb_ready, tmp_path, house_prefix):
    down = rethinkdb_ready.replace(rethinkdb_port="1")  # nothing listens there
    feed = RethinkFeed(down, tmp_path / "spool.jsonl", timeout_s=1.0)
    opened = document(alert(f"{house_prefix}-1", "open", 0, house_prefix), 1.0)
    closed = document(alert(f"{house_prefix}-1", "closed", 1, house_prefix), 2.0)
    other = document(alert(f"{house_prefix}-2", "open", 2, house_prefix), 2.0)
    assert feed.write([opened]) is False
    assert feed.write([closed, other]) is False
    assert feed.pending() == 2  # newest document per id, nothing lost

    feed.settings = rethinkdb_ready  # the server is back
    assert feed.flush() is True and feed.pending() == 0
    feed.close()
    with rethink.connection(rethinkdb_ready) as conn:
        docs = {d["id"]: d for d in rethink.r.table("alerts").get_all(house_prefix, index="house_id").run(conn)}
    assert {i: d["state"] for i, d in docs.items()} == {f"{house_prefix}-1": "closed", f"{house_prefix}-2": "open"}


def test_a_spool_with_a_torn_last_line_is_recovered(rethinkdb_ready, tmp_path, house_prefix):
    spool = tmp_path / "spool.jsonl"
    kept = document(alert(f"{house_prefix}-1", "open", 0, house_prefix), 1.0)
    torn = '{"id": "' + house_prefix + '-2", "kind": "overs'  # the last line, cut short by a crash
    spool.write_text(json.dumps(kept) + "\n" + torn, encoding="utf-8")
    feed = RethinkFeed(rethinkdb_ready, spool, timeout_s=1.0)
    assert feed.pending() == 1 and feed.damaged_lines == 1
    assert (tmp_path / "spool.jsonl.damaged").read_text(encoding="utf-8") == torn + "\n"
    assert feed.write([]) is True and not spool.exists()
    feed.close()
    with rethink.connection(rethinkdb_ready) as conn:
        docs = list(rethink.r.table("alerts").get_all(house_prefix, index="house_id").run(conn))
    assert [d["id"] for d in docs] == [kept["id"]]
