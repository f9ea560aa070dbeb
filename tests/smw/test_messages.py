import json

import pytest

from smw import messages
from smw.messages import InvalidMessage, Series


def good_body(**changes):
    body = {"v": 1, "type": "readings", "house_id": "h1",
            "series": [{"meter": 3, "label": "oven", "appliance": "oven", "ts_s": [1303132929.0, 1303132932],
                        "power_w": [10.5, -3.0]}]}
    body.update(changes)
    return body


def test_encode_then_decode_round_trips():
    key, value = messages.encode("h1", [Series(3, "oven", "oven", [1303132929.0, 1303132932.0], [10.5, -3.0])])
    assert key == b"h1"
    body = messages.decode(value)
    assert body["series"][0]["power_w"] == [10.5, -3.0]
    assert body["series"][0]["ts_s"][1] == 1303132932.0


def test_valid_message_passes():
    assert messages.validate(good_body())["house_id"] == "h1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v": 2}, "schema version"),
        ({"type": "price"}, "type must be"),
        ({"house_id": ""}, "house_id"),
        ({"house_id": "x" * 65}, "house_id"),
        ({"series": []}, "series"),
        ({"series": [{"meter": True, "label": "a", "appliance": "a", "ts_s": [1e9], "power_w": [1]}]}, "meter"),
        ({"series": [{"meter": -1, "label": "a", "appliance": "a", "ts_s": [1e9], "power_w": [1]}]}, "meter"),
        ({"series": [{"meter": 1, "label": None, "appliance": "a", "ts_s": [1e9], "power_w": [1]}]}, "label"),
        ({"series": [{"meter": 1, "label": "a", "appliance": "a", "ts_s": [1e9], "power_w": ["1"]}]}, "finite number"),
        ({"series": [{"meter": 1, "label": "a", "appliance": "a", "ts_s": [1e9, 2e9], "power_w": [1]}]}, "has 2"),
        ({"series": [{"meter": 1, "label": "a", "appliance": "a", "ts_s": [5.0], "power_w": [1]}]}, "outside"),
        ({"series": [{"meter": 1, "label": "a", "appliance": "a", "ts_s": [], "power_w": []}]}, "non-empty"),
        ({"series": [{"meter": 1, "label": "a", "appliance": "a", "ts_s": [3.928e9], "power_w": [1]}]}, "future"),
    ],
)
def test_contract_violations_name_the_rule(changes, message):
    with pytest.raises(InvalidMessage, match=message):
        messages.validate(good_body(**changes))


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[1, 2]", b'{"v": 1', json.dumps(good_body()).encode()[:-1]])
def test_garbage_is_an_invalid_message(raw):
    with pytest.raises(InvalidMessage):
        messages.decode(raw)


def test_nan_is_refused_on_both_sides():
    with pytest.raises(ValueError):
        messages.encode("h1", [Series(1, "a", "a", [1e9], [float("nan")])])
    with pytest.raises(InvalidMessage, match="finite"):
        messages.decode(b'{"v":1,"type":"readings","house_id":"h","series":[{"meter":1,"label":"a",'
                        b'"appliance":"a","ts_s":[1e9],"power_w":[NaN]}]}')


def test_readings_may_be_a_little_ahead_of_the_clock_but_not_more():
    now_s = 1_800_000_000.0
    ahead = good_body(series=[{"meter": 1, "label": "a", "appliance": "a", "ts_s": [now_s + 250.0], "power_w": [1]}])
    assert messages.validate(ahead, now_s=now_s)
    with pytest.raises(InvalidMessage, match="300 s in the future"):
        messages.validate(ahead, now_s=now_s - 100.0)
    assert messages.validate(ahead, now_s=now_s - 100.0, max_future_skew_s=400.0)
