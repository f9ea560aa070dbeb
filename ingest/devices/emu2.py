"""Rainforest EMU-2 / RAVEn: XML fragments over USB serial (CDC ACM, 115200 baud).

Fields are hex strings. Timestamps count seconds from 2000-01-01 UTC. Demand kW =
Demand * Multiplier / Divisor with Demand a signed 32-bit value (negative when solar
exports) and a zero Multiplier or Divisor meaning 1. Meter kWh =
(SummationDelivered - SummationReceived) * Multiplier / Divisor. A PriceCluster's
price per kWh is Price / 10^TrailingDigits in the currency of its ISO 4217 numeric
code. Fragments arrive split across reads and occasionally garbled.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ingest.devices import Event, Ignored, Reading

Y2K_EPOCH_S = 946684800
KNOWN = ("InstantaneousDemand", "CurrentSummationDelivered", "PriceCluster", "TimeCluster",
         "ConnectionStatus", "DeviceInfo", "MessageCluster", "NetworkInfo", "ScheduleInfo", "MeterList",
         "BlockPriceDetail")
_OPEN = re.compile(rb"<(" + b"|".join(k.encode() for k in KNOWN) + rb")>")
MAX_BUFFER = 64 * 1024
# 10**digits of a garbled TrailingDigits such as 0xffffffff would compute for ever.
MAX_TRAILING_DIGITS = 18


def _hex(element: ET.Element, name: str, default: int | None = None) -> int | None:
    text = element.findtext(name)
    if text is None:
        return default
    return int(text.strip(), 16)


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _scale(element: ET.Element) -> float:
    multiplier = _hex(element, "Multiplier", 1) or 1
    divisor = _hex(element, "Divisor", 1) or 1
    return multiplier / divisor


class Emu2:
    """Frames complete top-level elements out of the byte stream and parses them."""

    name = "emu2"

    def __init__(self, meter: int = 1):
        self.meter = meter
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Complete `<Known>...</Known>` fragments; bytes before an opening tag are dropped as noise."""
        self._buffer += data
        frames = []
        while True:
            start = _OPEN.search(self._buffer)
            if start is None:
                # Keep a tail that may be the beginning of an opening tag.
                self._buffer = self._buffer[-32:] if b"<" in self._buffer[-32:] else b""
                return frames
            name = start.group(1)
            end = self._buffer.find(b"</" + name + b">", start.end())
            next_open = _OPEN.search(self._buffer, start.end())
            if next_open is not None and (end == -1 or next_open.start() < end):
                # A new fragment began before this one closed: the first was garbled.
                frames.append(self._buffer[start.start():next_open.start()])
                self._buffer = self._buffer[next_open.start():]
                continue
            if end == -1:
                self._buffer = self._buffer[start.start():]
                if len(self._buffer) > MAX_BUFFER:
                    frames.append(self._buffer)
                    self._buffer = b""
                return frames
            stop = end + len(name) + 3
            frames.append(self._buffer[start.start():stop])
            self._buffer = self._buffer[stop:]

    def parse(self, frame: bytes, now_s: float) -> Reading | Event | Ignored | None:
        """Reading (demand), Event (summation, price), Ignored (other valid frames), None (garbled)."""
        try:
            element = ET.fromstring(frame)
            if element.tag == "InstantaneousDemand":
                demand = _hex(element, "Demand")
                stamp = _hex(element, "TimeStamp")
                if demand is None or stamp is None:
                    return None
                return Reading(meter=self.meter, ts_s=float(stamp + Y2K_EPOCH_S),
                               power_w=_signed32(demand) * _scale(element) * 1000.0)
            if element.tag == "CurrentSummationDelivered":
                delivered = _hex(element, "SummationDelivered")
                received = _hex(element, "SummationReceived", 0)
                stamp = _hex(element, "TimeStamp")
                if delivered is None or stamp is None:
                    return None
                scale = _scale(element)
                return Event("summation", float(stamp + Y2K_EPOCH_S), {
                    "meter": self.meter, "delivered_kwh": delivered * scale, "received_kwh": received * scale,
                    "energy_kwh": (delivered - received) * scale,
                })
            if element.tag == "PriceCluster":
                price = _hex(element, "Price")
                stamp = _hex(element, "TimeStamp")
                if price is None or stamp is None:
                    return None
                digits = _hex(element, "TrailingDigits", 0)
                if digits > MAX_TRAILING_DIGITS:  # one byte on the wire; more is a garbled frame
                    return None
                start = _hex(element, "StartTime", 0)
                return Event("price", float(stamp + Y2K_EPOCH_S), {
                    "meter": self.meter, "price_per_kwh": price / 10 ** digits,
                    "currency": _hex(element, "Currency", 840), "tier": _hex(element, "Tier", 0),
                    "start_ts_s": float(start + Y2K_EPOCH_S) if start else None,
                    "duration_min": _hex(element, "Duration", 0),
                })
            return Ignored(element.tag)
        except (ET.ParseError, ValueError, TypeError, OverflowError, LookupError):
            return None
