"""Rainforest EMU-2 / RAVEn: XML fragments over USB serial (CDC ACM, 115200 baud).

Fields are hex strings. Timestamps count seconds from 2000-01-01 UTC. Demand kW =
Demand * Multiplier / Divisor with Demand a signed 32-bit value (negative when solar
exports) and a zero Multiplier or Divisor meaning 1. Meter kWh =
(SummationDelivered - SummationReceived) * Multiplier / Divisor. A PriceCluster's
price per kWh is Price / 10^TrailingDigits in the currency of its ISO 4217 numeric
code. Fragments arrive split across reads and occasionally garbled: a field wider
than it can be on the wire (a Tier above one byte, a Currency of four digits) marks
the frame as garbled, with the field named in the reason.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ingest.devices import Event, Ignored, Reading, Rejected, Result, Unknown, parse_or_none

Y2K_EPOCH_S = 946684800
KNOWN = ("InstantaneousDemand", "CurrentSummationDelivered", "PriceCluster", "TimeCluster",
         "ConnectionStatus", "DeviceInfo", "MessageCluster", "NetworkInfo", "ScheduleInfo", "MeterList",
         "BlockPriceDetail")
# A top-level fragment opens with a known tag, or with any tag whose content begins with a
# child element (`<FooCluster>\n  <Bar>`): that is how an element type we do not know looks,
# whereas a field left over from a garbled fragment (`<Demand>0x..`) holds text.
_OPEN = re.compile(rb"<(" + b"|".join(k.encode() for k in KNOWN) + rb")>|<([A-Za-z][A-Za-z0-9_]{0,63})>(?=\s*<[A-Za-z])")
MAX_BUFFER = 64 * 1024
# Bytes kept from a buffer without any opening tag: enough for the longest tag plus
# the whitespace before its first child.
TAIL = 96
# 10**digits of a garbled TrailingDigits such as 0xffffffff would compute for ever.
MAX_TRAILING_DIGITS = 18
# Widest value each field has on the wire (ZigBee SE attribute sizes); wider is garbled.
FIELD_MAX = {
    "Demand": 0xFFFFFFFF, "Multiplier": 0xFFFFFFFF, "Divisor": 0xFFFFFFFF,
    "TimeStamp": 0xFFFFFFFF, "StartTime": 0xFFFFFFFF,
    "SummationDelivered": (1 << 48) - 1, "SummationReceived": (1 << 48) - 1,
    "Price": 0xFFFFFFFF, "TrailingDigits": MAX_TRAILING_DIGITS, "Tier": 0xFF, "Duration": 0xFFFF,
    "Currency": 999,  # ISO 4217 numeric codes have three digits
}
_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")
# Characters XML 1.0 forbids (C0 controls but tab, newline, carriage return): a stray one in a
# label would make the whole fragment unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# The device writes UTF-8; labels typed on a Windows tool arrive in cp1252; latin-1 decodes anything.
CHARSETS = ("utf-8", "cp1252", "latin-1")


class FieldError(ValueError):
    """A field that is missing, not hex, or out of its range; the message names it."""


def decode_text(frame: bytes) -> str:
    """The frame as text: UTF-8, else cp1252, else latin-1, so a label never loses a frame."""
    for charset in CHARSETS:
        try:
            text = frame.decode(charset)
            break
        except UnicodeDecodeError:
            continue
    return _NOT_XML.sub("\ufffd", text)


def _hex(element: ET.Element, name: str, default: int | None = None) -> int:
    text = element.findtext(name)
    if text is None:
        if default is None:
            raise FieldError(f"{name} missing")
        return default
    text = text.strip()
    if not _HEX.fullmatch(text):
        raise FieldError(f"{name} not hex")
    value = int(text, 16)
    if value > FIELD_MAX[name]:
        raise FieldError(f"{name} out of range")
    return value


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def _scale(element: ET.Element) -> float:
    multiplier = _hex(element, "Multiplier", 1) or 1
    divisor = _hex(element, "Divisor", 1) or 1
    return multiplier / divisor


def _stamp_s(element: ET.Element, name: str = "TimeStamp") -> float:
    return float(_hex(element, name) + Y2K_EPOCH_S)


class Emu2:
    """Frames complete top-level elements out of the byte stream and parses them."""

    name = "emu2"

    def __init__(self, meter: int = 1):
        self.meter = meter
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Complete top-level `<Tag>...</Tag>` fragments; bytes before an opening tag are dropped as noise."""
        self._buffer += data
        frames = []
        while True:
            start = _OPEN.search(self._buffer)
            if start is None:
                # Keep a tail that may be the beginning of an opening tag.
                self._buffer = self._buffer[-TAIL:] if b"<" in self._buffer[-TAIL:] else b""
                return frames
            name = start.group(1) or start.group(2)
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
        return parse_or_none(self.classify(frame, now_s))

    def classify(self, frame: bytes, now_s: float) -> Result:
        """What the frame holds; a garbled frame is Rejected with the reason (the field at fault)."""
        try:
            element = ET.fromstring(decode_text(frame))
        except ET.ParseError:
            return Rejected("not well-formed XML")
        try:
            return self._element(element)
        except FieldError as exc:
            return Rejected(str(exc))

    def _element(self, element: ET.Element) -> Result:
        if element.tag == "InstantaneousDemand":
            demand = _hex(element, "Demand")
            return Reading(meter=self.meter, ts_s=_stamp_s(element),
                           power_w=_signed32(demand) * _scale(element) * 1000.0)
        if element.tag == "CurrentSummationDelivered":
            delivered = _hex(element, "SummationDelivered")
            received = _hex(element, "SummationReceived", 0)
            scale = _scale(element)
            return Event("summation", _stamp_s(element), {
                "meter": self.meter, "delivered_kwh": delivered * scale, "received_kwh": received * scale,
                "energy_kwh": (delivered - received) * scale,
            })
        if element.tag == "PriceCluster":
            price = _hex(element, "Price")
            stamp_s = _stamp_s(element)
            digits = _hex(element, "TrailingDigits", 0)
            start = _hex(element, "StartTime", 0)
            label = element.findtext("RateLabel")
            return Event("price", stamp_s, {
                "meter": self.meter, "price_per_kwh": price / 10 ** digits,
                "currency": _hex(element, "Currency", 840), "tier": _hex(element, "Tier", 0),
                "start_ts_s": float(start + Y2K_EPOCH_S) if start else None,
                "duration_min": _hex(element, "Duration", 0),
                "rate_label": label.strip() if label is not None else None,
            })
        if element.tag in KNOWN:
            return Ignored(element.tag)
        return Unknown(element.tag)
