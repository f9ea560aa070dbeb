"""Serial meter devices: one small class per device type behind one interface.

A device turns the bytes read from its port into frames (`feed`) and each frame
into what it holds (`classify`): a Reading, an Event, Ignored (valid, nothing to
publish), Unknown (a well-formed element of a type the device does not know) or
Rejected (garbled, with the reason). Classifying is pure and never raises on bad
input. `parse` is the short form: None for a rejected frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reading:
    """One power sample from a device (meter = the device's meter number)."""

    meter: int
    ts_s: float
    power_w: float
    interval_ms: int | None = None  # pulse meters: ms since the previous blink (the pulse API's points)


@dataclass(frozen=True)
class Event:
    """A non-power message from a device (EMU-2 summation or price)."""

    kind: str
    ts_s: float
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Ignored:
    """A frame that is valid but carries nothing to publish (status lines, clock frames)."""

    reason: str


@dataclass(frozen=True)
class Unknown:
    """A well-formed element whose type the device does not know (newer firmware, a stray element)."""

    tag: str


@dataclass(frozen=True)
class Rejected:
    """A frame that cannot be used: garbled, missing a field, or a field out of its range."""

    reason: str


Result = Reading | Event | Ignored | Unknown | Rejected


def parse_or_none(result: Result) -> Reading | Event | Ignored | None:
    """`classify`'s result in `parse`'s terms: a rejected frame is None, an unknown one Ignored."""
    if isinstance(result, Rejected):
        return None
    if isinstance(result, Unknown):
        return Ignored(f"unknown element {result.tag}")
    return result
