"""Write and read Cassandra through cassandra-driver with prepared statements."""
import datetime as dt
import uuid

import pytest

pytestmark = pytest.mark.integration


def test_prepared_upsert_then_select(cassandra_session):
    house_id = f"house-{uuid.uuid4().hex[:8]}"
    day = dt.date(2011, 4, 18)
    insert = cassandra_session.prepare(
        "INSERT INTO daily_energy_by_house (house_id, day, meter, label, appliance, energy_kwh, coverage, samples) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    cassandra_session.execute(insert, (house_id, day, 5, "refrigerator", "refrigerator", 1.25, 0.99, 28000))
    # Same key again: an upsert, not a second row.
    cassandra_session.execute(insert, (house_id, day, 5, "refrigerator", "refrigerator", 1.5, 1.0, 28800))
    select = cassandra_session.prepare(
        "SELECT meter, energy_kwh, coverage, samples FROM daily_energy_by_house WHERE house_id = ? AND day = ?"
    )
    rows = list(cassandra_session.execute(select, (house_id, day)))
    assert [(row.meter, row.energy_kwh, row.coverage, row.samples) for row in rows] == [(5, 1.5, 1.0, 28800)]
    assert isinstance(rows[0].energy_kwh, float)  # numbers stored as numbers


def test_schema_is_idempotent(cassandra_session, settings):
    from smw import cql

    first = cql.apply_schema(cassandra_session, settings)
    assert first == cql.apply_schema(cassandra_session, settings) > 0
