"""Flooring and windows on the wall clock, across DST changes."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbp import timewindow as tw
from mbp.errors import UsageError

NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    "text,seconds",
    [("5m", 300), ("90s", 90), ("1h30m", 5400), ("1d", 86400), (" 2H ", 7200), ("0s", 0)],
)
def test_durations(text: str, seconds: int) -> None:
    assert tw.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m5", "5 minutes", "-5m", "5w", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        tw.parse_duration(text)


def test_cron_start_is_floored_to_the_window() -> None:
    now = datetime(2026, 12, 3, 10, 5, 2, tzinfo=UTC)
    assert tw.scheduled_time(None, 300, UTC, now=now) == datetime(2026, 12, 3, 10, 5, tzinfo=UTC)


def test_hourly_floor_in_a_half_hour_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30: hours start at :30 UTC
    now = datetime(2026, 12, 3, 10, 20, tzinfo=UTC)  # 15:50 local
    got = tw.floor_time(now, 3600, kolkata)
    assert got.astimezone(kolkata).replace(tzinfo=None) == datetime(2026, 12, 3, 15, 0)


def test_daily_floor_is_local_midnight() -> None:
    now = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)  # 22:00 on Dec 2 in New York
    got = tw.floor_time(now, 86400, NY)
    assert got.timestamp() == datetime(2026, 12, 2, tzinfo=NY).timestamp()


def test_floor_in_the_repeated_hour_keeps_the_second_pass() -> None:
    # 01:07 EST (the second 01:07 of 2026-11-01) floors to 01:05 EST, not 01:05 EDT.
    now = datetime(2026, 11, 1, 1, 7, fold=1, tzinfo=NY)
    got = tw.floor_time(now, 300, NY)
    assert now.timestamp() - got.timestamp() == 120


def test_floor_never_moves_forward_across_fall_back() -> None:
    for minute in range(0, 60, 7):
        for fold in (0, 1):
            now = datetime(2026, 11, 1, 1, minute, 30, fold=fold, tzinfo=NY)
            got = tw.floor_time(now, 300, NY)
            assert 0 <= now.timestamp() - got.timestamp() < 300


def test_consecutive_windows_tile_a_dst_day() -> None:
    """Back-to-back 5-minute batches over the fall-back day: no gap, no overlap."""
    start = datetime(2026, 11, 1, tzinfo=NY).timestamp()
    end = datetime(2026, 11, 2, tzinfo=NY).timestamp()
    t, covered = start + 300, 0.0
    previous_end = start
    while t <= end:
        sched = tw.floor_time(datetime.fromtimestamp(t + 2, UTC), 300, NY)
        span = tw.window(sched, 300, 0, NY)
        assert span.start_epoch == previous_end
        covered += span.end_epoch - span.start_epoch
        previous_end = span.end_epoch
        t += 300
    assert covered == end - start == 25 * 3600


def test_scheduled_time_forms() -> None:
    assert tw.parse_instant("1764756300", UTC) == datetime.fromtimestamp(1764756300, UTC)
    naive = tw.parse_instant("2026-07-01T12:00:00", NY)
    assert naive.utcoffset().total_seconds() == -4 * 3600
    aware = tw.parse_instant("2026-07-01T12:00:00Z", NY)
    assert aware.timestamp() == datetime(2026, 7, 1, 12, tzinfo=UTC).timestamp()
    with pytest.raises(UsageError):
        tw.parse_instant("noon", UTC)


def test_batch_name_uses_the_local_date() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    instant = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)  # 00:30 on Dec 4 in Berlin
    assert tw.batch_name(instant, berlin) == ("2026-12-04", "20261204T003000")


def test_unknown_zone() -> None:
    with pytest.raises(UsageError, match="unknown time zone"):
        tw.zone("Nowhere/Special")


def _berlin_file() -> str:
    """A Europe/Berlin zone file on this machine: the system's, else the tzdata package's."""
    import zoneinfo
    from importlib.resources import files

    for folder in zoneinfo.TZPATH:
        if os.path.isfile(os.path.join(folder, "Europe", "Berlin")):
            return os.path.join(folder, "Europe", "Berlin")
    return str(files("tzdata").joinpath("zoneinfo", "Europe", "Berlin"))


@pytest.mark.parametrize("tz", ["Europe/Berlin", ":Europe/Berlin", "{file}", ":{file}"])
def test_the_local_zone_from_tz_as_a_name_or_a_file(monkeypatch, tmp_path, tz: str) -> None:
    copy = tmp_path / "berlin.tzif"  # a zone file outside any zoneinfo folder
    copy.write_bytes(Path(_berlin_file()).read_bytes())
    for value in {tz.format(file=_berlin_file()), tz.format(file=copy)}:
        monkeypatch.setenv("TZ", value)
        summer, winter = (datetime(2026, m, 1, 12, 0, tzinfo=UTC) for m in (7, 1))
        assert tw.zone(None).utcoffset(summer) == timedelta(hours=2), value
        assert tw.zone(None).utcoffset(winter) == timedelta(hours=1), value


@pytest.mark.parametrize(
    ("tz", "needle"), [("CET-1CEST", "POSIX rules"), ("/nowhere/zone", "no readable")]
)
def test_a_tz_mbp_cannot_read_says_so(monkeypatch, tz: str, needle: str) -> None:
    monkeypatch.setenv("TZ", tz)
    with pytest.raises(UsageError, match=needle):
        tw.zone(None)
    assert tw.zone("UTC") is UTC  # --timezone still works


def test_floor_never_lands_in_a_spring_forward_gap() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 03:00:02 CEST, just after the jump from 02:00 CET: the 7-minute grid's 02:55 does
    # not exist, and taken as 02:55 CET it would be 55 minutes in the future.
    got = tw.floor_time(datetime(2026, 3, 29, 1, 0, 2, tzinfo=UTC), 420, berlin)
    assert got == datetime(2026, 3, 29, 0, 59, tzinfo=UTC)  # 01:59 CET, before the gap


@settings(max_examples=300)
@given(
    when=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
    ),
    step=st.sampled_from([60, 300, 420, 900, 1800, 3600, 5400, 7200, 86400]),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]),
)
def test_floor_is_a_real_time_at_or_before_now(when: datetime, step: int, zone: str) -> None:
    tz = tw.zone(zone)
    got = tw.floor_time(when, step, tz)
    assert got.timestamp() <= when.timestamp()
    assert when.timestamp() - got.timestamp() < step + 3600  # at most a gap's hour more
    wall = got.astimezone(UTC).astimezone(tz)
    assert wall.replace(tzinfo=None) == got.replace(tzinfo=None)  # a wall time that exists


# Around the clock changes of 2026: spring and autumn in Berlin and New York (1 h), Lord
# Howe (30 min), Chatham (1 h at 02:45 local) and Santiago (1 h at midnight, so a day
# starts at 01:00 or has its last hour twice).
CHANGES = {
    "America/Santiago": ["2026-04-05T03:00:00+00:00", "2026-09-06T04:00:00+00:00"],
    "Europe/Berlin": ["2026-03-29T01:00:00+00:00", "2026-10-25T01:00:00+00:00"],
    "America/New_York": ["2026-03-08T07:00:00+00:00", "2026-11-01T06:00:00+00:00"],
    "Australia/Lord_Howe": ["2026-04-04T15:00:00+00:00", "2026-10-03T15:30:00+00:00"],
    "Pacific/Chatham": ["2026-04-04T14:00:00+00:00", "2026-09-26T14:00:00+00:00"],
}


@pytest.mark.parametrize("zone", sorted(CHANGES))
@pytest.mark.parametrize("step", [300, 420, 2700, 3600, 5400, 7200, 6 * 3600, 86400, 2 * 86400])
def test_default_batches_tile_time_across_clock_changes(zone: str, step: int) -> None:
    """Cron every few seconds through each change: the scheduled times never go back,
    each has its own batch name, and their windows meet end to start."""
    tz = tw.zone(zone)
    for change in CHANGES[zone]:
        centre = datetime.fromisoformat(change).timestamp()
        t, end = centre - 2 * step - 4 * 3600, centre + 2 * step + 4 * 3600
        last: datetime | None = None
        names: set[str] = set()
        while t < end:
            sched = tw.floor_time(datetime.fromtimestamp(t, UTC), step, tz)
            assert sched.timestamp() <= t
            if last is None or sched.timestamp() != last.timestamp():
                assert last is None or sched.timestamp() > last.timestamp(), (zone, step, t)
                span = tw.window(sched, step, 0, tz)
                if last is not None:
                    assert span.start.timestamp() == last.timestamp(), (zone, step, sched)
                name = "/".join(tw.batch_name(sched, tz))
                assert name not in names, name
                names.add(name)
                last = sched
            t += min(step, 3600) / 3 + 1


BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    "text,needle",
    [
        ("2026-03-29T02:30:00", "does not exist in Europe/Berlin: clocks skip it that day"),
        (
            "2026-10-25T02:30:00",
            "happens twice in Europe/Berlin, as clocks go back; give it with its UTC offset: "
            "2026-10-25T02:30:00+02:00 or 2026-10-25T02:30:00+01:00",
        ),
    ],
)
def test_a_wall_time_that_names_no_single_instant_is_refused(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("+", r"\+")):
        tw.parse_instant(text, BERLIN)


def test_each_instant_of_a_dst_night_has_its_own_batch_name() -> None:
    """The two passes of 02:30 and the instants around the gap each name one file, and
    an instant named with any offset gets the same name as in Berlin's own."""
    texts = [
        "2026-03-29T01:30:00", "2026-03-29T03:30:00", "2026-03-29T02:30:00+01:00",
        "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-25T01:30:00Z",
    ]  # fmt: skip
    names = [tw.batch_name(tw.parse_instant(t, BERLIN), BERLIN)[1] for t in texts]
    assert names == [
        "20260329T013000", "20260329T033000", "20260329T033000",
        "20261025T023000+0200", "20261025T023000+0100", "20261025T023000+0100",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text", ["2026-12-03T10:05:00.5", "1764756300.25", "2026-12-03T10:05:00.000001Z"]
)
def test_a_scheduled_time_with_a_fraction_of_a_second_is_refused(text: str) -> None:
    """It would share the file name of the whole second's batch and replace it."""
    with pytest.raises(UsageError, match="has a fraction of a second; batches are named"):
        tw.parse_instant(text, UTC)
    assert tw.parse_instant("1764756300.0", UTC).timestamp() == 1764756300
