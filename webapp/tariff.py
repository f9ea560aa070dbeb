"""Electricity cost at a time-of-use tariff."""
from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Tariff:
    currency: str
    default_rate_per_kwh: float
    periods: tuple[Period, ...]

    @classmethod
    def from_config(cls, spec: dict) -> "Tariff":
        periods = tuple(
            Period(str(p["name"]), int(p["start_hour"]), int(p["end_hour"]), float(p["rate_per_kwh"]))
            for p in spec.get("periods", ())
        )
        return cls(str(spec.get("currency", "USD")), float(spec["default_rate_per_kwh"]), periods)

    def rate(self, local_hour: int) -> tuple[str, float]:
        """(period name, price per kWh) for an hour of the local day; the first matching period wins."""
        for period in self.periods:
            if period.covers(local_hour):
                return period.name, period.rate_per_kwh
        return "standard", self.default_rate_per_kwh

    def as_dict(self) -> dict:
        return {
            "currency": self.currency,
            "default_rate_per_kwh": self.default_rate_per_kwh,
            "periods": [p.__dict__ for p in self.periods],
        }
