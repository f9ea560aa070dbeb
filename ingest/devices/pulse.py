"""Optical pulse ("blip") meters: an Arduino prints the milliseconds between LED blinks.

Single-meter firmware prints `<ms>` per blink; the multi-meter variant prints
`<meter id> <ms>`. `INFO ...` and `CONNECTED` lines are status, not data. With K
impulses per kWh one blink is 3.6e6/K J, so the mean power over the interval is
P = 3.6e9 / (K * ms) W (K = 1000: 3 600 000 / ms). The host stamps each line in UTC.
"""
from __future__ import annotations

import re

from ingest.devices import Ignored, Reading, Rejected, parse_or_none

_SINGLE = re.compile(rb"^\s*(\d{1,12})\s*$")
_MULTI = re.compile(rb"^\s*(\d{1,5})\s+(\d{1,12})\s*$")
MAX_LINE = 256


def power_w(interval_ms: int, impulses_per_kwh: float) -> float:
    """Mean power over one blink interval."""
    return 3.6e9 / (impulses_per_kwh * interval_ms)


class PulseMeter:
    """Line-oriented parser for single- and multi-meter pulse firmware."""

    name = "pulse"

    def __init__(self, impulses_per_kwh: float = 1000.0, default_meter: int = 1):
        if impulses_per_kwh <= 0:
            raise ValueError("impulses per kWh must be positive")
        self.impulses_per_kwh = impulses_per_kwh
        self.default_meter = default_meter
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Complete lines from the bytes read so far; a partial line waits for the rest."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:  # no newline for far too long: garbage, drop it
            lines.append(self._buffer)
            self._buffer = b""
        return [line.rstrip(b"\r") for line in lines if line.strip()]

    def parse(self, frame: bytes, now_s: float) -> Reading | Ignored | None:
        """A Reading for a blink line, Ignored for status lines, None for garbage."""
        return parse_or_none(self.classify(frame, now_s))

    def classify(self, frame: bytes, now_s: float) -> Reading | Ignored | Rejected:
        """A Reading for a blink line, Ignored for status lines, Rejected (with the reason) for garbage."""
        if frame.startswith((b"INFO", b"CONNECTED")):
            return Ignored("status line")
        single = _SINGLE.match(frame)
        if single:
            meter, interval_ms = self.default_meter, int(single.group(1))
        else:
            multi = _MULTI.match(frame)
            if not multi:
                return Rejected("not a blink line")
            meter, interval_ms = int(multi.group(1)), int(multi.group(2))
        if interval_ms <= 0:
            return Rejected("zero interval")
        return Reading(meter=meter, ts_s=now_s, power_w=power_w(interval_ms, self.impulses_per_kwh),
                       interval_ms=interval_ms)
