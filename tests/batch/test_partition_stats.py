"""The Python side of the per-meter pass, on Arrow batches as Spark hands them over."""
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from batch import nightly

DAY = dt.date(2024, 4, 2)
MIDNIGHT_NY = dt.datetime(2024, 4, 2, 4, 0, tzinfo=dt.timezone.utc).timestamp()
ARGS = dict(house_tz={"h1": "America/New_York", "h2": "America/New_York"}, params=nightly.Params(),
            energy_days=(DAY, DAY), threshold_days=(DAY - dt.timedelta(days=29), DAY))


def readings(house, meter, label, appliance, ts_s, power_w):
    n = len(ts_s)
    return {"house_id": [house] * n, "meter": [meter] * n, "label": [label] * n, "appliance": [appliance] * n,
            "ts_s": list(map(float, ts_s)), "power_w": list(map(float, power_w))}


def batches(*parts, size=7):
    """The parts' rows interleaved and shuffled, cut into small batches."""
    columns = {k: sum((p[k] for p in parts), []) for k in parts[0]}
    order = np.random.default_rng(3).permutation(len(columns["ts_s"]))
    table = pa.table({k: pa.array([v[i] for i in order], pa.int32() if k == "meter" else None)
                      for k, v in columns.items()})
    return table.to_batches(max_chunksize=size)


def test_meters_are_split_out_of_mixed_batches_and_ordered_by_time():
    rng = np.random.default_rng(0)
    ts = MIDNIGHT_NY + np.arange(0, 3600, 10)
    fridge_w, mains_w = rng.uniform(50, 150, len(ts)), rng.uniform(200, 900, len(ts))
    out = list(nightly.partition_stats(batches(
        readings("h1", 5, "fridge", "refrigerator", ts, fridge_w),
        readings("h1", 1, "mains", "mains", ts, mains_w),
        readings("h2", 5, "oven", "oven", ts[:50], np.full(50, 2000.0)),
    ), **ARGS))
    assert len(out) == 1
    rows = out[0].to_pandas()
    hours = rows[rows["day"].notna()]
    energy = hours.groupby(["house_id", "meter"])["energy_j"].sum().to_dict()
    # Sorted back into time order, each meter's energy is its own left Riemann sum.
    assert energy[("h1", 5)] == pytest.approx(float(np.sum(fridge_w[:-1] * 10)))
    assert energy[("h1", 1)] == pytest.approx(float(np.sum(mains_w[:-1] * 10)))
    assert energy[("h2", 5)] == pytest.approx(2000.0 * 49 * 10)
    names = {(r.house_id, r.meter): (r.label, r.appliance) for r in rows[rows["day"].isna()].itertuples()}
    assert names == {("h1", 5): ("fridge", "refrigerator"), ("h1", 1): ("mains", "mains"), ("h2", 5): ("oven", "oven")}


def test_mains_cap_and_names_follow_any_reading():
    """A meter relabelled mid-day is one meter: the greatest names, and mains (30 s cap)
    because some of its readings say mains."""
    ts = MIDNIGHT_NY + np.arange(0, 40 * 20, 40)
    out = list(nightly.partition_stats(batches(
        readings("h1", 2, "leg", None, ts[:10], np.full(10, 100.0)),
        readings("h1", 2, "mains 2", "mains", ts[10:], np.full(10, 100.0)),
    ), **ARGS))[0].to_pandas()
    meter_row = out[out["day"].isna()].iloc[0]
    assert (meter_row["label"], meter_row["appliance"]) == ("mains 2", "mains")
    assert out[out["day"].notna()]["energy_j"].sum() == pytest.approx(100.0 * 30 * 19)


def test_an_empty_partition_yields_nothing():
    assert list(nightly.partition_stats(iter([]), **ARGS)) == []
