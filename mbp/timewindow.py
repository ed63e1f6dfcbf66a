"""Durations, time zones, scheduled times and the `[start, end)` window of a batch."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mbp.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)\s*([smhd])", re.ASCII)
DAY = 86400
MAX_DURATION = 36_500 * DAY  # a century: longer is a typo, and overflows datetime
# Batches are scheduled in the years datetime and the layout's names can hold.
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


def parse_duration(text: str, option: str = "--window") -> int:
    """Seconds in a duration such as `5m`, `90s`, `1h30m`, `1d`."""
    s = text.strip().lower()
    if not s or _DURATION.sub("", s).strip():
        raise UsageError(
            f"{option} {text!r} is not a duration; use a number and a unit s, m, h or d, like 5m"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(s))
    if seconds > MAX_DURATION:
        raise UsageError(f"{option} {text!r} is longer than a century; give a shorter duration")
    return seconds


def positive_duration(text: str, option: str = "--window") -> int:
    """Like parse_duration, but zero is refused."""
    seconds = parse_duration(text, option)
    if seconds <= 0:
        raise UsageError(f"{option} must be longer than zero, got {text!r}")
    return seconds


def _named(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError) as exc:
        raise UsageError(
            f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin"
        ) from exc


def _local() -> tzinfo:
    """The machine's zone, as cron sees it: $TZ (a name, or a zone file's path), else
    /etc/localtime, named by its link into the zoneinfo folder when it is one."""
    tz = os.environ.get("TZ", "").removeprefix(":")
    if tz and not tz.startswith("/"):
        try:
            return _named(tz)
        except UsageError:
            raise UsageError(
                f"TZ={tz!r} is not a zone name mbp can read (POSIX rules such as CET-1CEST "
                "are not); set TZ or --timezone to an IANA name such as Europe/Berlin"
            ) from None
    path = tz or "/etc/localtime"
    target = os.path.realpath(path)
    if "zoneinfo/" in target:
        try:
            return _named(target.split("zoneinfo/", 1)[1])
        except UsageError:
            pass  # not a name ZoneInfo knows: read the file itself
    try:
        with open(path, "rb") as f:
            return ZoneInfo.from_file(f, key=path)
    except (OSError, ValueError) as exc:
        if tz:
            raise UsageError(
                f"TZ={tz!r} names no readable time zone file; set TZ or --timezone to an "
                "IANA name such as Europe/Berlin"
            ) from exc
        return UTC  # no zone configured at all: what the C library assumes too


def zone(name: str | None) -> tzinfo:
    """The time zone named `name` (IANA), or the machine's local zone when None."""
    if name is None or name == "":
        return _local()
    return _named(name)


def parse_instant(text: str, tz: tzinfo, option: str = "--scheduled-time") -> datetime:
    """An aware datetime from ISO-8601 (naive is read in `tz`) or epoch seconds."""
    s = text.strip()
    naive = False
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", s):
            dt = datetime.fromtimestamp(float(s), UTC)
        else:
            dt = datetime.fromisoformat(s)
            naive = dt.tzinfo is None
            if naive:
                dt = dt.replace(tzinfo=tz)
            dt.astimezone(UTC)  # a wall time near year 1 or 9999 may have no UTC instant
    except (ValueError, OverflowError, OSError) as exc:
        raise UsageError(
            f"{option} {text!r} is not a time; use ISO-8601 (2026-12-03T10:05:00) or epoch seconds"
        ) from exc
    if naive and EARLIEST <= dt < LATEST:
        _one_instant(dt, tz, f"{option} {text!r}")
    if dt.microsecond:
        # 10:05:00.5 would name the batch of 10:05:00 and replace it.
        raise UsageError(
            f"{option} {text!r} has a fraction of a second; batches are named and timed to "
            "the second, give whole seconds"
        )
    if not EARLIEST <= dt < LATEST:
        raise UsageError(f"{option} {text!r} is not between the years 1970 and 9000")
    return dt


def _wall(dt: datetime, tz: tzinfo) -> datetime:
    # Through UTC: astimezone() to the zone a datetime already has returns it unchanged,
    # a wall time in a spring-forward gap included.
    return dt.astimezone(UTC).astimezone(tz)


def floor_time(instant: datetime, step: int, tz: tzinfo) -> datetime:
    """The latest time at or before `instant` whose wall clock in `tz` reads a multiple
    of `step` seconds since local midnight (10:05:02 -> 10:05:00 for 5m); whole days floor
    to local midnight. The grid is on the wall clock, so a DST change never shifts it:
    its skipped times are left out and its repeated ones count twice, once per pass.
    """
    local = _wall(instant, tz)
    if step % DAY == 0:
        days = step // DAY
        ordinal = local.date().toordinal()
        start_day = date.fromordinal(ordinal - (ordinal - 1) % days)
        return _at_wall(start_day, 0, tz)
    since_midnight = local.hour * 3600 + local.minute * 60 + local.second
    now = instant.timestamp()
    if _steady(now - step - 3 * 3600, now + 3 * 3600, tz):  # no clock change near: plain
        return _at_wall(local.date(), since_midnight - since_midnight % step, tz, local.fold)
    # Near a clock change: the wall-clock grid times within the largest shift (2 h) of
    # now, on this day and the last; the latest of them that exists and has come.
    reach = -(-3 * 3600 // step) + 1
    best: datetime | None = None
    for back, day in ((0, local.date()), (1, local.date() - timedelta(days=1))):
        base = since_midnight // step if back == 0 else (DAY - 1) // step
        for k in range(max(0, base - reach), base + reach + 1):
            if k * step >= DAY:
                continue
            for fold in (0, 1):
                candidate = _at_wall(day, k * step, tz, fold)
                t = candidate.timestamp()
                if t <= now and _exists(candidate, tz) and (best is None or t > best.timestamp()):
                    best = candidate
        if best is not None:
            return best
    return datetime.fromtimestamp(now // step * step, UTC)  # no grid time for a day


def _steady(start: float, end: float, tz: tzinfo) -> bool:
    """Whether `tz` keeps one UTC offset from `start` to `end` (no two changes are this
    close, so the offsets at the two ends tell)."""
    first, last = (datetime.fromtimestamp(t, UTC).astimezone(tz).utcoffset() for t in (start, end))
    return first == last


def _one_instant(wall: datetime, tz: tzinfo, what: str) -> None:
    """A wall time given without an offset must name one instant in `tz`: not one that a
    spring-forward skips (it would be read as another hour's batch), nor one of the hour a
    fall-back repeats (the second pass would redo the first pass's batch)."""
    if not _exists(wall, tz):
        raise UsageError(
            f"{what} does not exist in {tz}: clocks skip it that day; give another time"
        )
    offsets = [wall.replace(fold=f).strftime("%z") for f in (0, 1)]
    shown = wall.replace(tzinfo=None).isoformat()
    if offsets[0] != offsets[1]:
        raise UsageError(
            f"{what} happens twice in {tz}, as clocks go back; give it with its UTC offset: "
            f"{shown}{_colon(offsets[0])} or {shown}{_colon(offsets[1])}"
        )


def _colon(offset: str) -> str:
    return f"{offset[:3]}:{offset[3:]}"


def _exists(wall: datetime, tz: tzinfo) -> bool:
    """Whether the wall time `wall` happens in `tz` (not in a spring-forward gap)."""
    back = wall.astimezone(UTC).astimezone(tz)
    return back.replace(tzinfo=None, fold=0) == wall.replace(tzinfo=None, fold=0)


def _at_wall(day: date, seconds: int, tz: tzinfo, fold: int = 0) -> datetime:
    wall = datetime.combine(day, time(0), tzinfo=tz) + timedelta(seconds=seconds)
    return wall.replace(fold=fold)


def subtract(end: datetime, seconds: int, tz: tzinfo) -> datetime:
    """`end` minus a duration: whole days on the wall clock (a DST day is 23 or 25 h)."""
    if seconds % DAY == 0:
        local = _wall(end, tz)
        earlier = local.replace(tzinfo=None) - timedelta(seconds=seconds)
        return earlier.replace(tzinfo=tz, fold=0)
    return datetime.fromtimestamp(end.timestamp() - seconds, UTC)


@dataclass(frozen=True)
class Window:
    """A half-open interval `[start, end)` of aware datetimes."""

    start: datetime
    end: datetime

    @property
    def start_epoch(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_epoch(self) -> int:
        return int(self.end.timestamp())


def scheduled_time(
    text: str | None, step: int, tz: tzinfo, now: datetime | None = None
) -> datetime:
    """The batch's scheduled time: given explicitly, or now floored to `step`."""
    if text is not None and text.strip() != "":
        return parse_instant(text, tz)
    return floor_time(now or datetime.now(UTC), step, tz)


def window(end: datetime, length: int, lookback: int, tz: tzinfo) -> Window:
    """The window `[end - length - lookback, end)`.

    For an `end` on the wall-clock grid of `length` (as the default scheduled time is),
    the window starts at the grid time before it, so back-to-back windows tile time also
    where a DST change makes two grid times more or less than `length` apart.
    """
    # Days too: where clocks skip midnight a day starts at 01:00, and a whole day back
    # from that would leave out the previous day's first hour.
    if floor_time(end, length, tz).timestamp() == end.timestamp():
        start = floor_time(datetime.fromtimestamp(end.timestamp() - 1, UTC), length, tz)
    else:
        start = subtract(end, length, tz)
    if lookback:
        start = datetime.fromtimestamp(start.timestamp() - lookback, UTC)
    return Window(start=start, end=end)


def batch_name(instant: datetime, tz: tzinfo) -> tuple[str, str]:
    """(`YYYY-MM-DD`, `YYYYMMDDTHHMMSS`) of `instant` on the wall clock of `tz`.

    A wall time that happens twice (the hour repeated when clocks go back) gets its UTC
    offset, `20261025T023000+0200` and `...+0100`, so the two batches keep two files."""
    local = _wall(instant, tz)
    stamp = local.strftime("%Y%m%dT%H%M%S")
    if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
        stamp += local.strftime("%z")
    return local.strftime("%Y-%m-%d"), stamp
