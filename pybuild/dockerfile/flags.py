"""Instruction flags (`--from=x`, `--link`), parsed the way BuildKit's `BFlags` parses them.

Each instruction declares the flags it takes as `FlagSpec`s; `parse_flags` checks the node's raw flags
against them and returns a `ParsedFlags`. Three kinds, as in BuildKit: a bool (`--link`, `--link=true`,
`--link=FALSE`), a string that may be given once and needs `=value`, and a repeatable string
(`--mount`, `--exclude`). A lone `--` ends flag parsing. Unknown flags suggest the nearest known one.

`suggest` (the nearest-name hint, BuildKit's `util/suggest`) lives here too: instructions use it for
unknown instruction names, mounts for unknown keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum

from pybuild.errors import DockerfileError
from pybuild.record import field, record


class FlagKind(Enum):
    """How a flag takes its value."""

    BOOL = "bool"
    STRING = "string"
    STRINGS = "strings"


@record
class FlagSpec:
    """One flag an instruction accepts: its name (without `--`), kind and default."""

    name: str
    kind: FlagKind
    default: str = ""


def bool_flag(name: str) -> FlagSpec:
    return FlagSpec(name, FlagKind.BOOL, "false")


def string_flag(name: str, default: str = "") -> FlagSpec:
    return FlagSpec(name, FlagKind.STRING, default)


def strings_flag(name: str) -> FlagSpec:
    return FlagSpec(name, FlagKind.STRINGS)


@record
class ParsedFlags:
    """The values of an instruction's flags after parsing; defaults for flags not given."""

    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    used: tuple[str, ...] = ()
    """Names of the flags that were given, sorted (BuildKit's `FlagsUsed`)."""

    def string(self, name: str) -> str:
        return self.values.get(name, "")

    def boolean(self, name: str) -> bool:
        return self.values.get(name) == "true"

    def strings(self, name: str) -> tuple[str, ...]:
        return self.lists.get(name, ())

    def is_used(self, name: str) -> bool:
        return name in self.used


def parse_flags(raw: Sequence[str], specs: Iterable[FlagSpec]) -> ParsedFlags:
    """Check `raw` flags (`--name[=value]`) against `specs`; raise DockerfileError naming the bad flag."""
    known = {spec.name: spec for spec in specs}
    values = {spec.name: spec.default for spec in known.values() if spec.kind is not FlagKind.STRINGS}
    lists: dict[str, list[str]] = {}
    used: set[str] = set()
    for arg in raw:
        if arg == "--":
            break
        if not arg.startswith("--"):
            raise DockerfileError(f"arg should start with -- : {arg}")
        name, has_value, value = arg[2:].partition("=")
        spec = known.get(name)
        if spec is None:
            raise DockerfileError(with_suggestion(f"unknown flag: --{name}", name, known, case_sensitive=True))
        if name in used and spec.kind is not FlagKind.STRINGS:
            raise DockerfileError(f"duplicate flag specified: {name}")
        used.add(name)
        if spec.kind is FlagKind.BOOL:
            values[name] = _bool_value(name, has_value == "=", value)
        elif not has_value:
            raise DockerfileError(f"missing a value on flag: {name}")
        elif spec.kind is FlagKind.STRING:
            values[name] = value
        else:
            lists.setdefault(name, []).append(value)
    return ParsedFlags(values, {k: tuple(v) for k, v in lists.items()}, tuple(sorted(used)))


def _bool_value(name: str, has_value: bool, value: str) -> str:
    # BuildKit: `--flag` alone is true; `--flag=` is an error; the value is case-insensitive.
    if has_value and value == "":
        raise DockerfileError(f"missing a value on flag: {name}")
    lower = value.lower()
    if lower in ("", "true"):
        return "true"
    if lower == "false":
        return "false"
    raise DockerfileError(f"expecting boolean value for flag {name}, not: {value}")


def levenshtein(a: str, b: str, *, transpose: bool = False) -> int:
    """Edit distance between `a` and `b`; with `transpose`, swapping two neighbours also costs 1."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if transpose and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, rows[-2][j - 2] + 1)
            row.append(cost)
        rows.append(row)
    return rows[-1][-1]


def suggest(value: str, options: Iterable[str], *, case_sensitive: bool) -> str | None:
    """The option nearest to `value` within edit distance 2, or None (BuildKit's `util/suggest`).

    An exact match means the error was not about the name, so no suggestion is made. Ties (BuildKit
    picks by map order, i.e. at random) go to the option reachable by swapping letters (`RNU` → `RUN`,
    not `ENV`), then alphabetically. Without case sensitivity the suggestion takes the case of `value`
    when that is all upper or all lower.
    """
    wanted = value if case_sensitive else value.lower()
    ranked: list[tuple[int, int, str]] = []
    for option in options:
        candidate = option if case_sensitive else option.lower()
        if candidate == wanted:
            return None
        distance = levenshtein(wanted, candidate)
        if distance < 3:
            ranked.append((distance, levenshtein(wanted, candidate, transpose=True), candidate))
    if not ranked:
        return None
    best = min(ranked)[2]
    if not case_sensitive and value == value.upper() and value != value.lower():
        return best.upper()
    return best


def with_suggestion(message: str, value: str, options: Iterable[str], *, case_sensitive: bool) -> str:
    """`message` plus ` (did you mean X?)` when an option is close to `value`."""
    match = suggest(value, options, case_sensitive=case_sensitive)
    return f"{message} (did you mean {match}?)" if match else message
