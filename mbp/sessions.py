"""`list-users`: the distinct ids with a session event inside the window."""

from __future__ import annotations

import json
from datetime import UTC, tzinfo

import duckdb

from mbp.errors import RuntimeFailure, UsageError
from mbp.rowids import format_quoted, is_bare
from mbp.sources import (
    INTEGER_TYPES,
    describe,
    first_line,
    ident,
    parquet_files,
    require_column,
    require_in_every_file,
    scan_sql,
)
from mbp.timewindow import Window

_TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000}
_ID_TYPES = INTEGER_TYPES | {"VARCHAR"}


def _bounds(col_type: str, window: Window, unit: str, tz: tzinfo) -> tuple[object, object]:
    """The window's bounds in the time column's own type, so the filter is pushed
    into the Parquet scan and compared with row-group statistics."""
    if col_type in INTEGER_TYPES:
        scale = _TIME_UNITS[unit]
        return window.start_epoch * scale, window.end_epoch * scale
    if col_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return window.start.astimezone(UTC), window.end.astimezone(UTC)
    if col_type.startswith("TIMESTAMP"):
        # A naive timestamp is a wall-clock reading in --timezone.
        def wall(d):  # type: ignore[no-untyped-def]
            return d.astimezone(tz).replace(tzinfo=None)

        return wall(window.start), wall(window.end)
    raise UsageError(
        f"the time column has type {col_type}; use integer epoch seconds (or --time-unit "
        "ms|us), a timestamp, or a timestamp with time zone"
    )


def active_users(
    sessions: str,
    window: Window,
    *,
    userid_column: str = "userid",
    time_column: str = "time",
    time_unit: str = "s",
    tz: tzinfo = UTC,
    con: duckdb.DuckDBPyConnection | None = None,
    warnings: list[str] | None = None,
) -> list[str] | list[int]:
    """Sorted distinct ids with at least one event in `window`. When there are none and
    `warnings` is given, a likely wrong --time-unit is added to it (see _unit_hint)."""
    if time_unit not in _TIME_UNITS:
        raise UsageError(f"--time-unit {time_unit!r} is not one of s, ms, us")
    files = parquet_files(sessions, "sessions")
    con = con or duckdb.connect()
    columns = describe(con, files, "sessions")
    id_type = require_column(columns, userid_column, "sessions table", "--userid-column")
    time_type = require_column(columns, time_column, "sessions table", "--time-column")
    require_in_every_file(
        con, files, [userid_column, time_column], "sessions", frozenset([userid_column])
    )
    if id_type not in _ID_TYPES:
        raise UsageError(
            f"the id column {userid_column!r} has type {id_type}; ids must be text or integers"
        )
    start, end = _bounds(time_type, window, time_unit, tz)
    sql = (
        f"SELECT DISTINCT {ident(userid_column)} AS id FROM {scan_sql()} "
        f"WHERE {ident(time_column)} >= $start AND {ident(time_column)} < $end "
        f"AND {ident(userid_column)} IS NOT NULL ORDER BY id"
    )
    try:
        rows = con.execute(sql, {"files": files, "start": start, "end": end}).fetchall()
    except duckdb.Error as exc:
        raise RuntimeFailure(f"cannot read the sessions: {first_line(exc)}") from exc
    if not rows and warnings is not None and time_type in INTEGER_TYPES:
        hint = _unit_hint(con, files, time_column, time_unit)
        if hint is not None:
            warnings.append(hint)
    return [r[0] for r in rows]


# Epoch seconds of 1990-01-01 and 2200-01-01: the times a session log plausibly holds.
_PLAUSIBLE = (631_152_000, 7_258_118_400)


def _unit_hint(
    con: duckdb.DuckDBPyConnection, files: list[str], time_column: str, time_unit: str
) -> str | None:
    """For a window that found nobody: a hint when the integer time column's newest value
    reads as a time only in another --time-unit (epoch milliseconds read as seconds lie
    past the year 20,000, so no window ever matches). From file statistics, no scan."""
    try:
        ((newest,),) = con.execute(
            "SELECT max(TRY_CAST(stats_max_value AS HUGEINT)) FROM parquet_metadata($files) "
            "WHERE path_in_schema = $column",
            {"files": files, "column": time_column},
        ).fetchall()
    except duckdb.Error:
        return None  # a hint is not worth a failure
    low, high = _PLAUSIBLE
    if newest is None or low <= newest / _TIME_UNITS[time_unit] < high:
        return None
    fits = [u for u, scale in _TIME_UNITS.items() if low <= newest / scale < high]
    if not fits:
        return None
    return (
        f"no events in the window, and the newest value of {time_column!r}, {newest}, is a "
        f"plausible time only as epoch {fits[0]}, not {time_unit}; set --time-unit {fits[0]}"
    )


def format_ids(ids: list[str] | list[int], fmt: str) -> str:
    """Ids as one line `'a','b'`, one per line, or a JSON array."""
    if fmt == "quoted":
        return format_quoted(ids)
    if fmt == "lines":
        # One id per line, bare: what `predict --rowid-filter` reads back as the same ids.
        bad = next((i for i in ids if not is_bare(str(i))), None)
        if bad == "":
            raise UsageError(
                "an empty id cannot be given one per line (it is a blank line); "
                "use --format quoted or json"
            )
        if bad is not None:
            raise UsageError(
                f"id {bad!r} has a character that one id per line cannot carry as it is "
                "(a space, a comma, a quote, a line break...); use --format quoted or json"
            )
        text = "\n".join(str(i) for i in ids)
        # --rowid-filter reads "-" as stdin and "@PATH" as a file, not as ids.
        if text == "-" or text.startswith("@"):
            what = (
                "the only id '-' means"
                if text == "-"
                else f"the first id {text.split()[0]!r} names"
            )
            where = "standard input" if text == "-" else "a file (@FILE)"
            raise UsageError(
                f"{what} {where} to --rowid-filter, so one id per line would not read back "
                "as the same ids; use --format quoted or json"
            )
        return text
    if fmt == "json":
        return json.dumps(ids, ensure_ascii=False)
    raise UsageError(f"--format {fmt!r} is not one of quoted, lines, json")
