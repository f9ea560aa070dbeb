"""A changefeed round trip on the RethinkDB-protocol port with the official driver."""
import queue
import threading
import uuid

import pytest

from smw import rethink

pytestmark = pytest.mark.integration
r = rethink.r


def test_changefeed_delivers_insert_and_update(rethinkdb_ready, rethinkdb_conn):
    alerts = r.db(rethinkdb_ready.rethinkdb_db).table("alerts")
    changes: queue.Queue = queue.Queue()
    feed_open = threading.Event()
    alert_id = f"alert-{uuid.uuid4().hex}"

    def listen():
        with rethink.connection(rethinkdb_ready) as conn:
            cursor = alerts.changes().run(conn)
            feed_open.set()
            for change in cursor:
                if (change.get("new_val") or {}).get("id") == alert_id:
                    changes.put(change)
                    if changes.qsize() == 2:
                        cursor.close()
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert feed_open.wait(10)
    alerts.insert({"id": alert_id, "house_id": "h1", "state": "open", "start_ts_s": 1.0}).run(rethinkdb_conn)
    alerts.insert({"id": alert_id, "state": "closed"}, conflict="update").run(rethinkdb_conn)

    opened = changes.get(timeout=10)
    closed = changes.get(timeout=10)
    assert opened["old_val"] is None and opened["new_val"]["state"] == "open"
    assert closed["old_val"]["state"] == "open" and closed["new_val"]["state"] == "closed"
    assert closed["new_val"]["house_id"] == "h1"  # conflict="update" merges


def test_secondary_indexes_exist_and_answer(rethinkdb_ready, rethinkdb_conn):
    alerts = r.db(rethinkdb_ready.rethinkdb_db).table("alerts")
    house = f"house-{uuid.uuid4().hex[:8]}"
    alerts.insert([{"id": f"{house}-{i}", "house_id": house, "start_ts_s": float(i)} for i in range(3)]).run(
        rethinkdb_conn
    )
    latest = list(alerts.between([house, r.minval], [house, r.maxval], index="house_start")
                  .order_by(index=r.desc("house_start")).limit(2).run(rethinkdb_conn))
    assert [doc["start_ts_s"] for doc in latest] == [2.0, 1.0]
