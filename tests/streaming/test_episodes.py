"""Episode detection on tiny inline data: raise/clear, minimum run, short runs, cooldown, no data, new peak."""
import math

import numpy as np
import pandas as pd
import pytest

from streaming.episodes import KIND_NEW_PEAK, KIND_NO_DATA, KIND_OVERSHOOT, MeterStates, Rules, alert_id, detect

T0 = 1_711_962_000.0
RULES = Rules(multiplier=1.5, clear_multiplier=1.0, min_readings=3, min_duration_s=100.0, clear_readings=2,
              cooldown_s=60.0, stale_close_s=300.0, no_data_after_s=600.0, no_data_min_readings=3,
              new_peak_margin=1.1, new_peak_warmup_s=30.0, new_peak_cooldown_s=3600.0)


def readings(powers, house="h1", meter=5, appliance="refrigerator", threshold_w=100.0, t0=T0, step_s=3.0,
             normal_peak_w=math.nan, min_run_s=math.nan):
    return pd.DataFrame({
        "house_id": house, "meter": meter, "appliance": appliance,
        "ts_s": [t0 + step_s * i for i in range(len(powers))], "power_w": [float(p) for p in powers],
        "threshold_w": threshold_w, "normal_peak_w": normal_peak_w, "min_run_s": min_run_s,
    })


def run(batches, rules=RULES, states=None, watermarks=None):
    states = states or MeterStates()
    alerts = []
    for n, batch in enumerate(batches):
        outcome = detect(states, batch, (watermarks or [0.0] * len(batches))[n], rules)
        alerts += outcome.alerts
    return states, alerts


def test_three_readings_above_raise_level_open_one_episode_that_closes_below_clear_level():
    _, alerts = run([readings([50, 160, 170, 200, 180, 120, 90, 80, 60])])
    assert [(a["kind"], a["state"]) for a in alerts] == [(KIND_OVERSHOOT, "open"), (KIND_OVERSHOOT, "closed")]
    opened, closed = alerts
    assert opened["id"] == closed["id"] == alert_id(KIND_OVERSHOOT, "h1", 5, T0 + 3)
    assert opened["start_ts_s"] == T0 + 3 and opened["end_ts_s"] is None
    assert closed["end_ts_s"] == T0 + 18  # first reading of the clearing run
    assert closed["peak_w"] == 200.0
    assert closed["mean_w"] == pytest.approx((160 + 170 + 200 + 180 + 120) / 5)
    assert closed["threshold_w"] == 100.0 and closed["multiplier"] == 1.5 and closed["severity"] == "warning"


def test_a_short_run_above_the_raise_level_is_not_an_episode():
    _, alerts = run([readings([50, 160, 170, 90, 160, 170, 60, 50])])
    assert alerts == []


def test_min_duration_opens_an_episode_before_min_readings():
    rules = Rules(**{**RULES.__dict__, "min_readings": 10, "min_duration_s": 6.0})
    _, alerts = run([readings([50, 160, 170, 165, 50, 50])], rules)
    assert [a["state"] for a in alerts] == ["open", "closed"]


def test_hysteresis_keeps_the_episode_open_between_clear_and_raise_levels():
    _, alerts = run([readings([160, 170, 180, 110, 120, 105, 130, 90, 95])])
    assert [a["state"] for a in alerts] == ["open", "closed"]
    assert alerts[-1]["end_ts_s"] == T0 + 21


def test_one_reading_below_clear_does_not_close():
    _, alerts = run([readings([160, 170, 180, 90, 170, 80, 70])])
    assert [a["state"] for a in alerts] == ["open", "closed"]
    assert alerts[-1]["end_ts_s"] == T0 + 15


def test_a_new_run_within_the_cooldown_reopens_the_same_episode():
    first = readings([160, 170, 180, 50, 50])
    again = readings([160, 170, 300, 50, 50], t0=T0 + 30)  # 30 s after the close: within 60 s
    later = readings([160, 170, 180, 50, 50], t0=T0 + 500)
    _, alerts = run([first, again, later])
    ids = [a["id"] for a in alerts]
    assert ids[:4] == [ids[0]] * 4
    assert alerts[3]["peak_w"] == 300.0 and alerts[3]["state"] == "closed"
    assert ids[4] != ids[0] and [a["state"] for a in alerts[4:]] == ["open", "closed"]


def test_episode_spanning_batches_and_critical_severity():
    _, alerts = run([readings([400, 410]), readings([420, 50, 50], t0=T0 + 6)])
    assert [a["state"] for a in alerts] == ["open", "closed"]
    assert alerts[-1]["severity"] == "critical" and alerts[-1]["peak_w"] == 420.0


def test_meters_without_threshold_raise_no_overshoot():
    _, alerts = run([readings([1e4] * 10, threshold_w=math.nan)])
    assert alerts == []


def test_replayed_and_out_of_order_readings_are_ignored_and_counted():
    states, _ = run([readings([50, 60, 70])])
    outcome = detect(states, readings([500, 500, 500]), 0.0, RULES)  # same timestamps again
    assert outcome.alerts == [] and outcome.out_of_order == 3


def test_meters_are_independent():
    batch = pd.concat([readings([160, 170, 180, 50, 50], meter=3), readings([50] * 5, meter=4),
                       readings([160, 170, 180, 50, 50], house="h2", meter=3)])
    _, alerts = run([batch.sample(frac=1.0, random_state=1)])  # row order must not matter
    assert sorted((a["house_id"], a["meter"], a["state"]) for a in alerts) == [
        ("h1", 3, "closed"), ("h1", 3, "open"), ("h2", 3, "closed"), ("h2", 3, "open")]


def test_silence_past_the_watermark_opens_no_data_and_the_next_reading_closes_it():
    states, _ = run([readings([50, 60, 70, 80])])
    last_ts_s = T0 + 9
    quiet = detect(states, readings([]), last_ts_s + 500, RULES)
    assert quiet.alerts == [] and quiet.next_deadline_s == last_ts_s + 600
    outage = detect(states, readings([]), last_ts_s + 601, RULES)
    assert [(a["kind"], a["state"], a["start_ts_s"]) for a in outage.alerts] == [(KIND_NO_DATA, "open", last_ts_s)]
    assert detect(states, readings([]), last_ts_s + 900, RULES).alerts == []  # one alert per outage
    back = detect(states, readings([55], t0=T0 + 2000), last_ts_s + 900, RULES)
    assert [(a["kind"], a["state"], a["end_ts_s"]) for a in back.alerts] == [(KIND_NO_DATA, "closed", T0 + 2000)]
    assert back.alerts[0]["id"] == outage.alerts[0]["id"]


def test_a_meter_that_never_reported_enough_raises_no_no_data():
    states, _ = run([readings([50, 60])])
    assert detect(states, readings([]), T0 + 10_000, RULES).alerts == []


def test_an_open_episode_of_a_silent_meter_closes_at_its_last_reading():
    states, alerts = run([readings([160, 170, 180, 190])])
    assert [a["state"] for a in alerts] == ["open"]
    closing = detect(states, readings([]), T0 + 9 + 301, RULES)
    assert [(a["kind"], a["state"], a["end_ts_s"]) for a in closing.alerts] == [(KIND_OVERSHOOT, "closed", T0 + 9)]


def test_new_peak_on_mains_after_warmup_once_per_cooldown():
    history = readings([1000 + i for i in range(20)], meter=1, appliance="mains", threshold_w=math.nan)
    peaks = readings([1500, 1600, 1700], meter=1, appliance="mains", threshold_w=math.nan, t0=T0 + 100)
    _, alerts = run([history, peaks])
    assert [(a["kind"], a["peak_w"], a["threshold_w"]) for a in alerts] == [(KIND_NEW_PEAK, 1500.0, 1019.0)]
    early = readings([1000, 5000], meter=1, appliance="mains", threshold_w=math.nan)  # within warm-up
    assert run([early])[1] == []


def test_state_survives_serialisation():
    states, _ = run([readings([50, 160, 170])])
    restored = MeterStates.from_bytes(states.to_bytes())
    outcome = detect(restored, readings([180, 50, 50], t0=T0 + 9), 0.0, RULES)
    assert [a["state"] for a in outcome.alerts] == ["open", "closed"]
    assert outcome.alerts[0]["start_ts_s"] == T0 + 3


def test_mains_raise_overshoot_only_when_asked():
    mains = readings([160, 170, 180, 50, 50], meter=1, appliance="mains")
    assert run([mains])[1] == []
    rules = Rules(**{**RULES.__dict__, "overshoot_on_mains": True})
    assert [a["state"] for a in run([mains], rules)[1]] == ["open", "closed"]


def test_raise_level_is_twice_the_threshold_or_above_the_normal_peak_whichever_is_higher():
    from streaming.episodes import raise_levels

    rules = Rules(multiplier=2.0, peak_margin=1.25)
    threshold_w = np.array([100.0, 100.0, 100.0, math.nan])
    normal_peak_w = np.array([math.nan, 120.0, 400.0, 400.0])
    appliance = np.array(["refrigerator"] * 4, dtype=object)
    assert np.array_equal(raise_levels(threshold_w, normal_peak_w, appliance, rules), [200.0, 200.0, 500.0, math.nan],
                          equal_nan=True)
    assert np.array_equal(raise_levels(threshold_w, normal_peak_w, appliance, Rules(multiplier=2.0, peak_margin=0.0)),
                          [200.0, 200.0, 200.0, math.nan], equal_nan=True)


def test_a_level_within_the_normal_peak_opens_nothing_and_one_above_it_does():
    """A fridge at 100 W whose defrost reaches 400 W on several days: 450 W is within 1.25 x its
    normal peak, 520 W is not; the episode still closes below the threshold, not the peak."""
    rules = Rules(multiplier=1.5, peak_margin=1.25, min_readings=3, clear_readings=2)
    _, alerts = run([readings([100, 450, 450, 450, 450, 100, 100], normal_peak_w=400.0)], rules)
    assert alerts == []
    _, alerts = run([readings([100, 520, 520, 520, 300, 150, 90, 80], normal_peak_w=400.0)], rules)
    assert [(a["state"], a["start_ts_s"], a["end_ts_s"]) for a in alerts] == [("open", T0 + 3, None),
                                                                             ("closed", T0 + 3, T0 + 18)]


# A fridge at 100 W whose defrost holds 400 W for at least 60 s (min_run_s) on several days:
# its normal peak raises nothing below 500 W, but a run at that level must last like a defrost.
DEFROST = dict(normal_peak_w=400.0, min_run_s=60.0)
SHORT = Rules(multiplier=2.0, peak_margin=1.25, min_readings=3, clear_readings=2, cooldown_s=60.0,
              short_run_ratio=0.5, run_gap_s=30.0)


def test_a_run_at_the_defrost_level_that_ends_too_soon_opens_an_episode_when_it_ends():
    # 5 readings at 400 W (12 s from first to last) against a usual 60 s: shorter than 0.5 x 60 s.
    _, alerts = run([readings([100, 400, 410, 400, 420, 400, 100, 90, 80], **DEFROST)], SHORT)
    assert [(a["state"], a["start_ts_s"], a["end_ts_s"]) for a in alerts] == [("open", T0 + 3, None),
                                                                             ("closed", T0 + 3, T0 + 21)]
    assert alerts[-1]["peak_w"] == 420.0 and alerts[-1]["mean_w"] == pytest.approx((400 * 3 + 410 + 420 + 100) / 6)
    assert alerts[0]["id"] == alert_id(KIND_OVERSHOOT, "h1", 5, T0 + 3)


def test_a_run_as_long_as_a_defrost_opens_nothing_nor_does_a_run_that_is_cut():
    defrost = [100] + [400] * 12 + [100] * 3  # 33 s: longer than 0.5 x 60 s
    assert run([readings(defrost, **DEFROST)], SHORT)[1] == []
    # The same short run without a reading before it, or with a gap before, after or inside it.
    short = [100, 400, 400, 400, 400, 100, 100]
    assert run([readings(short[1:], **DEFROST)], SHORT)[1] == []
    for cut in (1, 5, 3):
        late = readings(short, **DEFROST)
        late.loc[cut:, "ts_s"] += 31.0
        assert run([late], SHORT)[1] == [], cut
    # Too few readings above the level to be a run, no usual run length, or the rule off.
    assert run([readings([100, 400, 400, 100, 100], **DEFROST)], SHORT)[1] == []
    assert run([readings(short, normal_peak_w=400.0)], SHORT)[1] == []
    assert run([readings(short, **DEFROST)], Rules(**{**SHORT.__dict__, "short_run_ratio": 0.0}))[1] == []


def test_a_short_run_already_in_an_episode_raises_no_second_alert_and_runs_span_batches():
    # Above the raise level (500 W): the episode opens at the third reading and the run's end adds nothing.
    _, alerts = run([readings([100, 600, 600, 600, 90, 80], **DEFROST)], SHORT)
    assert [a["state"] for a in alerts] == ["open", "closed"]
    # A short run cut across two batches is timed as one.
    powers = [100, 400, 400, 400, 400, 400, 90, 80]
    first, second = readings(powers, **DEFROST).iloc[:3], readings(powers, **DEFROST).iloc[3:]
    states, alerts = run([first, second], SHORT)
    assert [(a["state"], a["start_ts_s"]) for a in alerts] == [("open", T0 + 3), ("closed", T0 + 3)]
    # The same run as one batch gives the same alerts.
    assert run([readings(powers, **DEFROST)], SHORT)[1] == alerts


def test_a_run_the_meter_goes_silent_in_is_dropped():
    states, alerts = run([readings([100, 400, 400, 400], **DEFROST)], SHORT)
    assert not math.isnan(states.floats["run_start_ts_s"][0])
    # The watermark passes the meter's last reading by more than stale_close_s: the run has no end.
    states, alerts = run([readings([100], t0=T0 + 10_000, house="h2")], SHORT, states, [T0 + 9_000])
    assert math.isnan(states.floats["run_start_ts_s"][0]) and alerts == []
    _, alerts = run([readings([100, 100], t0=T0 + 10_003, **DEFROST)], SHORT, states)
    assert alerts == []
