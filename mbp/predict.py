"""`predict`: score the input rows whose rowid is in the filter and write one batch.

The ids reach DuckDB as a registered Arrow table; DuckDB plans `IN (SELECT id ...)` as a
semi join and pushes the ids into the Parquet scan as a dynamic filter, so only matching
rows leave the scan. Rows stream through in batches of `batch_size`: memory stays bounded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from mbp import dataset, interrupts, rowids
from mbp import model as mdl
from mbp.errors import RuntimeFailure, UsageError
from mbp.sources import (
    describe,
    first_line,
    ident,
    parquet_files,
    require_column,
    require_in_every_file,
    scan_sql,
)

OUTPUT_COLUMNS = ("score", "time", "model", "model_version")
PARTITION = "dt"  # the hive key of the output folders, a column to every reader
DEFAULT_BATCH_SIZE = 65_536
READ_ROWS = 4_096  # the fewest rows read from DuckDB at a time (see _score_and_write)
MAX_BATCH_SIZE = 16_777_216  # memory grows with it; beyond this a batch is the whole table
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Plan:
    """Everything checked before a row is read: model, columns, query, output file."""

    model: mdl.Model
    scorer: mdl.Scorer
    feeds: list[mdl.Feed]
    files: list[str]
    rowid_column: str
    rowid_is_uuid: bool  # DuckDB's UUID reaches Arrow as text: the ids are cast in DuckDB
    columns: list[str]  # the columns the scan selects
    keep_columns: list[str]
    schema: pa.Schema  # of the output rows
    root: Path
    target: Path


# DuckDB's virtual columns: a real one of that name would hide the one `rank` relies on.
VIRTUAL = ("file_index", "file_row_number", "filename")


def _keep(keep: list[str], table: dict[str, str], rowid_column: str) -> list[str]:
    reserved = {rowid_column, *OUTPUT_COLUMNS, PARTITION, *VIRTUAL}
    for name in keep:
        require_column(table, name, "input table", "--keep-columns")
        if name in reserved:
            raise UsageError(
                f"--keep-columns {name!r} clashes with a name the output dataset reserves "
                f"({', '.join(sorted(reserved))}); drop it from --keep-columns"
            )
    return list(dict.fromkeys(keep))


def _select(columns: list[str]) -> str:
    return ", ".join(ident(c) for c in columns)


def _where(p: Plan, filtered: bool) -> str:
    rowid_column = p.rowid_column
    if filtered:
        ids = "CAST(id AS UUID)" if p.rowid_is_uuid else "id"
        return f"WHERE {ident(rowid_column)} IN (SELECT {ids} FROM mbp_ids)"
    # A score for no-one is of no use to `rank`.
    return f"WHERE {ident(rowid_column)} IS NOT NULL"


def _apart(input: str, output: str | Path, files: list[str] | None = None) -> None:
    """The output dataset must lie outside the input: inside, the next run would read the
    scores back as features (or, as another dataset's folders, fail)."""
    out = os.path.join(os.path.realpath(output), "")
    if files is None:
        if os.path.isdir(input) and out.startswith(os.path.join(os.path.realpath(input), "")):
            raise UsageError(
                f"--output {str(output)!r} is inside --input {input!r}, so later runs would "
                "read the predictions as input; put the output dataset beside the input folder"
            )
    elif any(os.path.realpath(f).startswith(out) for f in files):
        raise UsageError(
            f"--input {input!r} takes files from the --output dataset {str(output)!r}; "
            "point --input at the feature table only"
        )


def plan(
    con: duckdb.DuckDBPyConnection,
    loaded: mdl.Model,
    *,
    input: str,
    output: str | Path,
    scheduled: datetime,
    tz: tzinfo,
    rowid_column: str = "userid",
    features: list[str] | None = None,
    fill_null: str | None = None,
    score_output: str | None = None,
    score_class: str | None = None,
    keep_columns: list[str] | None = None,
) -> Plan:
    """Check the model against the input table's columns and types; no row is read."""
    _apart(input, output)
    files = parquet_files(input, "input")
    _apart(input, output, files)
    table = describe(con, files, "input")
    rowid_type = require_column(table, rowid_column, "input table", "--rowid-column")
    if rowid_column in (*OUTPUT_COLUMNS, PARTITION):
        raise UsageError(
            f"--rowid-column {rowid_column!r} is the name of an output column "
            f"({', '.join((*OUTPUT_COLUMNS, PARTITION))}); rename the id column in the input"
        )
    feeds = mdl.feeds(loaded, table, features)
    output_tensor = mdl.score_output(loaded, score_output)
    scorer = mdl.Scorer(
        loaded,
        feeds,
        output_tensor,
        score_class=score_class,
        fill_null=mdl.fill_value(fill_null, feeds),
        rowid_column=rowid_column,
    )
    keep = _keep(keep_columns or [], table, rowid_column)
    feature_columns = [c for f in feeds for c in f.columns]
    columns = list(dict.fromkeys([rowid_column, *feature_columns, *keep]))
    require_in_every_file(con, files, columns, "input", frozenset([rowid_column]))
    try:
        types = (
            con.sql(f"SELECT {_select(columns)} FROM {scan_sql()} LIMIT 0", params={"files": files})
            .to_arrow_table()
            .schema
        )
    except duckdb.Error as exc:
        raise RuntimeFailure(f"cannot read the input files: {first_line(exc)}") from exc
    schema = pa.schema(
        [
            types.field(rowid_column),
            pa.field("score", pa.float64()),
            pa.field("time", pa.int64()),
            pa.field("model", pa.string()),
            pa.field("model_version", pa.string()),
            *(types.field(c) for c in keep),
        ]
    )
    root = Path(output)
    target = dataset.batch_path(root, scheduled, tz)
    return Plan(
        loaded,
        scorer,
        feeds,
        files,
        rowid_column,
        rowid_type == "UUID",
        columns,
        keep,
        schema,
        root,
        target,
    )


def feature_mapping(p: Plan) -> list[dict[str, Any]]:
    """The model inputs and the columns that fill them, for reports."""
    return [
        {"input": f.input, "columns": list(f.columns), "type": _type_name(f.dtype)} for f in p.feeds
    ]


def _type_name(dtype: type) -> str:
    import numpy as np

    return "string" if dtype is np.object_ else np.dtype(dtype).name


def _register_ids(con: duckdb.DuckDBPyConnection, ids: list[str], p: Plan) -> int:
    if p.rowid_is_uuid:
        ids = _uuids(ids, p.rowid_column)
    arrow_type = p.schema.field(p.rowid_column).type
    values = rowids.to_arrow(ids, arrow_type, p.rowid_column)
    con.register("mbp_ids", pa.table({"id": values}))
    return len(values)


def _uuids(ids: list[str], column: str) -> list[str]:
    """The ids in DuckDB's UUID text form, each once; UsageError naming one that is not."""
    import uuid

    seen: dict[str, None] = {}
    for value in ids:
        try:
            seen[str(uuid.UUID(value))] = None
        except ValueError:
            raise UsageError(
                f"rowid {value!r} is not a UUID (the type of column {column!r}); check the filter"
            ) from None
    return list(seen)


def _batches(reader: pa.RecordBatchReader, size: int) -> Iterator[pa.RecordBatch]:
    """DuckDB's batches, merged up to `size` rows: a filtered scan emits many small ones,
    and each costs a model call and a Parquet row group."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        for start in range(0, batch.num_rows, size):  # the reader's batches may be larger
            piece = batch.slice(start, size)
            if pending and rows + piece.num_rows > size:
                yield pa.concat_batches(pending)
                pending, rows = [], 0
            if piece.num_rows == size:
                yield piece
            else:
                pending.append(piece)
                rows += piece.num_rows
    if pending:
        yield pa.concat_batches(pending)


def _stream(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """DuckDB's batches. A file found corrupt mid-scan fails here, and the error crosses the
    Arrow stream as a pyarrow OSError, not as a duckdb.Error."""
    try:
        yield from reader
    except (duckdb.Error, OSError, pa.ArrowException) as exc:
        raise RuntimeFailure(f"cannot read the input files: {first_line(exc)}") from exc


def _distinct(con: duckdb.DuckDBPyConnection, values: pa.ChunkedArray) -> int:
    """The number of distinct values, counted by DuckDB (pyarrow.compute costs 35 ms to import)."""
    con.register("mbp_matched", pa.table({"id": values}))
    try:
        ((count,),) = con.execute("SELECT count(DISTINCT id) FROM mbp_matched").fetchall()
    finally:
        con.unregister("mbp_matched")
    return int(count)


def _total_rows(con: duckdb.DuckDBPyConnection, files: list[str]) -> int:
    ((total,),) = con.execute(
        "SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata($files)", {"files": files}
    ).fetchall()
    return int(total)


def _output_batch(p: Plan, batch: pa.RecordBatch, scores: Any, epoch: int) -> pa.RecordBatch:
    n = batch.num_rows
    arrays = [
        batch.column(p.rowid_column),
        pa.array(scores, pa.float64()),
        pa.repeat(pa.scalar(epoch, pa.int64()), n),
        pa.repeat(pa.scalar(p.model.name, pa.string()), n),
        pa.repeat(pa.scalar(p.model.version, pa.string()), n),
        *(batch.column(c) for c in p.keep_columns),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=p.schema)


def run(
    *,
    model: str,
    input: str,
    output: str | Path,
    scheduled: datetime,
    tz: tzinfo,
    ids: list[str] | None = None,
    models_dir: str | Path = "models",
    rowid_column: str = "userid",
    features: list[str] | None = None,
    fill_null: str | None = None,
    score_output: str | None = None,
    score_class: str | None = None,
    keep_columns: list[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output_mode: str = "append",
    lock_timeout: float = 0.0,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score the rows whose rowid is in `ids` (every row when None) and write the batch.

    Returns the summary: ids given, rows matched, ids with no input row, rows written,
    the output file (None when no row matched: then nothing is written) and seconds per stage.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise UsageError(
            f"--batch-size must be between 1 and {MAX_BATCH_SIZE:,} rows, got {batch_size}"
        )
    if output_mode not in ("append", "overwrite"):
        raise UsageError(f"--output-mode {output_mode!r} is not one of append, overwrite")
    if not lock_timeout >= 0:  # NaN too: it would wait for ever
        raise UsageError(f"--lock-timeout must be zero or more seconds, got {lock_timeout}")
    started = time.perf_counter()
    loaded = mdl.load(mdl.resolve(model, models_dir))
    interrupts.check()  # a signal while onnxruntime loaded: stop before the scan
    model_loaded = time.perf_counter()
    con = duckdb.connect()
    p = plan(
        con,
        loaded,
        input=input,
        output=output,
        scheduled=scheduled,
        tz=tz,
        rowid_column=rowid_column,
        features=features,
        fill_null=fill_null,
        score_output=score_output,
        score_class=score_class,
        keep_columns=keep_columns,
    )
    summary: dict[str, Any] = {
        "model": p.model.name,
        "model_version": p.model.version,
        "model_path": str(p.model.path),
        "ids_given": None,
        "rows_matched": 0,
        "ids_without_row": None,
        "rows_written": 0,
        "output": None,
        "dry_run": dry_run,
        "scheduled_time": int(scheduled.timestamp()),
        "seconds": {
            "model_load": round(model_loaded - started, 3),
            "prepare": 0.0,
            "scan_score": 0.0,
            "write": 0.0,
        },
    }
    if ids is not None:
        summary["ids_given"] = _register_ids(con, ids, p)
        summary["ids_without_row"] = summary["ids_given"]
    prepared = time.perf_counter()
    summary["seconds"]["prepare"] = round(prepared - model_loaded, 3)
    if ids is not None and summary["ids_given"] == 0:
        return summary  # an empty filter scores nothing and writes nothing
    sql = f"SELECT {_select(p.columns)} FROM {scan_sql()} {_where(p, ids is not None)}"
    if dry_run:
        return _dry_run(con, p, sql, ids is not None, summary, prepared)
    _score_and_write(
        con,
        p,
        sql,
        summary,
        filtered=ids is not None,
        batch_size=batch_size,
        output_mode=output_mode,
        lock_timeout=lock_timeout,
        scheduled=scheduled,
        progress=progress,
        started=prepared,
    )
    return summary


def _score_and_write(
    con: duckdb.DuckDBPyConnection,
    p: Plan,
    sql: str,
    summary: dict[str, Any],
    *,
    filtered: bool,
    batch_size: int,
    output_mode: str,
    lock_timeout: float,
    scheduled: datetime,
    progress: Progress | None,
    started: float,
) -> None:
    epoch = int(scheduled.timestamp())
    total = _total_rows(con, p.files) if progress is not None and not filtered else 0
    matched: list[pa.Array] = []
    rows = 0
    writing = 0.0
    with (
        dataset.DatasetLock(p.root, lock_timeout),
        dataset.BatchWriter(p.root, p.target, p.schema, output_mode) as writer,
    ):
        try:
            # DuckDB's Arrow stream keeps about 2.4 KB for every batch it hands out until it
            # closes (1.2 GB for 500,000 batches of one row): it reads at least READ_ROWS.
            reader = con.sql(sql, params={"files": p.files}).to_arrow_reader(
                max(batch_size, READ_ROWS)
            )
            for batch in _batches(_stream(reader), batch_size):
                scores = p.scorer.score(batch)
                out = _output_batch(p, batch, scores, epoch)
                t = time.perf_counter()
                writer.write(out)
                writing += time.perf_counter() - t
                rows += batch.num_rows
                if filtered:
                    matched.append(batch.column(p.rowid_column))
                if progress is not None:
                    progress(rows, max(total, rows))
        except duckdb.Error as exc:
            raise RuntimeFailure(f"cannot read the input files: {first_line(exc)}") from exc
        # No row matched: write nothing, as for an empty filter. A retry whose ids match
        # nothing must not replace a good earlier file of this batch with an empty one.
        if rows:
            t = time.perf_counter()
            summary["rows_written"] = writer.commit()
            writing += time.perf_counter() - t
    summary["rows_matched"] = rows
    if filtered:
        found = _distinct(con, pa.chunked_array(matched, p.schema.field(0).type))
        summary["ids_without_row"] = summary["ids_given"] - found
    summary["output"] = str(p.target) if rows else None
    summary["seconds"]["scan_score"] = round(time.perf_counter() - started - writing, 3)
    summary["seconds"]["write"] = round(writing, 3)


def _dry_run(
    con: duckdb.DuckDBPyConnection,
    p: Plan,
    sql: str,
    filtered: bool,
    summary: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Count the matching rows with DuckDB's profiler on, and report the scan's filters."""
    rowid = ident(p.rowid_column)
    count_sql = f"SELECT count(*), count(DISTINCT {rowid}) FROM {scan_sql()} {_where(p, filtered)}"
    try:
        con.execute("SET enable_profiling = 'no_output'")
        ((matched, distinct),) = con.execute(count_sql, {"files": p.files}).fetchall()
        profile = json.loads(con.get_profiling_information(format="json"))
        con.disable_profiling()
    except duckdb.Error as exc:
        raise RuntimeFailure(f"cannot read the input files: {first_line(exc)}") from exc
    summary["rows_matched"] = matched
    if filtered:
        summary["ids_without_row"] = summary["ids_given"] - distinct
    summary["output"] = str(p.target)
    summary["features"] = feature_mapping(p)
    summary["query"] = sql.replace(scan_sql(), "read_parquet(<files>)")
    summary["plan"] = scan_filters(profile)
    summary["seconds"]["scan_score"] = round(time.perf_counter() - started, 3)
    return summary


def scan_filters(profile: dict[str, Any]) -> list[str]:
    """One line per Parquet scan in a DuckDB JSON profile: its filters and pruning."""
    lines: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        info = node.get("extra_info") or {}
        if info.get("Function") == "READ_PARQUET":
            parts = ["READ_PARQUET"]
            for key in ("Filters", "Dynamic Filters"):
                if key in info:
                    value = " ".join(str(info[key]).split())
                    if len(value) > 160:
                        value = value[:157] + "..."
                    parts.append(f"{key}: {value}")
            if "total_row_groups_to_scan" in node:
                groups = f"{node.get('row_groups_scanned')} / {node['total_row_groups_to_scan']}"
                parts.append(f"row groups scanned: {groups}")
            if "rows_scanned" in node:
                parts.append(f"rows scanned: {node['rows_scanned']}")
            lines.append("; ".join(parts))
        for child in [*node.get("children", []), *node.get("operator", [])]:
            walk(child)

    walk(profile)
    return lines
