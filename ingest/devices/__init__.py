"""Serial meter devices: one small class per device type behind one interface.

A device turns the bytes read from its port into frames (`feed`) and each frame
into readings or events (`parse`); parsing is pure and never raises on bad input:
a frame it cannot use returns None and is counted by the caller.
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
