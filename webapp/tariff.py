"""Electricity tariffs: time-of-use rates, a house's tariff history and the version in force when.

A house's tariff is a history of versions (Cassandra `house_tariffs`, see
infra/cql/004_tariffs.cql) over its configured tariff. At an instant, the version in force
is the covering one with the latest `effective_from` (a bounded one before an open-ended one
of the same instant); a bounded version stops covering at its `until`, and the latest
version still in force applies again, or the configured tariff when there is none.
"""
from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass

CURRENCY = re.compile(r"[A-Z]{3}|[0-9]{3}")  # letters, or the digits of a code a meter sent that has none here
PERIOD_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,32}")
TARIFF_FIELDS = ("currency", "default_rate_per_kwh", "periods")
PERIOD_FIELDS = ("name", "start_hour", "end_hour", "rate_per_kwh")
MAX_RATE_PER_KWH = 1e6  # per kWh in the currency's unit: IDR and KRW rates run into the thousands
MAX_PERIODS = 24
MIN_EFFECTIVE_S = 946684800.0  # 2000-01-01 UTC
MAX_EFFECTIVE_S = 4102444800.0  # 2100-01-01 UTC
MAX_BOUNDED_S = 0xFFFE * 60  # the longest EMU-2 price Duration (0xffff means "until changed")


class TariffError(ValueError):
    """A tariff that breaks the rules; the message names the field and says why."""


class Unpriceable(ValueError):
    """A range the cost view refuses to price (hours in more than one currency, too many changes)."""


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def number(value, where: str, low: float = -MAX_RATE_PER_KWH, high: float = MAX_RATE_PER_KWH) -> float:
    """A finite JSON number within [low, high] (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise TariffError(f"{where} must be a number from {low:g} to {high:g}")
    return float(value)


def whole(value, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TariffError(f"{where} must be a whole number from {low} to {high}")
    return value


def epoch_seconds(value, where: str) -> float:
    """Epoch seconds of an effective instant, 2000-01-01 to 2100-01-01, to the millisecond."""
    return round(number(value, where, MIN_EFFECTIVE_S, MAX_EFFECTIVE_S), 3)


@dataclass(frozen=True)
class Period:
    name: str
    start_hour: int
    end_hour: int
    rate_per_kwh: float

    def covers(self, local_hour: int) -> bool:
        if self.start_hour <= self.end_hour:
            return self.start_hour <= local_hour < self.end_hour
        return local_hour >= self.start_hour or local_hour < self.end_hour  # wraps midnight

    def as_dict(self) -> dict:
        return {"name": self.name, "start_hour": self.start_hour, "end_hour": self.end_hour,
                "rate_per_kwh": self.rate_per_kwh}


def period(spec, where: str) -> Period:
    if not isinstance(spec, dict):
        raise TariffError(f"{where} must be an object with {', '.join(PERIOD_FIELDS)}")
    unknown = sorted(set(spec) - set(PERIOD_FIELDS))
    if unknown:
        raise TariffError(f"{where} has unknown field(s) {', '.join(unknown)}; expected {', '.join(PERIOD_FIELDS)}")
    missing = [name for name in PERIOD_FIELDS if name not in spec]
    if missing:
        raise TariffError(f"{where} lacks {', '.join(missing)}")
    name = spec["name"]
    if not isinstance(name, str) or not PERIOD_NAME.fullmatch(name):
        raise TariffError(f"{_at(where, 'name')} must be text of 1 to 32 characters")
    start_hour = whole(spec["start_hour"], _at(where, "start_hour"), 0, 23)
    end_hour = whole(spec["end_hour"], _at(where, "end_hour"), 0, 24)
    if start_hour == end_hour:
        raise TariffError(f"{where} covers no hour: start_hour and end_hour are both {start_hour}")
    return Period(name, start_hour, end_hour, number(spec["rate_per_kwh"], _at(where, "rate_per_kwh")))


@dataclass(frozen=True)
class Tariff:
    currency: str
    default_rate_per_kwh: float
    periods: tuple[Period, ...] = ()

    @classmethod
    def from_spec(cls, spec, where: str = "", extra: tuple[str, ...] = ()) -> "Tariff":
        """A tariff from its JSON form, validated strictly: `{"currency": "USD", "default_rate_per_kwh": 0.15,
        "periods": [{"name", "start_hour", "end_hour", "rate_per_kwh"}]}` (periods optional: a flat tariff;
        hours local to the house, [start_hour, end_hour), wrapping midnight when end < start; no hour in two
        periods). Raises TariffError naming the field; `extra` fields are the caller's to read."""
        if not isinstance(spec, dict):
            raise TariffError(f"{where or 'the tariff'} must be a JSON object with {', '.join(TARIFF_FIELDS)}")
        unknown = sorted(set(spec) - set(TARIFF_FIELDS) - set(extra))
        if unknown:
            raise TariffError(f"{where or 'the tariff'} has unknown field(s) {', '.join(unknown)}; "
                              f"expected {', '.join(TARIFF_FIELDS + extra)}")
        currency = spec.get("currency")
        if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
            raise TariffError(f"{_at(where, 'currency')} must be an ISO 4217 code: three letters such as USD (or three digits)")
        if "default_rate_per_kwh" not in spec:
            raise TariffError(f"{_at(where, 'default_rate_per_kwh')} is required")
        rate = number(spec["default_rate_per_kwh"], _at(where, "default_rate_per_kwh"))
        listed = spec.get("periods")
        if listed is None:
            listed = []
        if not isinstance(listed, list) or len(listed) > MAX_PERIODS:
            raise TariffError(f"{_at(where, 'periods')} must be a list of at most {MAX_PERIODS} periods")
        periods = tuple(period(p, f"{_at(where, 'periods')}[{i}]") for i, p in enumerate(listed))
        owner: dict[int, int] = {}
        for i, p in enumerate(periods):
            if any(q.name == p.name for q in periods[:i]):
                raise TariffError(f"{_at(where, 'periods')}[{i}] repeats the name {p.name!r}")
            for local_hour in range(24):
                if p.covers(local_hour):
                    if local_hour in owner:
                        raise TariffError(f"{_at(where, 'periods')}[{i}] ({p.name}) overlaps "
                                          f"periods[{owner[local_hour]}] ({periods[owner[local_hour]].name}) "
                                          f"at hour {local_hour}")
                    owner[local_hour] = i
        return cls(currency, rate, periods)

    @classmethod
    def from_config(cls, spec, where: str = "TARIFF") -> "Tariff":
        """A configured tariff (currency USD when left out); a bad one raises TariffError at start-up."""
        if isinstance(spec, dict) and "currency" not in spec:
            spec = {**spec, "currency": "USD"}
        return cls.from_spec(spec, where)

    def rate(self, local_hour: int) -> tuple[str, float]:
        """(period name, price per kWh) for an hour of the local day."""
        for p in self.periods:
            if p.covers(local_hour):
                return p.name, p.rate_per_kwh
        return "standard", self.default_rate_per_kwh

    def as_dict(self) -> dict:
        return {
            "currency": self.currency,
            "default_rate_per_kwh": self.default_rate_per_kwh,
            "periods": [p.as_dict() for p in self.periods],
        }


@dataclass(frozen=True)
class Version:
    """One entry of a house's tariff history, or (effective_from_s = -inf) its configured tariff."""

    effective_from_s: float
    until_s: float | None
    tariff: Tariff
    source: str  # "api", "emu2", "config" (the house's own) or "config-default" (the global one)
    tier: int | None = None
    rate_label: str | None = None
    meter: int | None = None
    announced_s: float | None = None

    @classmethod
    def configured(cls, tariff: Tariff, source: str = "config") -> "Version":
        return cls(-math.inf, None, tariff, source)

    def covers(self, at_s: float) -> bool:
        return self.effective_from_s <= at_s and (self.until_s is None or at_s < self.until_s)

    def rate(self, local_hour: int) -> tuple[str, float]:
        """(period name, price per kWh); a meter's price is named by its rate label or tier."""
        name, rate_per_kwh = self.tariff.rate(local_hour)
        if name == "standard" and not self.tariff.periods:
            name = self.rate_label or (f"tier {self.tier}" if self.tier is not None else name)
        return name, rate_per_kwh

    def as_dict(self) -> dict:
        return {
            "effective_from_ts_s": None if math.isinf(self.effective_from_s) else self.effective_from_s,
            "until_ts_s": self.until_s, "source": self.source, **self.tariff.as_dict(),
            "tier": self.tier, "rate_label": self.rate_label, "meter": self.meter,
            "announced_ts_s": self.announced_s,
        }


@dataclass(frozen=True)
class Segment:
    """[start_s, end_s) over which one version is in force."""

    start_s: float
    end_s: float
    version: Version


def timeline(versions: list[Version], configured: Version, start_s: float, end_s: float) -> list[Segment]:
    """The versions in force over [start_s, end_s), as consecutive segments (neighbours differ)."""
    cuts = {start_s, end_s}
    for v in versions:
        for edge in (v.effective_from_s, v.until_s):
            if edge is not None and start_s < edge < end_s:
                cuts.add(edge)
    ordered = sorted(versions, key=lambda v: v.effective_from_s)
    started: list = []  # max-heap of the versions begun so far: latest effective_from, bounded first
    taken = 0
    segments: list[Segment] = []
    edges = sorted(cuts)
    for a, b in zip(edges, edges[1:]):
        while taken < len(ordered) and ordered[taken].effective_from_s <= a:
            v = ordered[taken]
            heapq.heappush(started, (-v.effective_from_s, v.until_s is None, taken, v))
            taken += 1
        # A begun version that no longer covers `a` has ended, and so for every later segment.
        while started and not started[0][3].covers(a):
            heapq.heappop(started)
        winner = started[0][3] if started else configured
        if segments and segments[-1].version is winner:
            segments[-1] = Segment(segments[-1].start_s, b, winner)
        else:
            segments.append(Segment(a, b, winner))
    return segments


def in_force(versions: list[Version], configured: Version, at_s: float) -> Version:
    """The version in force at one instant."""
    return next((v for v in sorted(versions, key=lambda v: (v.effective_from_s, v.until_s is not None),
                                   reverse=True) if v.covers(at_s)), configured)
