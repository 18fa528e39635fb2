"""The comma-separated specs of flags and mounts: `--output`, `--cache-from`/`--cache-to`, `--secret` and
`RUN --mount`, one record each, split as buildx and BuildKit split them (Go's `encoding/csv`).

Who uses it: `export/outputs.py` and `cache/transfer.py` (`spec_fields`: key=value pairs),
`dockerfile/mounts.py` and `worker/secrets.py` (`split_csv`: the fields, each caller reading its own
keys and bare words).

The rules are encoding/csv's: fields are split on commas; a field that starts with `"` is quoted, may hold
commas, and `""` in it is one quote; a quote anywhere else in an unquoted field is an error ("bare \" in
non-quoted-field"), and so is a quoted field not closed right before a comma or the end ("extraneous or
missing \" in quoted-field"). `trim_leading_space` is encoding/csv's `TrimLeadingSpace` (spaces before a
field are dropped, so ` "a,b"` is still quoted); the flag parsers have always used it.
"""

from __future__ import annotations

from pybuild.errors import ConfigError

__all__ = ["CsvError", "spec_fields", "split_csv"]


class CsvError(ValueError):
    """A record encoding/csv would refuse; `str()` is Go's `csv.ParseError` text (without the file)."""

    def __init__(self, column: int, reason: str) -> None:
        super().__init__(f"parse error on line 1, column {column}: {reason}")
        self.column = column
        self.reason = reason


def split_csv(text: str, *, trim_leading_space: bool = False) -> list[str]:
    """The fields of one CSV record (see the module docstring); CsvError when it is malformed."""
    fields: list[str] = []
    pos = 0
    while True:
        if trim_leading_space:
            while pos < len(text) and text[pos].isspace():
                pos += 1
        if text[pos:pos + 1] == '"':
            value, pos = _quoted_field(text, pos)
        else:
            end = text.find(",", pos)
            end = len(text) if end == -1 else end
            value = text[pos:end]
            if '"' in value:
                raise CsvError(pos + value.index('"') + 1, 'bare " in non-quoted-field')
            pos = end
        fields.append(value)
        if pos >= len(text):
            return fields
        pos += 1  # the comma


def _quoted_field(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch != '"':
            out.append(ch)
            i += 1
        elif text[i + 1:i + 2] == '"':
            out.append('"')
            i += 2
        elif i + 1 == len(text) or text[i + 1] == ",":
            return "".join(out), i + 1
        else:
            break
    raise CsvError(i + 1, 'extraneous or missing " in quoted-field')


def spec_fields(text: str, what: str, *, shown: str | None = None, hint: str | None = None) -> dict[str, str]:
    """`a=1,"b=2,3"` → {a: "1", b: "2,3"}: the key=value pairs of one record (leading spaces trimmed, keys
    stripped and lower-cased, values stripped, no key twice). ConfigError "invalid WHAT 'SHOWN': ..."
    otherwise (`shown` defaults to `text`; `hint` goes with a field that is not key=value)."""
    shown = text if shown is None else shown
    try:
        items = split_csv(text, trim_leading_space=True) if text else []
    except CsvError as exc:
        raise ConfigError(f"invalid {what} {shown!r}: {exc}") from None
    fields: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ConfigError(f"invalid {what} {shown!r}: {item!r} is not key=value", hint=hint)
        if key in fields:
            raise ConfigError(f"invalid {what} {shown!r}: {key} given twice")
        fields[key] = value.strip()
    return fields
