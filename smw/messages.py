"""The Kafka message contract, version 1: one module for producers and consumers.

A message on the readings topic (`KAFKA_TOPIC`) is UTF-8 JSON, keyed by house id
so that a house stays ordered within one partition. It carries a batch of
readings of ONE house, column-wise per meter (compact, and fast to encode and to
explode in Spark):

    {"v": 1, "type": "readings", "house_id": "h00042",
     "series": [{"meter": 5, "label": "refrigerator", "appliance": "refrigerator",
                 "ts_s": [1303132929.0, 1303132932.0], "power_w": [102.9, 101.7]}]}

Rules (`validate`): `v` is 1; `type` is "readings"; `house_id` is a non-empty
string of at most 64 characters; `series` is a non-empty list; per series `meter`
is an integer 0..65535, `label` and `appliance` are strings, `ts_s` and `power_w`
are equally long non-empty lists of finite numbers (not strings), `ts_s` between
2000-01-01 and 2100-01-01 (epoch seconds, UTC) and no later than the moment it is
checked plus `max_future_skew_s` (`SMW_MAX_FUTURE_SKEW_S`, default 300 s): a reading
dated in the future is a broken clock, and one such reading would otherwise move event
time, and with it the judgement of every house, ahead. Other message types (for example
an EMU-2's summation and price) travel on their own topic and are documented with
their producers.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable

SCHEMA_VERSION = 1
TYPE_READINGS = "readings"
MAX_HOUSE_ID_LENGTH = 64
MIN_TS_S = 946684800.0  # 2000-01-01T00:00:00Z
MAX_TS_S = 4102444800.0  # 2100-01-01T00:00:00Z
MAX_FUTURE_SKEW_S = 300.0  # how far ahead of the checking clock a reading may be dated


class InvalidMessage(ValueError):
    """A message that does not follow the contract; the text says which rule broke."""


@dataclass(frozen=True)
class Series:
    """Readings of one meter: parallel lists of timestamps and powers."""

    meter: int
    label: str
    appliance: str
    ts_s: list[float]
    power_w: list[float]


def encode(house_id: str, series: Iterable[Series]) -> tuple[bytes, bytes]:
    """(key, value) bytes of one readings message."""
    body = {
        "v": SCHEMA_VERSION,
        "type": TYPE_READINGS,
        "house_id": house_id,
        "series": [
            {"meter": s.meter, "label": s.label, "appliance": s.appliance, "ts_s": s.ts_s, "power_w": s.power_w}
            for s in series
        ],
    }
    return house_id.encode(), json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _number_list(value: Any, name: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise InvalidMessage(f"{name} must be a non-empty list of numbers")
    for item in value:
        # bool is an int subclass; strings are numbers as text: both refused.
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise InvalidMessage(f"{name} holds {item!r}, not a finite number")
    return value


def validate(body: Any, *, now_s: float | None = None, max_future_skew_s: float = MAX_FUTURE_SKEW_S) -> dict:
    """Return the message if it follows the contract, else raise InvalidMessage.

    Timestamps may be at most `max_future_skew_s` ahead of `now_s` (default: the clock now).
    """
    latest_ts_s = (time.time() if now_s is None else now_s) + max_future_skew_s
    if not isinstance(body, dict):
        raise InvalidMessage("message must be a JSON object")
    if body.get("v") != SCHEMA_VERSION:
        raise InvalidMessage(f"unsupported schema version {body.get('v')!r} (expected {SCHEMA_VERSION})")
    if body.get("type") != TYPE_READINGS:
        raise InvalidMessage(f"type must be {TYPE_READINGS!r}, got {body.get('type')!r}")
    house_id = body.get("house_id")
    if not isinstance(house_id, str) or not house_id or len(house_id) > MAX_HOUSE_ID_LENGTH:
        raise InvalidMessage(f"house_id must be a string of 1..{MAX_HOUSE_ID_LENGTH} characters")
    series = body.get("series")
    if not isinstance(series, list) or not series:
        raise InvalidMessage("series must be a non-empty list")
    for item in series:
        if not isinstance(item, dict):
            raise InvalidMessage("each series must be an object")
        meter = item.get("meter")
        if isinstance(meter, bool) or not isinstance(meter, int) or not 0 <= meter <= 65535:
            raise InvalidMessage(f"meter must be an integer 0..65535, got {meter!r}")
        for name in ("label", "appliance"):
            if not isinstance(item.get(name), str):
                raise InvalidMessage(f"{name} must be a string")
        ts_s = _number_list(item.get("ts_s"), "ts_s")
        power_w = _number_list(item.get("power_w"), "power_w")
        if len(ts_s) != len(power_w):
            raise InvalidMessage(f"ts_s has {len(ts_s)} values but power_w has {len(power_w)}")
        if min(ts_s) < MIN_TS_S or max(ts_s) >= MAX_TS_S:
            raise InvalidMessage("ts_s outside 2000-01-01..2100-01-01 (epoch seconds, UTC)")
        if max(ts_s) > latest_ts_s:
            raise InvalidMessage(f"ts_s more than {max_future_skew_s:g} s in the future (a clock ahead)")
    return body


def decode(value: bytes, *, now_s: float | None = None, max_future_skew_s: float = MAX_FUTURE_SKEW_S) -> dict:
    """Parse and validate one message value."""
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"not JSON: {exc}") from exc
    return validate(body, now_s=now_s, max_future_skew_s=max_future_skew_s)


def spark_schema():
    """The message as a pyspark StructType, for from_json in the landing and alert jobs."""
    from pyspark.sql import types as T

    series = T.StructType([
        T.StructField("meter", T.LongType()),
        T.StructField("label", T.StringType()),
        T.StructField("appliance", T.StringType()),
        T.StructField("ts_s", T.ArrayType(T.DoubleType())),
        T.StructField("power_w", T.ArrayType(T.DoubleType())),
    ])
    return T.StructType([
        T.StructField("v", T.LongType()),
        T.StructField("type", T.StringType()),
        T.StructField("house_id", T.StringType()),
        T.StructField("series", T.ArrayType(series)),
    ])
