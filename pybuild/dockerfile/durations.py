"""Go duration strings (`1h2m3.5s`, `300ms`, `0`), parsed like Go's `time.ParseDuration`.

HEALTHCHECK flags take them. The result is an integer number of nanoseconds, the unit Docker's image
config stores.
"""

from __future__ import annotations

import re

from pybuild.errors import DockerfileError

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_MAX = (1 << 63) - 1
_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_duration(text: str) -> int:
    """Nanoseconds in Go duration `text`; DockerfileError with Go's wording when it is not one."""
    quoted = '"' + text + '"'
    rest = text
    negative = rest[:1] == "-"
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0
    if rest == "":
        raise DockerfileError(f"time: invalid duration {quoted}")
    total = 0
    while rest:
        match = _PART.match(rest)
        assert match is not None  # the pattern can match the empty string
        whole, frac, unit = match.groups()
        if not whole and not frac:
            raise DockerfileError(f"time: invalid duration {quoted}")
        if unit == "":
            raise DockerfileError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS:
            raise DockerfileError(f'time: unknown unit "{unit}" in duration {quoted}')
        size = _UNITS[unit]
        # Go adds the fraction's nanoseconds per part, truncated toward zero.
        total += int(whole or "0") * size + (int(frac) * size // 10 ** len(frac) if frac else 0)
        rest = rest[match.end():]
    nanos = total
    if nanos > _MAX + (1 if negative else 0):
        raise DockerfileError(f"time: invalid duration {quoted}")
    return -nanos if negative else nanos


def format_duration(nanos: int) -> str:
    """A short human form of `nanos` (`1ms`, `1m30s`) like Go's `Duration.String` for common values."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < SECOND:
        for unit, size in (("ms", MILLISECOND), ("\u00b5s", MICROSECOND)):
            if nanos >= size:
                return sign + _trim(nanos, size) + unit
        return f"{sign}{nanos}ns"
    hours, nanos = divmod(nanos, HOUR)
    minutes, nanos = divmod(nanos, MINUTE)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return sign + text + _trim(nanos, SECOND) + "s"


def _trim(nanos: int, size: int) -> str:
    """`nanos / size` in decimal without trailing zeros (size is a power of ten)."""
    whole, frac = divmod(nanos, size)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"
