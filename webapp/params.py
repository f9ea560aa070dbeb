"""Parsing and bounds of request parameters; every failure raises BadParameter (HTTP 400)."""
from __future__ import annotations

import datetime as dt
import re

from webapp.errors import BadParameter

MAX_DIGITS = 15
# Dates and instants a request may name: wide enough for any meter's history, and narrow enough
# that a range computed from one (a default start, a day added) stays a valid date.
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2999, 12, 31)
MAX_EPOCH_S = (dt.date(3000, 1, 1) - dt.date(1970, 1, 1)).days * 86400
_DIGITS = re.compile(r"[0-9]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def digits(name: str, text: str | None, minimum: int = 0, maximum: int | None = None) -> int:
    """A non-negative integer written with at most 15 digits."""
    if text is None or text == "":
        raise BadParameter(f"{name} is required")
    if len(text) > MAX_DIGITS:
        raise BadParameter(f"{name} has more than {MAX_DIGITS} digits")
    if not _DIGITS.fullmatch(text):
        raise BadParameter(f"{name} must be a non-negative integer")
    value = int(text)
    if value < minimum:
        raise BadParameter(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise BadParameter(f"{name} must be at most {maximum}")
    return value


def name(kind: str, text: str | None, max_length: int = 64) -> str:
    """An identifier (house, meter, appliance, zip): letters, digits and _.:- up to max_length characters."""
    if not text or len(text) > max_length or not _NAME.fullmatch(text):
        raise BadParameter(f"{kind} must be 1-{max_length} letters, digits or _.:-")
    return text


def day(name_: str, text: str | None, default: dt.date | None = None) -> dt.date:
    if text is None or text == "":
        if default is None:
            raise BadParameter(f"{name_} is required (YYYY-MM-DD)")
        return default
    if len(text) != 10:
        raise BadParameter(f"{name_} must be a date YYYY-MM-DD")
    try:
        value = dt.date.fromisoformat(text)
    except ValueError:
        raise BadParameter(f"{name_} must be a date YYYY-MM-DD") from None
    if not FIRST_DAY <= value <= LAST_DAY:
        raise BadParameter(f"{name_} must be a date from {FIRST_DAY} to {LAST_DAY}")
    return value


def day_range(args, max_days: int, default_days: int = 30, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """(from, to) inclusive from ?from=&to=, defaulting to the last default_days days."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    end = day("to", args.get("to"), today)
    start = day("from", args.get("from"), max(end - dt.timedelta(days=default_days - 1), FIRST_DAY))
    if start > end:
        raise BadParameter("from must not be after to")
    if (end - start).days + 1 > max_days:
        raise BadParameter(f"a range spans at most {max_days} days")
    return start, end


def integer(name_: str, text: str | None, default: int, minimum: int, maximum: int) -> int:
    if text is None or text == "":
        return default
    return digits(name_, text, minimum, maximum)


def seconds(name_: str, text: str | None, default: float | None = None) -> float:
    """Epoch seconds (fractional allowed), at most 15 digits before the point."""
    if text is None or text == "":
        if default is None:
            raise BadParameter(f"{name_} is required")
        return default
    if len(text) > 24 or not re.fullmatch(r"[0-9]{1,15}(\.[0-9]{1,6})?", text):
        raise BadParameter(f"{name_} must be epoch seconds")
    value = float(text)
    if value >= MAX_EPOCH_S:
        raise BadParameter(f"{name_} must be epoch seconds before the year 3000")
    return value
