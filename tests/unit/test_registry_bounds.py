"""`pybuild.registry.bounds`: the settings, the low-speed window, stall strikes and the deadline of a
`Meter` (on a fake clock), the thread's current meter; and that a real client's connection pools are
watched (`wire.watch_client`), so an httpx upgrade that moves its internals fails here."""

from __future__ import annotations

import threading

import pytest

from pybuild.errors import ConfigError, RegistryError
from pybuild.registry import bounds
from pybuild.registry.bounds import Limits, Meter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def meter(limits: Limits = Limits(), expected: int = 0, *, resumable: bool = False) -> tuple[Meter, Clock]:
    clock = Clock()
    subject = "blob sha256:ab from registry r.test"
    return Meter(limits, subject, expected, resumable=resumable, clock=clock), clock


# --- settings -----------------------------------------------------------------------------------------------


def test_defaults_are_curls_1_kib_for_30_s() -> None:
    limits = Limits.from_env({})
    assert limits == Limits(1024.0, 30.0, 600.0, 16384.0)
    assert limits.quota == 30 * 1024 and limits.describe() == "less than 1024 bytes/s for 30 s"


def test_settings_from_the_environment() -> None:
    env = {"PYBUILD_REGISTRY_SPEED_LIMIT": "2048", "PYBUILD_REGISTRY_SPEED_TIME": "2.5",
           "PYBUILD_REGISTRY_DEADLINE": " 60 ", "PYBUILD_REGISTRY_MIN_RATE": "1e6"}
    assert Limits.from_env(env) == Limits(2048.0, 2.5, 60.0, 1e6)
    assert Limits.from_env({"PYBUILD_REGISTRY_SPEED_LIMIT": "0"}).speed_limit == 0  # off
    assert Limits.from_env({"PYBUILD_REGISTRY_SPEED_TIME": ""}) == Limits()


@pytest.mark.parametrize(("name", "value", "need"), [
    ("PYBUILD_REGISTRY_SPEED_LIMIT", "fast", "0 or more"),
    ("PYBUILD_REGISTRY_SPEED_LIMIT", "-1", "0 or more"),
    ("PYBUILD_REGISTRY_SPEED_TIME", "0", "more than 0"),
    ("PYBUILD_REGISTRY_DEADLINE", "inf", "more than 0"),
    ("PYBUILD_REGISTRY_MIN_RATE", "nan", "more than 0"),
])
def test_bad_settings_are_config_errors_naming_the_variable(name: str, value: str, need: str) -> None:
    with pytest.raises(ConfigError) as info:
        Limits.from_env({name: value})
    assert info.value.message == f"invalid {name}: {value!r} (expected a number, {need})"


# --- the low-speed window -----------------------------------------------------------------------------------


def test_an_attempt_moving_less_than_the_quota_in_its_window_trips() -> None:
    m, clock = meter()
    m.begin()
    assert m.remaining() == 30
    clock.now += 20
    m.moved(1)  # a drip moves bytes but never the quota: the window does not start again
    assert m.remaining() == 10 and not m.trip() and m.tripped is None
    clock.now += 10
    assert m.remaining() == 0 and m.trip() and m.tripped == "stalled"


def test_meeting_the_quota_starts_the_window_again() -> None:
    m, clock = meter()
    m.begin()
    clock.now += 29
    m.moved(30 * 1024 - 1)
    assert m.remaining() == 1
    m.moved(1)
    assert m.remaining() == 30 and m.progressed
    clock.now += 29.5
    assert not m.trip()


def test_an_upload_gives_the_registry_time_to_answer() -> None:
    m, clock = meter(expected=1 << 30)
    m.begin()
    m.upload_sent(1 << 30)
    assert m.remaining() == 30 + (1 << 30) / bounds.UPLOAD_GRACE_RATE


def test_no_low_speed_check_when_the_limit_is_0() -> None:
    m, clock = meter(Limits(speed_limit=0))
    m.begin()
    clock.now += 500
    assert not m.trip() and m.remaining() == 100


# --- strikes and messages -----------------------------------------------------------------------------------


def test_two_stalls_in_a_row_fail_the_operation() -> None:
    m, clock = meter()
    m.begin()
    clock.now += 30
    assert m.trip()
    first = m.strike()  # the retry budget raises it if no retry is left
    assert first.message == "blob sha256:ab from registry r.test stalled: less than 1024 bytes/s for 30 s " \
                            "(1 stalled attempt)"
    assert first.hint is not None and "PYBUILD_REGISTRY_SPEED_LIMIT" in first.hint
    m.begin()
    assert m.tripped is None
    clock.now += 30
    assert m.trip()
    with pytest.raises(RegistryError) as info:
        m.strike()
    assert info.value.message.endswith("stalled: less than 1024 bytes/s for 30 s (2 stalled attempts)")


@pytest.mark.parametrize("resumable", [True, False])
def test_only_a_resumable_download_that_progressed_clears_its_strikes(resumable: bool) -> None:
    m, clock = meter(resumable=resumable)
    m.begin()
    clock.now += 30
    m.trip()
    m.strike()
    m.begin()
    m.moved(64 << 10)  # progress, then a stall
    clock.now += 30
    m.trip()
    if resumable:
        assert m.strike().message.endswith("(2 stalled attempts)") and m.strikes == 0
    else:
        with pytest.raises(RegistryError):
            m.strike()


def test_the_deadline_scales_with_the_size() -> None:
    limits = Limits(deadline=600, min_rate=1000)
    m, clock = meter(limits, expected=50_000)
    assert m.deadline() == clock.now + 650
    unknown, clock2 = meter(limits)  # an unknown size: what has moved counts
    unknown.moved(200_000)
    assert unknown.deadline() == clock2.now + 800


def test_the_deadline_trips_and_fails_at_once() -> None:
    m, clock = meter(Limits(speed_time=30, deadline=60, min_rate=1000), expected=10_000)
    m.begin()
    for _ in range(69):
        clock.now += 1
        m.moved(31 * 1024)  # never stalled
    assert m.remaining() == 1 and m.left() == 1
    clock.now += 1
    assert m.trip() and m.tripped == "deadline"
    with pytest.raises(RegistryError) as info:
        m.strike()
    assert info.value.message == ("blob sha256:ab from registry r.test took too long: deadline of 70 s "
                                  f"exceeded ({69 * 31 * 1024} of 10000 bytes moved)")
    with pytest.raises(RegistryError, match="took too long"):
        m.begin()  # no attempt starts past the deadline


# --- the current meter --------------------------------------------------------------------------------------


def test_meters_nest_per_thread_and_the_outer_window_starts_again() -> None:
    outer, clock = meter()
    inner, _ = meter()
    assert bounds.current() is None
    with bounds.watching(outer):
        outer.begin()
        seen: list[Meter | None] = []
        thread = threading.Thread(target=lambda: seen.append(bounds.current()))
        thread.start()
        thread.join()
        assert seen == [None]  # another thread runs its own operations
        with bounds.watching(inner):
            assert bounds.current() is inner
            clock.now += 25  # a token fetched in the middle of a download
        assert bounds.current() is outer and outer.remaining() == 30
    assert bounds.current() is None


def test_a_real_client_watches_its_connection_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.registry.client import RegistryClient
    from pybuild.registry.wire import WatchedBackend

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with RegistryClient("127.0.0.1:1") as client:
        assert client.watched == 1
        backend = client._http._transport._pool._network_backend  # type: ignore[attr-defined]
        assert isinstance(backend, WatchedBackend)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    with RegistryClient("registry.example") as client:
        assert client.watched == 2  # the proxy's pool too
