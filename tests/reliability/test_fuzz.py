"""Property-based: whatever the filter text and whatever the column types and nulls of the
sessions and feature tables, mbp works (and is right) or exits with a documented code and one
`mbp: error:` line. The runner re-raises any exception, so a traceback fails the test."""

from __future__ import annotations

import json
import math
import re
import tempfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cases import case
from harness import NEW, iso, one_line_error, predict_args
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from models import Models

DOCUMENTED = {0, 1, 2, 75, 130}
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check_failure(code: int, stdout: str, stderr: str) -> None:
    event(f"exit {code}")
    assert code in DOCUMENTED, (code, stderr)
    if code != 0:
        assert stdout == ""
        assert one_line_error(stderr), stderr


def quoted(ids: list[str]) -> str:
    return ",".join("'" + i.replace("'", "''") + "'" for i in ids)


def written_ids(out: Path) -> list:
    files = sorted(out.rglob("*.parquet")) if out.exists() else []
    return [v for f in files for v in pq.read_table(f)["userid"].to_pylist()]


def feature_table(ids: list) -> pa.Table:
    n = len(ids)
    return pa.table({"userid": ids, "f0": [0.1] * n, "f1": [0.2] * n, "f2": [0.3] * n})


# --- the filter ----------------------------------------------------------------------------

# Text made of the characters that matter to a list parser, plus any text at all.
FILTER_TEXT = st.one_of(
    st.text(alphabet="'\",\n\r\t ;-()=*/\\abc019_.:@+é用", max_size=40),
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["'a'", "'b''c'", "u1", ",", "\n", " ", "'", "--", "OR 1=1", ")"])
    ).map("".join),
)


@FUZZ
@given(text=FILTER_TEXT)
@case("fuzz-filter-text")
def test_any_filter_text(mbp, models: Models, text: str) -> None:
    table_ids = ["a", "b'c", "u1", "1", "é", "用"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.parquet"
        pq.write_table(feature_table(table_ids), src)
        out = Path(tmp) / "out"
        code, stdout, stderr = mbp(
            *predict_args(models["tensor"], src, out, NEW, "--rowid-filter", "-"), input=text
        )
        check_failure(code, stdout, stderr)
        if code == 2:
            assert re.match(r"mbp: error: bad --rowid-filter at character \d+ ", stderr), stderr
            assert not out.exists()
        else:
            assert code == 0, stderr
            for rowid in written_ids(out):
                assert rowid in table_ids
                assert rowid in text or rowid.replace("'", "''") in text


@FUZZ
@given(
    ids=st.lists(st.text(max_size=8), max_size=12, unique=True),
    present=st.lists(st.booleans(), min_size=12, max_size=12),
)
@case("fuzz-filter-roundtrip")
def test_any_ids_round_trip(mbp, models: Models, ids: list[str], present: list[bool]) -> None:
    in_table = [i for i, p in zip(ids, present, strict=False) if p] + ["zz-other"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.parquet"
        pq.write_table(feature_table(in_table), src)
        out = Path(tmp) / "out"
        code, stdout, stderr = mbp(
            *predict_args(models["tensor"], src, out, NEW, "--rowid-filter", "-"),
            input=quoted(ids),
        )
        assert code == 0, stderr
        assert sorted(written_ids(out)) == sorted(set(ids) & set(in_table))


# --- sessions tables -----------------------------------------------------------------------

START = NEW - timedelta(minutes=5)
ID_TYPES = ["int32", "int64", "string", "float64", "bool", "date32", "binary", "null"]
TIME_TYPES = ["s", "ms", "int32", "timestamp_s", "timestamp_us_utc", "timestamp_naive",
              "date32", "string", "float64", "null"]  # fmt: skip


def _id_value(kind: str, i: int) -> object:
    return {
        "int32": i, "int64": i * 1_000_000_007, "string": f"id'{i}", "float64": i + 0.5,
        "bool": i % 2 == 0, "date32": date(2026, 1, 1) + timedelta(days=i), "binary": b"x%d" % i,
    }[kind]  # fmt: skip


def _time_value(kind: str, offset: int) -> object:
    instant = START + timedelta(seconds=offset)
    seconds = int(instant.timestamp())
    return {
        "s": seconds, "ms": seconds * 1000, "int32": seconds, "timestamp_s": instant,
        "timestamp_us_utc": instant, "timestamp_naive": instant.replace(tzinfo=None),
        "date32": instant.date(), "string": instant.isoformat(), "float64": float(seconds),
    }[kind]  # fmt: skip


ARROW = {
    "int32": pa.int32(), "int64": pa.int64(), "string": pa.string(), "float64": pa.float64(),
    "bool": pa.bool_(), "date32": pa.date32(), "binary": pa.binary(), "null": pa.null(),
    "s": pa.int64(), "ms": pa.int64(), "timestamp_s": pa.timestamp("s"),
    "timestamp_us_utc": pa.timestamp("us", tz="UTC"), "timestamp_naive": pa.timestamp("us"),
}  # fmt: skip
USABLE_IDS = {"int32", "int64", "string"}
USABLE_TIMES = {"s", "ms", "int32", "timestamp_s", "timestamp_us_utc", "timestamp_naive"}


@FUZZ
@given(
    id_kind=st.sampled_from(ID_TYPES),
    time_kind=st.sampled_from(TIME_TYPES),
    rows=st.lists(
        st.tuples(st.integers(0, 6), st.integers(-400, 700), st.booleans(), st.booleans()),
        max_size=30,
    ),
)
@case("fuzz-sessions")
def test_sessions_of_any_types(mbp, id_kind: str, time_kind: str, rows: list) -> None:
    rows = [(i, s, null_id or id_kind == "null", null_t or time_kind == "null")
            for i, s, null_id, null_t in rows]  # fmt: skip
    ids = [None if null_id else _id_value(id_kind, i) for i, _, null_id, _ in rows]
    times = [None if null_t else _time_value(time_kind, s) for _, s, _, null_t in rows]
    t = pa.table(
        {
            "userid": pa.array(ids, ARROW[id_kind]),
            "time": pa.array(times, ARROW[time_kind]),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(t, Path(tmp) / "sessions.parquet")
        unit = ["--time-unit", "ms"] if time_kind == "ms" else []
        code, stdout, stderr = mbp(
            "list-users", "--sessions", str(Path(tmp) / "sessions.parquet"), "--window", "5m",
            "--scheduled-time", iso(NEW), "--timezone", "UTC", "--format", "json", *unit,
        )  # fmt: skip
    check_failure(code, stdout, stderr)
    if id_kind in USABLE_IDS and time_kind in USABLE_TIMES:
        assert code == 0, stderr
        # By hand: the ids with an event at START <= time < START + 5 min.
        expected = {
            i
            for i, (_, s, null_id, null_t) in zip(ids, rows, strict=True)
            if not null_id and not null_t and 0 <= s < 300
        }
        assert sorted(json.loads(stdout), key=str) == sorted(expected, key=str)
    elif id_kind in USABLE_IDS:
        assert code == 2 and "the time column has type" in stderr, stderr
    else:
        assert code == 2, stderr
        assert "ids must be text or integers" in stderr or "the time column has type" in stderr


# --- feature tables ------------------------------------------------------------------------

FEATURE_TYPES = {
    "float64": pa.float64(), "float32": pa.float32(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "bool": pa.bool_(), "decimal": pa.decimal128(12, 3),
    "string": pa.string(), "date32": pa.date32(), "timestamp": pa.timestamp("us"),
}  # fmt: skip
NUMERIC = {"float64", "float32", "int32", "int64", "uint8", "bool", "decimal"}

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e3, 1e3),
    st.integers(0, 200),
)


def _feature_value(kind: str, v: float | int) -> object:
    if kind in ("float64", "float32"):
        return float(v)
    finite = v if isinstance(v, int) else int(max(-1e6, min(1e6, v))) if math.isfinite(v) else 7
    if kind == "int32" or kind == "int64":
        return finite
    if kind == "uint8":
        return abs(finite) % 256
    if kind == "bool":
        return finite % 2 == 1
    if kind == "decimal":
        return Decimal(finite) / 8
    if kind == "string":
        return str(v)
    if kind == "date32":
        return date(2026, 1, 1) + timedelta(days=abs(finite) % 1000)
    return datetime(2026, 1, 1) + timedelta(seconds=abs(finite))


@FUZZ
@given(
    kinds=st.lists(st.sampled_from(sorted(FEATURE_TYPES)), min_size=3, max_size=3),
    rows=st.lists(
        st.tuples(
            st.lists(VALUES, min_size=3, max_size=3),
            st.lists(st.booleans(), min_size=3, max_size=3),  # null?
            st.booleans(),  # null rowid?
        ),
        min_size=1,
        max_size=12,
    ),
    integer_ids=st.booleans(),
    fill=st.sampled_from([None, "0", "-1.5"]),
)
@case("fuzz-features")
def test_features_of_any_types(
    mbp, models: Models, kinds: list[str], rows: list, integer_ids: bool, fill: str | None
) -> None:
    features = ["f0", "f1", "f2"]
    ids = [None if null_id else (i if integer_ids else f"u{i}") for i, (_, _, null_id) in
           enumerate(rows)]  # fmt: skip
    columns: dict[str, pa.Array] = {"userid": pa.array(ids, pa.int64() if integer_ids else None)}
    cells: list[list[object]] = [[], [], []]
    for values, nulls, _ in rows:
        for j in range(3):
            cells[j].append(None if nulls[j] else _feature_value(kinds[j], values[j]))
    for j, name in enumerate(features):
        columns[name] = pa.array(cells[j], FEATURE_TYPES[kinds[j]])
    t = pa.table(columns)
    fill_args = ["--fill-null", fill] if fill is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.parquet"
        pq.write_table(t, src)
        out = Path(tmp) / "out"
        code, stdout, stderr = mbp(*predict_args(models["tensor"], src, out, NEW, *fill_args))
        check_failure(code, stdout, stderr)
        got = pq.read_table(out) if out.exists() else None
        if code != 0:
            assert got is None

    bad_type = [f for f, k in zip(features, kinds, strict=True) if k not in NUMERIC]
    if bad_type:
        assert code == 2 and f"column '{bad_type[0]}' has type" in stderr, stderr
        return
    # By hand: every row with a rowid is scored; nulls and NaN are filled or refused,
    # and a value float32 cannot hold is refused.
    scored = [r for r, rowid in enumerate(ids) if rowid is not None]
    x = np.empty((len(scored), 3), dtype=np.float64)
    missing = False
    for row, r in enumerate(scored):
        for j in range(3):
            value = cells[j][r]
            v = math.nan if value is None else float(value)  # type: ignore[arg-type]
            if math.isnan(v):
                missing = missing or fill is None
                v = float(fill) if fill is not None else v
            x[row, j] = v
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if missing or not np.isfinite(x32[~np.isnan(x32)]).all():
        assert code == 2 and re.search(r"for rowid .+; fix the input", stderr), stderr
        return
    assert code == 0, stderr
    if not scored:  # no row has a rowid: nothing to write
        assert got is None
        return
    assert got is not None and sorted(got["userid"].to_pylist(), key=str) == sorted(
        (ids[r] for r in scored), key=str
    )
    if scored:
        session = ort.InferenceSession(str(models["tensor"]), providers=["CPUExecutionProvider"])
        (probabilities,) = session.run(["probabilities"], {"X": x32})
        want = dict(zip([ids[r] for r in scored], probabilities[:, 1].tolist(), strict=True))
        for rowid, score in zip(got["userid"].to_pylist(), got["score"].to_pylist(), strict=True):
            assert score == pytest.approx(want[rowid], abs=1e-6), rowid
