"""Unit tests for instruction flags (BFlags rules), Go durations and `--mount` specs."""

from __future__ import annotations

import pytest

from pybuild.dockerfile.durations import MILLISECOND, SECOND, format_duration, parse_duration
from pybuild.dockerfile.flags import (
    bool_flag,
    levenshtein,
    parse_flags,
    string_flag,
    strings_flag,
    suggest,
)
from pybuild.dockerfile.mounts import parse_mount, parse_ram_size
from pybuild.errors import DockerfileError

SPECS = (bool_flag("link"), string_flag("from"), string_flag("network", "default"), strings_flag("mount"))


# --- flags --------------------------------------------------------------------------------------


def test_flags_defaults_when_absent() -> None:
    flags = parse_flags((), SPECS)
    assert flags.boolean("link") is False
    assert flags.string("from") == ""
    assert flags.string("network") == "default"
    assert flags.strings("mount") == ()
    assert flags.used == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("--link", True), ("--link=true", True), ("--link=TRUE", True), ("--link=False", False)],
)
def test_bool_flag_values(raw: str, expected: bool) -> None:
    assert parse_flags((raw,), SPECS).boolean("link") is expected


def test_string_and_repeated_flags() -> None:
    flags = parse_flags(("--from=build", "--mount=type=cache,target=/a", "--mount=type=tmpfs,target=/b"), SPECS)
    assert flags.string("from") == "build"
    assert flags.strings("mount") == ("type=cache,target=/a", "type=tmpfs,target=/b")
    assert flags.used == ("from", "mount")
    assert flags.is_used("mount") and not flags.is_used("link")


def test_empty_string_value_is_allowed() -> None:
    assert parse_flags(("--from=",), SPECS).string("from") == ""


def test_double_dash_ends_flags() -> None:
    assert parse_flags(("--", "--bogus"), SPECS).used == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (("--boo",), "unknown flag: --boo"),
        (("--lnk",), "unknown flag: --lnk (did you mean link?)"),
        (("--from=a", "--from=b"), "duplicate flag specified: from"),
        (("--link", "--link"), "duplicate flag specified: link"),
        (("--link=",), "missing a value on flag: link"),
        (("--link=yes",), "expecting boolean value for flag link, not: yes"),
        (("--from",), "missing a value on flag: from"),
        (("--mount",), "missing a value on flag: mount"),
        (("-x",), "arg should start with -- : -x"),
    ],
)
def test_flag_errors(raw: tuple[str, ...], message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_flags(raw, SPECS)
    assert info.value.message == message


def test_suggest_rules() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("rnu", "run") == 2
    assert levenshtein("rnu", "run", transpose=True) == 1
    assert suggest("FORM", ["FROM", "RUN"], case_sensitive=False) == "FROM"
    assert suggest("form", ["FROM", "RUN"], case_sensitive=False) == "from"
    assert suggest("Form", ["FROM", "RUN"], case_sensitive=False) == "from"
    assert suggest("XYZZY", ["FROM", "RUN"], case_sensitive=False) is None
    assert suggest("run", ["RUN"], case_sensitive=False) is None  # exact match: not about the name


# --- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0", 0),
        ("0ms", 0),
        ("1ms", MILLISECOND),
        ("300ms", 300 * MILLISECOND),
        ("1h2m3.5s", 3723 * SECOND + SECOND // 2),
        ("1.5h", 5400 * SECOND),
        (".5s", SECOND // 2),
        ("50ns", 50),
        ("2us", 2000),
        ("2\u00b5s", 2000),
        ("+5s", 5 * SECOND),
        ("-5s", -5 * SECOND),
        ("1m1m", 120 * SECOND),
    ],
)
def test_parse_duration(text: str, nanos: int) -> None:
    assert parse_duration(text) == nanos


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("5", 'time: missing unit in duration "5"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("s", 'time: invalid duration "s"'),
        (".s", 'time: invalid duration ".s"'),
        ("-", 'time: invalid duration "-"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_duration(text)
    assert info.value.message == message


def test_format_duration() -> None:
    assert format_duration(MILLISECOND) == "1ms"
    assert format_duration(90 * SECOND) == "1m30s"
    assert format_duration(0) == "0s"
    assert format_duration(1500 * MILLISECOND) == "1.5s"


# --- mounts -------------------------------------------------------------------------------------


def test_mount_defaults_bind_readonly() -> None:
    mount = parse_mount("target=/src")
    assert (mount.type, mount.target, mount.readonly, mount.deferred) == ("bind", "/src", True, False)


def test_mount_cache_options() -> None:
    mount = parse_mount("type=cache,target=/root/.cache,id=pip,sharing=LOCKED,mode=0755,uid=1000,gid=1000")
    assert mount.type == "cache"
    assert mount.readonly is False
    assert (mount.id, mount.sharing, mount.mode, mount.uid, mount.gid) == ("pip", "locked", 0o755, 1000, 1000)


def test_mount_aliases_and_readonly_forms() -> None:
    assert parse_mount("type=bind,src=a,dst=/b,rw").readonly is False
    assert parse_mount("type=bind,source=a,destination=/b,readwrite=true").source == "a"
    assert parse_mount("type=cache,target=/c,ro").readonly is True
    assert parse_mount("type=cache,target=/c,readonly=1").readonly is True
    assert parse_mount("type=bind,target=/c,rw=false").readonly is True
    assert parse_mount("type=bind,target=/c,from=builder").from_ == "builder"


def test_mount_tmpfs_size() -> None:
    mount = parse_mount("type=tmpfs,target=/tmp,size=64m")
    assert (mount.readonly, mount.size) == (False, 64 << 20)
    assert parse_ram_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_ram_size("1024") == 1024


def test_mount_secret_and_ssh() -> None:
    secret = parse_mount("type=secret,id=token,env=TOKEN,required")
    assert (secret.id, secret.env, secret.required, secret.readonly) == ("token", "TOKEN", True, True)
    ssh = parse_mount("type=ssh,required=false,mode=0600")
    assert (ssh.type, ssh.required, ssh.mode) == ("ssh", False, 0o600)


def test_mount_quoted_csv_field() -> None:
    mount = parse_mount('type=bind,"target=/a,b",source=x')
    assert mount.target == "/a,b"


def test_mount_variables_are_deferred() -> None:
    mount = parse_mount("type=cache,target=$DIR,uid=$UID")
    assert mount.deferred and mount.type == "cache" and mount.uid is None
    again = parse_mount(mount.spec, lambda value: {"$DIR": "/d", "$UID": "7"}.get(value, value))
    assert (again.target, again.uid, again.deferred) == ("/d", 7, False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("type=foo", 'unsupported mount type "foo"'),
        ("type=cahce", 'unsupported mount type "cahce" (did you mean cache?)'),
        ("type=cache,sharing=all", 'unsupported sharing value "all"'),
        ("type=bind,sharing=shared", "invalid cache sharing set for bind mount"),
        ("type=cache,mode=999", "invalid value 999 for mode"),
        ("type=cache,uid=-1", "invalid value -1 for uid"),
        ("type=cache,gid=x", "invalid value x for gid"),
        ("type=bind,mode=0755", 'mode not allowed for "bind" type mounts'),
        ("type=tmpfs,uid=0", 'uid not allowed for "tmpfs" type mounts'),
        ("type=bind,required", "unexpected key 'required' for mount type 'bind'"),
        ("required,type=secret,id=a", "unexpected key 'required' for mount type 'bind'"),
        ("type=cache,size=1m", "unexpected key 'size' for mount type 'cache'"),
        ("type=tmpfs,size=lots", "invalid value for size: lots"),
        ("type=bind,ro=maybe", "invalid value for ro: maybe"),
        ("type=bind,target", "invalid field 'target' must be a key=value pair"),
        ("type=bind,tagret=/a", "unexpected key 'tagret' in 'tagret=/a' (did you mean target?)"),
        ("type=bind,bogusness=1", "unexpected key 'bogusness' in 'bogusness=1'"),
        ("type=bind,from=$STAGE", "'from' doesn't support variable expansion, define alias stage instead"),
        ("type=secret,from=x,id=a", "secret mount should not have a from"),
        ("type=secret", "invalid secret mount. one of source, target required"),
        ("type=secret,source=a,id=b", "both source and id can't be set"),
        ('type=bind,tar"get=/a', 'bare " in non-quoted-field'),
        ('type=bind,"target=/a', 'extraneous or missing " in quoted-field'),
    ],
)
def test_mount_errors(spec: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_mount(spec)
    assert message in info.value.message
