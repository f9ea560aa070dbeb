"""Store EMU-2 prices from the events topic in the houses' tariff history, for the cost views.

    python -m ingest.price_store [--group smw-price-store] [--once]

`python -m ingest.serial --type emu2` publishes each PriceCluster as a `price` event
(`{"type": "price", "house_id", "ts_s", "meter", "price_per_kwh", "currency", "tier",
"start_ts_s", "duration_min", "rate_label"?}`, currency an ISO 4217 numeric code). This
consumer adds each price to the house's history in Cassandra `house_tariffs` as a flat
tariff: in force from `start_ts_s` (the meter's clock when StartTime is 0, "now"), and,
when the price has a Duration, until start + duration, after which the house's previous
tariff applies again (the latest history entry still in force, else its configured
tariff). A Duration of 0 or 0xffff has no end: the price holds until a later one.
Currencies are stored as their letter code (840 -> USD); a code missing from
CURRENCIES is kept as its three digits.

Offsets are committed after the rows are written (at least once; a row is keyed by
(house, bounded, start), so a redelivery writes the same row). A price that repeats,
with StartTime "now", the open-ended price last stored for its house and meter in
this run changes nothing and is not written again (counted as unchanged). Other event
types are skipped; a bad price event, or one Cassandra rejects, is counted, logged and
appended to a JSON-lines quarantine file (`ingest.events`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ingest.events import EventStore, Write, event_body, run_cli
from smw import config

log = logging.getLogger("ingest.price_store")

# ISO 4217 numeric -> letter codes, for the currencies of the utilities an EMU-2 is likely to meet.
CURRENCIES = {
    36: "AUD", 124: "CAD", 156: "CNY", 203: "CZK", 208: "DKK", 344: "HKD", 348: "HUF", 356: "INR",
    376: "ILS", 392: "JPY", 410: "KRW", 484: "MXN", 554: "NZD", 578: "NOK", 643: "RUB", 702: "SGD",
    710: "ZAR", 752: "SEK", 756: "CHF", 826: "GBP", 840: "USD", 946: "RON", 949: "TRY", 978: "EUR",
    985: "PLN", 986: "BRL",
}
INSERT_PRICE = ("INSERT INTO house_tariffs (house_id, bounded, effective_from, until, source, currency, "
                "default_rate_per_kwh, periods, tier, rate_label, meter, announced_at) "
                "VALUES (?, ?, ?, ?, 'emu2', ?, ?, null, ?, ?, ?, ?)")
MIN_TS_S, MAX_TS_S = 946684800.0, 4102444800.0  # 2000-01-01 .. 2100-01-01 UTC
UNTIL_CHANGED_MIN = 0xFFFF  # the price cluster's "until changed"
MAX_PRICE_PER_KWH = 1e6
MAX_LABEL_CHARS = 64


@dataclass(frozen=True)
class Price:
    house_id: str
    meter: int
    announced_s: float
    effective_from_s: float
    until_s: float | None
    price_per_kwh: float
    currency: str
    tier: int | None
    rate_label: str | None
    starts_now: bool  # StartTime 0: in force from the meter's clock


def currency_code(numeric: int) -> str:
    """ISO 4217 letter code of a numeric one; unknown codes as their three digits."""
    return CURRENCIES.get(numeric, f"{numeric:03d}")


def _epoch(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and MIN_TS_S <= value <= MAX_TS_S


def _whole(value, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def price(value: bytes, now_s: float, max_future_skew_s: float) -> Price | None | str:
    """The Price of a price event; None for other event types; a reason string for a bad price event."""
    body = event_body(value, "price")
    if not isinstance(body, dict):
        return body
    house_id = body["house_id"]
    if not _whole(body.get("meter"), 0, 65535):
        return "meter must be an integer 0..65535"
    ts_s, start_ts_s = body.get("ts_s"), body.get("start_ts_s")
    if not _epoch(ts_s):
        return "ts_s must be epoch seconds of 2000-2100"
    if start_ts_s is not None and not _epoch(start_ts_s):
        return "start_ts_s must be null or epoch seconds of 2000-2100"
    if start_ts_s is None and ts_s > now_s + max_future_skew_s:
        # StartTime "now" by a meter clock far ahead (a flipped bit reads as 2094) would date the price there.
        return "ts_s ahead of the clock"
    rate = body.get("price_per_kwh")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) \
            or not 0 <= rate <= MAX_PRICE_PER_KWH:
        return f"price_per_kwh must be a number 0..{MAX_PRICE_PER_KWH:g}"
    if not _whole(body.get("currency"), 0, 999):
        return "currency must be an ISO 4217 numeric code 0..999"
    tier = body.get("tier")
    if tier is not None and not _whole(tier, 0, 255):
        return "tier must be null or an integer 0..255"
    duration_min = body.get("duration_min")
    if duration_min is not None and not _whole(duration_min, 0, UNTIL_CHANGED_MIN):
        return f"duration_min must be null or an integer 0..{UNTIL_CHANGED_MIN}"
    label = body.get("rate_label")
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL_CHARS):
        return f"rate_label must be null or text of at most {MAX_LABEL_CHARS} characters"
    effective_from_s = float(start_ts_s if start_ts_s is not None else ts_s)
    bounded = duration_min not in (None, 0, UNTIL_CHANGED_MIN)
    return Price(house_id, body["meter"], float(ts_s), effective_from_s,
                 effective_from_s + 60 * duration_min if bounded else None, float(rate),
                 currency_code(body["currency"]), tier, label.strip() or None if label else None,
                 start_ts_s is None)


def instant(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc)


class PriceStore(EventStore):
    """Price events -> house_tariffs rows."""

    kind = "price"

    def __init__(self, *args, clock=time.time, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.max_future_skew_s = float(self.settings.max_future_skew_s)
        # (house, meter) -> what its last stored open-ended price said
        self.last_open: dict[tuple[str, int], tuple] = {}

    def prepare(self, session) -> None:
        self.insert = session.prepare(INSERT_PRICE)

    def parse(self, value: bytes) -> Price | None | str:
        return price(value, self.clock(), self.max_future_skew_s)

    @staticmethod
    def terms(p: Price) -> tuple:
        return p.price_per_kwh, p.currency, p.tier, p.rate_label

    def writes(self, items: list[Price]) -> list[Write]:
        rows = []
        last = dict(self.last_open)
        for i, p in enumerate(items):
            key = (p.house_id, p.meter)
            if p.until_s is not None:
                last.pop(key, None)  # a "now" price after a bounded one ends it: never a repeat
            elif p.starts_now and last.get(key) == self.terms(p):
                continue
            else:
                last[key] = self.terms(p)
            rows.append(Write(self.insert, (
                p.house_id, p.until_s is not None, instant(p.effective_from_s),
                None if p.until_s is None else instant(p.until_s), p.currency, p.price_per_kwh, p.tier,
                p.rate_label, p.meter, instant(p.announced_s)), (i,)))
        return rows

    def written(self, items: list[Price]) -> None:
        for p in items:
            if p.until_s is None:
                self.last_open[(p.house_id, p.meter)] = self.terms(p)
            else:
                self.last_open.pop((p.house_id, p.meter), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.price_store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", default="smw-price-store", help="Kafka consumer group (default smw-price-store)")
    parser.add_argument("--once", action="store_true", help="stop when the topic has nothing more (tests, backfills)")
    parser.add_argument("--quarantine", type=Path, help="bad events file (default DATA_DIR/quarantine/price-store.jsonl)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_events_topic", "cassandra_hosts", "cassandra_port",
                         "cassandra_keyspace", "max_future_skew_s", "data_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = config.from_args(args)
    store = PriceStore(settings, args.group,
                       args.quarantine or Path(settings.data_dir) / "quarantine" / "price-store.jsonl")
    log.info("storing price events from %s into %s.house_tariffs", settings.kafka_events_topic,
             settings.cassandra_keyspace)
    counts = run_cli(store, args.once)
    if counts is None:
        return 1
    print(f"prices written {counts.stored:,}; repeated prices {counts.unchanged:,}; other events skipped "
          f"{counts.skipped:,}; quarantined {counts.quarantined:,}"
          + (f" ({counts.reasons})" if counts.reasons else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
