"""`rank`: users by their latest score, filtered by a threshold, joined with user info."""

from __future__ import annotations

import base64
import datetime as dt
import glob
import io
import json
import math
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mbp import sources
from mbp.errors import RuntimeFailure, UsageError
from mbp.output import write_file
from mbp.sources import INTEGER_TYPES, describe, first_line, ident, require_column

FORMATS = ("table", "csv", "json", "jsonl", "parquet")
EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
_SCORE_COLUMNS = ("score", "time", "model", "model_version")
_NUMERIC_TYPES = INTEGER_TYPES | {"FLOAT", "DOUBLE"}
_KEY_TYPES = INTEGER_TYPES | {"VARCHAR", "UUID"}
# DuckDB's virtual column: the position of a row's file in the (sorted) file list. An
# integer, where the file name as a string per row made the "latest" sort twice as
# costly over a month of batches. A real column of that name would shadow it and only
# change how exact ties are broken.
_FILE_COL = "file_index"
# Files can vanish between listing and reading when `predict --output-mode overwrite`
# swaps the dataset; a fresh listing then reads the new state.
_ATTEMPTS = 3
# Up to this --limit, the model columns are read after ranking, from the ranked rows' files.
_LATE_LIMIT = 1_000


@dataclass
class Ranking:
    """The ranked rows and the warnings the CLI should print."""

    table: pa.Table
    warnings: list[str] = field(default_factory=list)


def _scan(param: str, union: bool = True, hive: bool = False, row_number: bool = False) -> str:
    # The predictions are read without hive partitioning: rank needs no `dt` column, and
    # parsing the folder names of a month of batches costs 0.1 s.
    by_name = ", union_by_name = true" if union else ""
    numbered = ", file_row_number = true" if row_number else ""
    return f"read_parquet({param}, hive_partitioning = {str(hive).lower()}{by_name}{numbered})"


def _prediction_files(predictions: str) -> list[str]:
    if not glob.has_magic(predictions) and not os.path.lexists(predictions):
        raise UsageError(
            f"the predictions directory {predictions!r} does not exist; "
            "run mbp predict first or check --predictions"
        )
    try:
        return sources.parquet_files(predictions, "predictions")
    except UsageError:
        # A dataset that exists but holds no batch yet ranks nobody.
        if Path(predictions).is_dir():
            return []
        raise


def _is_numeric(col_type: str) -> bool:
    return col_type in _NUMERIC_TYPES or col_type.startswith("DECIMAL")


def _prediction_columns(columns: dict[str, str], rowid_column: str) -> str:
    """The rowid's type, after checking the columns `rank` needs."""
    rowid_type = require_column(columns, rowid_column, "predictions dataset", "--rowid-column")
    for name in ("score", "time"):
        if name not in columns:
            have = ", ".join(columns)
            raise UsageError(
                f"the predictions dataset has no column {name!r} (it has: {have}); "
                "point --predictions at the output of mbp predict"
            )
    if not _is_numeric(columns["score"]):
        raise UsageError(f"the predictions' score column has type {columns['score']}, not a number")
    if columns["time"] not in INTEGER_TYPES:
        raise UsageError(
            f"the predictions' time column has type {columns['time']}, "
            "not integer epoch seconds as mbp predict writes"
        )
    return rowid_type


def _info_columns(
    info: dict[str, str], rowid_column: str, wanted: list[str] | None, warnings: list[str]
) -> list[str]:
    """The user-info columns to show: those asked for, or all but the key."""
    taken = {rowid_column, *_SCORE_COLUMNS}
    if wanted is None:
        clash = [c for c in info if c in _SCORE_COLUMNS]
        if clash:
            warnings.append(
                f"user info columns {', '.join(clash)} clash with the score columns and are "
                "left out; rename them in the file"
            )
        return [c for c in info if c not in taken]
    have = ", ".join(info)
    for name in wanted:
        if name not in info:
            raise UsageError(
                f"--columns names {name!r}, which the user info does not have "
                f"(it has: {have}); pick from those"
            )
        if name in _SCORE_COLUMNS:
            raise UsageError(
                f"--columns names {name!r}, which clashes with the score column of that name; "
                "leave it out"
            )
    return list(dict.fromkeys(c for c in wanted if c != rowid_column))


def _newest_time(con: duckdb.DuckDBPyConnection, files: list[str], time_col: str) -> int | None:
    # max() over a plain scan is answered from the Parquet footers' statistics.
    rows = con.execute(
        f"SELECT max({time_col}) FROM {sources.scan_sql(hive=False)}", {"files": files}
    )
    value: int | None = rows.fetchall()[0][0]
    return value


@dataclass
class _Settings:
    """What `rank` was asked for, after validation."""

    rowid_column: str
    threshold: float
    limit: int
    since: int | None
    own_connection: bool = True
    info_files: list[str] | None = None
    info_types: dict[str, str] = field(default_factory=dict)
    shown: list[str] = field(default_factory=list)


def _query(
    con: duckdb.DuckDBPyConnection,
    files: list[str],
    pred_cols: dict[str, str],
    rowid_type: str,
    q: _Settings,
    union: bool = True,
    late_models: bool = True,
) -> pa.Table:
    rowid_column, info_files, shown = q.rowid_column, q.info_files, q.shown
    rid, score, time = ident(rowid_column), ident("score"), ident("time")
    params: dict[str, Any] = {"threshold": q.threshold, "limit": q.limit or None}
    model = ident("model") if "model" in pred_cols else "NULL::VARCHAR"
    version = ident("model_version") if "model_version" in pred_cols else "NULL::VARCHAR"
    # The model columns are text: carried through the "latest" sort of every row, they cost
    # a sixth of the query. For a top few they are read afterwards, from those rows' files.
    late = (
        late_models
        and bool(files)
        and 0 < q.limit <= _LATE_LIMIT
        and (model, version) != ("NULL::VARCHAR",) * 2
        and _FILE_COL not in pred_cols  # a real column of that name hides the file's index
    )
    if files:
        where = f"{rid} IS NOT NULL AND {time} IS NOT NULL"
        if q.since is not None:
            newest = _newest_time(con, files, time)
            if newest is not None:
                where += f" AND {time} >= $since_start"
                params["since_start"] = newest - q.since
        source = f"{_scan('$files', union)} WHERE {where}"
        params["files"] = files
    else:
        model = version = "NULL::VARCHAR"
        source = (
            f"(SELECT NULL::{rowid_type} AS {rid}, NULL::DOUBLE AS {score}, "
            f"NULL::BIGINT AS {time}, NULL::UBIGINT AS {_FILE_COL}) WHERE false"
        )
    carried = f"{_FILE_COL} AS __file" if late else f"{model} AS __model, {version} AS __version"
    # Latest first, then the threshold: an old high score never stands in for a newer
    # low one. Equal times go to the later batch file; a user twice in one file (the input
    # had the rowid twice) gets the higher score, whatever the order of the rows.
    latest = (
        f"SELECT {rid} AS __rowid, {score} AS __score, {time} AS __time, {carried} "
        f"FROM {source} QUALIFY row_number() OVER (PARTITION BY {rid} "
        f"ORDER BY {time} DESC, {_FILE_COL} DESC, {score} DESC) = 1"
    )
    select = [f"s.__rowid AS {rid}", "s.__score AS score", "s.__time AS time"]
    if late:
        select.append("s.__file AS __file")
    else:
        select += ["s.__model AS model", "s.__version AS model_version"]
    join = ""
    if info_files is not None:
        key_type = q.info_types[rowid_column]
        key = rid if key_type == rowid_type else f"TRY_CAST({rid} AS {rowid_type})"
        cols = "".join(f", {ident(c)}" for c in shown)
        # One row per user: the first in file order; duplicates are counted for a warning.
        info = (
            f"SELECT {key} AS __key{cols}, count(*) OVER (PARTITION BY {key}) AS __copies "
            f"FROM {_scan('$info_files', hive=True, row_number=True)} WHERE {key} IS NOT NULL "
            f"QUALIFY row_number() OVER (PARTITION BY {key} "
            f"ORDER BY {_FILE_COL}, file_row_number) = 1"
        )
        join = f"LEFT JOIN ({info}) i ON i.__key = s.__rowid"
        select += [f"i.{ident(c)}" for c in shown]
        select += ["i.__key IS NOT NULL AS __matched", "coalesce(i.__copies, 0) AS __copies"]
        params["info_files"] = info_files
    # A NaN score ranks nobody. DuckDB sorts NaN above every number, and takes a file's
    # min/max statistics (pyarrow leaves NaN out of them) for proof that a column holds no
    # NaN, so it drops a plain isnan(score); it does not look through the CASE.
    score_value = "CASE WHEN s.__score IS NULL THEN NULL ELSE s.__score::DOUBLE END"
    sql = (
        f"SELECT {', '.join(select)} FROM ({latest}) s {join} "
        f"WHERE s.__score >= $threshold AND NOT isnan({score_value}) "
        "ORDER BY s.__score DESC, s.__rowid ASC LIMIT $limit"
    )
    table = con.sql(sql, params=params).to_arrow_table()
    if late:
        with_models = _with_models(con, files, table, rowid_column, (model, version), union)
        if with_models is None:  # a ranked row's file changed or will not say: one pass
            return _query(con, files, pred_cols, rowid_type, q, union, late_models=False)
        table = with_models
    return table


def _with_models(
    con: duckdb.DuckDBPyConnection,
    files: list[str],
    table: pa.Table,
    rowid_column: str,
    columns: tuple[str, str],
    union: bool,
) -> pa.Table:
    """The ranked rows with `model` and `model_version` read from their own batch files
    (column `__file`: the position in `files`), in place of `__file`. None when a file
    cannot answer for its row: it was replaced since (a re-run of its batch), or its
    columns do not match the query's."""
    positions = table.column("__file").to_pylist()
    chosen = sorted(set(positions))
    table = table.drop_columns(["__file"])
    if not chosen:  # nobody ranked
        for at, name in ((3, "model"), (4, "model_version")):
            table = table.add_column(at, name, pa.nulls(0, pa.string()))
        return table
    rid = ident(rowid_column)
    con.register("mbp_ranked", table.select([rowid_column]))
    try:
        found: pa.Table = con.sql(
            f"SELECT $positions[{_FILE_COL}::BIGINT + 1] AS f, {rid} AS r, score AS s, "
            f"max({columns[0]}) AS m, max({columns[1]}) AS v "
            f"FROM {_scan('$chosen', union)} WHERE {rid} IN (SELECT {rid} FROM mbp_ranked) "
            "GROUP BY ALL",
            params={"chosen": [files[i] for i in chosen], "positions": chosen},
        ).to_arrow_table()
    except duckdb.Error:
        return None
    finally:
        con.unregister("mbp_ranked")
    by_row = {(f, r, s): (m, v) for f, r, s, m, v in zip(*found.to_pydict().values(), strict=True)}
    ids, scores = table.column(rowid_column).to_pylist(), table.column("score").to_pylist()
    keys = zip(positions, ids, scores, strict=True)
    pairs = [by_row.get(k) for k in keys]
    if any(p is None for p in pairs):
        return None
    for at, name, i in ((3, "model", 0), (4, "model_version", 1)):
        values = pa.array([p[i] for p in pairs if p is not None], found.schema.field(3 + i).type)
        table = table.add_column(at, name, values)
    return table


def rank(
    predictions: str,
    *,
    user_info: str | None = None,
    rowid_column: str = "userid",
    columns: list[str] | None = None,
    threshold: float = 0.7,
    limit: int = 100,
    since: int | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Ranking:
    """Users whose latest score is at least `threshold`, best first.

    `since` (seconds) keeps only scores within that long of the dataset's newest time.
    """
    if math.isnan(threshold):
        raise UsageError("--threshold must be a number, not nan")
    if not 0 <= limit <= 2**62:
        raise UsageError(f"--limit must be 0 (all) or a number of users, got {limit}")
    if rowid_column in _SCORE_COLUMNS:
        raise UsageError(
            f"--rowid-column {rowid_column!r} is one of the score columns "
            f"({', '.join(_SCORE_COLUMNS)}); give the id column's name"
        )
    if since is not None and since < 0:
        raise UsageError("--since must not be negative")
    if columns is not None and user_info is None:
        raise UsageError("--columns picks user info columns; give --user-info too")
    warnings: list[str] = []
    q = _Settings(rowid_column, threshold, limit, since, own_connection=con is None)
    con = con or duckdb.connect()
    if user_info is not None:
        q.info_files = sources.parquet_files(user_info, "user info")
        q.info_types = describe(con, q.info_files, "user info")
        for name in (_FILE_COL, "file_row_number"):
            if name in q.info_types:
                raise UsageError(
                    f"the user info has a column {name!r}, a name DuckDB reserves for its "
                    "own row bookkeeping; rename it in the file"
                )
        require_column(q.info_types, rowid_column, "user info", "--rowid-column")
        q.shown = _info_columns(q.info_types, rowid_column, columns, warnings)
        internal = next((c for c in q.shown if c.startswith("__")), None)
        if internal is not None:
            raise UsageError(
                f"the user info column {internal!r} starts with '__', as rank's own working "
                "columns do; rename it, or leave it out with --columns"
            )
    table = _read(con, predictions, q)
    if q.info_files is not None:
        missing = table.column("__matched").to_pylist().count(False)
        if missing:
            users = "user has" if missing == 1 else "users have"
            warnings.append(f"{missing} {users} no row in user info")
        copies = sum(1 for n in table.column("__copies").to_pylist() if n > 1)
        if copies:
            users = "user has" if copies == 1 else "users have"
            warnings.append(f"{copies} {users} more than one row in user info; the first is shown")
        table = table.drop_columns(["__matched", "__copies"])
    return Ranking(table=table, warnings=warnings)


def _read_same_schema(
    con: duckdb.DuckDBPyConnection, files: list[str], q: _Settings
) -> pa.Table | None:
    """The query without union_by_name, which reads every file's footer before the scan
    starts (0.8 s of 2.8 s over a month of batches): the first file's columns, matched by
    name in the others. None when a file lacks one of them or the types clash; the caller
    then unifies the schemas and checks them."""
    try:
        first = describe(con, files[:1], "predictions", hive=False)
    except RuntimeFailure:
        return None  # unreadable or gone: the full path reports it, or lists again
    if not all(c in first for c in (q.rowid_column, *_SCORE_COLUMNS)):
        return None
    try:
        rowid_type = _prediction_columns(first, q.rowid_column)
    except UsageError:
        return None
    # Without union_by_name every file is read with the first file's types: only the widest
    # (as mbp writes them) take another file's float32 or decimal score without loss, and
    # only text ids another file's integers (12 stays '12'; read as integers, a text '012'
    # would become user 12).
    if (first["score"], first["time"], rowid_type) != ("DOUBLE", "BIGINT", "VARCHAR"):
        return None
    if q.info_types.get(q.rowid_column, rowid_type) != rowid_type:
        return None
    try:
        return _query(con, files, first, rowid_type, q, union=False)
    except duckdb.Error:
        return None


def _read(con: duckdb.DuckDBPyConnection, predictions: str, q: _Settings) -> pa.Table:
    """The ranking query over a fresh listing, retried when a listed file vanished."""
    for attempt in range(1, _ATTEMPTS + 1):
        files = _prediction_files(predictions)
        if files and (same := _read_same_schema(con, files, q)) is not None:
            return same
        try:
            if files:
                if q.own_connection:
                    # describe() and the query's union_by_name both read every file's
                    # footer; with the cache the query reuses them. Only here: in the
                    # common case, one schema, the cache costs more than it saves.
                    con.execute("SET parquet_metadata_cache = true")
                pred_cols = describe(con, files, "predictions", hive=False)
                rowid_type = _prediction_columns(pred_cols, q.rowid_column)
            else:
                pred_cols = {}
                rowid_type = q.info_types.get(q.rowid_column, "VARCHAR")
            info_type = q.info_types.get(q.rowid_column, rowid_type)
            if info_type != rowid_type and rowid_type not in _KEY_TYPES:
                raise UsageError(
                    f"the rowid column {q.rowid_column!r} is {rowid_type} in the predictions "
                    f"but {info_type} in the user info; make them match"
                )
            return _query(con, files, pred_cols, rowid_type, q)
        except (duckdb.Error, RuntimeFailure) as exc:
            if attempt < _ATTEMPTS and any(not os.path.exists(f) for f in files):
                continue
            if isinstance(exc, RuntimeFailure):
                raise
            raise RuntimeFailure(f"cannot read the predictions: {first_line(exc)}") from exc
    raise AssertionError("unreachable: the last attempt returns or raises")


def format_for(fmt: str | None, output: str | None, terminal: bool) -> str:
    """The output format: the one asked for, else the file's extension, else table/CSV."""
    if fmt is not None and fmt != "":
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        chosen = fmt
    elif output is not None and output != "-":
        suffix = Path(output).suffix.lower()
        if suffix not in EXTENSIONS:
            raise UsageError(
                f"cannot tell the format of {output!r} from its extension; "
                "use .csv, .json, .jsonl or .parquet, or give --format"
            )
        chosen = EXTENSIONS[suffix]
    else:
        chosen = "table" if terminal else "csv"
    if chosen == "parquet" and (output is None or output == "-"):
        raise UsageError("Parquet cannot go to stdout; give -o FILE.parquet or another --format")
    return chosen


def _plain(value: Any) -> Any:
    """A JSON-ready value: ISO strings for times, null for NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


def to_text(table: pa.Table, fmt: str) -> str:
    """The table as CSV (header always), a JSON array, or JSON lines."""
    if fmt == "csv":
        buf = io.BytesIO()
        try:
            pacsv.write_csv(table, buf)
        except pa.ArrowException as exc:
            raise UsageError(
                f"a column cannot be written as CSV ({first_line(exc)}); "
                "pick others with --columns or use --format json"
            ) from exc
        return buf.getvalue().decode("utf-8")
    if fmt == "json":
        return json.dumps(_rows(table), ensure_ascii=False) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _rows(table))
    raise UsageError(f"format {fmt!r} is not a text format; use csv, json or jsonl")


def write_parquet(table: pa.Table, output: str) -> None:
    """The table as a Parquet file, whole or not at all (see mbp.output)."""
    write_file(output, lambda f: pq.write_table(table, f))
