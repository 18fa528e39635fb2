"""specparse: one CSV record split as Go's encoding/csv splits it (buildx's and BuildKit's flag specs),
and the key=value pairs of `--output` / `--cache-*` values."""

from __future__ import annotations

import pytest

from pybuild.errors import ConfigError
from pybuild.specparse import CsvError, spec_fields, split_csv


@pytest.mark.parametrize(("text", "fields"), [
    ('a,"b ""q""",c', ["a", 'b "q"', "c"]),
    ("a,,b", ["a", "", "b"]),
    ("a,", ["a", ""]),
    ("", [""]),
    ('"a,b"', ["a,b"]),
    ('""', [""]),
    (' "a",b', None),  # without TrimLeadingSpace the quote is bare
])
def test_split_like_encoding_csv(text: str, fields: list[str] | None) -> None:
    if fields is None:
        with pytest.raises(CsvError, match='column 2: bare " in non-quoted-field'):
            split_csv(text)
    else:
        assert split_csv(text) == fields


def test_trim_leading_space_keeps_a_quoted_field_quoted() -> None:
    assert split_csv('a,  "b,c",d', trim_leading_space=True) == ["a", "b,c", "d"]


@pytest.mark.parametrize(("text", "message"), [
    ('a,b"c', 'parse error on line 1, column 4: bare " in non-quoted-field'),
    ('"abc', 'parse error on line 1, column 5: extraneous or missing " in quoted-field'),
    ('"ab"c', 'parse error on line 1, column 4: extraneous or missing " in quoted-field'),
    ('"ab" ,c', 'parse error on line 1, column 4: extraneous or missing " in quoted-field'),
])
def test_malformed_records(text: str, message: str) -> None:
    with pytest.raises(CsvError) as info:
        split_csv(text)
    assert str(info.value) == message


def test_spec_fields() -> None:
    assert spec_fields('type=local, "dest=a,b",MODE= Max', "spec") == {"type": "local", "dest": "a,b",
                                                                       "mode": "Max"}
    assert spec_fields("", "spec") == {}
    with pytest.raises(ConfigError, match=r"invalid spec 'x': 'x' is not key=value") as info:
        spec_fields("x", "spec", hint="e.g. type=local")
    assert info.value.hint == "e.g. type=local"
    with pytest.raises(ConfigError, match=r"invalid spec ' a=1,A=2': a given twice"):
        spec_fields("a=1,A=2", "spec", shown=" a=1,A=2")
    with pytest.raises(ConfigError, match="invalid spec 'a=\"1': parse error on line 1, column 3"):
        spec_fields('a="1', "spec")
