"""`mbp rank` over batches whose files differ in their columns.

rank reads a dataset whose files share the first file's columns without unifying the
schemas (faster); these cases make it fall back to union_by_name, and the answer must
still be the one a hand-written DuckDB query over the unified files gives.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DEC = pa.decimal128(3, 2)
T0 = int(datetime(2026, 12, 3, 10, 0, tzinfo=UTC).timestamp())


def write_batch(root: Path, time: int, columns: dict[str, pa.Array]) -> None:
    stamp = datetime.fromtimestamp(time, UTC)
    folder = root / f"dt={stamp:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(columns["userid"])
    table = pa.table({**columns, "time": pa.array([time] * n, pa.int64())})
    pq.write_table(table, folder / f"part-{stamp:%Y%m%dT%H%M%S}.parquet")


def by_hand(root: Path, threshold: float = 0.5) -> list[tuple[str, float, str | None]]:
    """Latest score per user over the unified files, then the threshold, best first."""
    rows = duckdb.execute(
        f"""
        SELECT userid, score, model FROM (
            SELECT userid, score, time,
                   {"model" if has_model(root) else "NULL::VARCHAR AS model"}
            FROM read_parquet($g, union_by_name = true)
            QUALIFY row_number() OVER (PARTITION BY userid ORDER BY time DESC) = 1)
        WHERE score >= $t ORDER BY score DESC, userid
        """,
        {"g": f"{root}/**/*.parquet", "t": threshold},
    ).fetchall()
    return [(u, s, m) for u, s, m in rows]


def has_model(root: Path) -> bool:
    return any("model" in pq.read_schema(p).names for p in root.rglob("*.parquet"))


def ranked(mbp, root: Path, threshold: float = 0.5) -> list[tuple[str, float, str | None]]:  # type: ignore[no-untyped-def]
    code, out, err = mbp(
        "rank", "--predictions", str(root), "--format", "csv", "--threshold", str(threshold)
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    return [(r["userid"], float(r["score"]), r["model"] or None) for r in rows]


def ids(*values: str) -> pa.Array:
    return pa.array(values, pa.string())


def scores(*values: float) -> pa.Array:
    return pa.array(values, pa.float64())


def models(*values: str) -> pa.Array:
    return pa.array(values, pa.string())


def scored(userid: pa.Array, score: pa.Array, model: str) -> dict[str, pa.Array]:
    """The columns mbp predict writes (time is added by write_batch)."""
    n = len(userid)
    return {
        "userid": userid,
        "score": score,
        "model": models(*[model] * n),
        "model_version": models(*["v1"] * n),
    }


@pytest.mark.parametrize(
    "batches",
    [
        pytest.param(
            [
                {"userid": ids("a", "b"), "score": scores(0.9, 0.6)},
                scored(ids("a", "c"), scores(0.55, 0.8), "m"),
            ],
            id="first-file-lacks-model",
        ),
        pytest.param(
            [
                scored(ids("a", "b"), scores(0.9, 0.6), "m"),
                {"userid": ids("b", "c"), "score": scores(0.95, 0.7)},
            ],
            id="later-file-lacks-model",
        ),
        pytest.param(
            [
                scored(ids("a", "b"), scores(0.9, 0.6), "m"),
                {
                    "region": pa.array(["x", "y"]),
                    "model_version": models("v2", "v2"),
                    "model": models("n", "n"),
                    "score": scores(0.4, 0.8),
                    "userid": ids("a", "c"),
                },
            ],
            id="later-file-has-extra-column-other-order",
        ),
        pytest.param(
            [
                scored(ids("a", "b"), scores(0.9, 0.6), "m"),
                scored(ids("b", "c"), pa.array([0.75, 0.99], pa.float32()), "n"),
            ],
            id="later-file-float32-score",
        ),
        pytest.param(
            [
                scored(ids("a", "b"), scores(0.9, 0.6), "m"),
                scored(ids("b", "c"), scores(0.75, 0.99), "n"),
            ],
            id="same-columns",
        ),
        # Read with the first file's types, 0.70000001 would become float32 0.7 and
        # 0.123456789012345 lose its digits.
        pytest.param(
            [
                scored(ids("a", "b"), pa.array([0.5, 0.25], pa.float32()), "m"),
                scored(ids("c", "d", "e"), scores(0.70000001, 0.123456789012345, 0.6999999), "n"),
            ],
            id="first-file-float32-score",
        ),
        pytest.param(
            [
                scored(ids("a", "b"), pa.array([Decimal("0.50"), Decimal("0.90")], DEC), "m"),
                scored(ids("c", "d"), scores(0.496, 0.123456789012345), "n"),
            ],
            id="first-file-decimal-score",
        ),
        # Read as the first file's integers, a later text '012' would become user 12.
        pytest.param(
            [
                scored(pa.array([12, 5], pa.int64()), scores(0.9, 0.6), "m"),
                scored(ids("012", "5"), scores(0.8, 0.7), "n"),
            ],
            id="first-file-integer-ids-later-text",
        ),
    ],
)
def test_rank_over_files_with_different_columns(mbp, tmp_path: Path, batches) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "predictions"
    for i, columns in enumerate(batches):
        write_batch(root, T0 + 300 * i, columns)
    want = by_hand(root)
    got = ranked(mbp, root)
    assert [(u, m) for u, _, m in got] == [(u, m) for u, _, m in want]
    assert [s for _, s, _ in got] == [float(s) for _, s, _ in want]  # to the last digit
    assert got, "the case must rank someone, or it checks nothing"
    for limit in ("1", "0"):  # models read after ranking, and carried through it
        code, out, err = mbp("rank", "--predictions", str(root), "--threshold", "0.1",
                             "--limit", limit, "--format", "csv")  # fmt: skip
        assert code == 0, err
        rows = [(r["userid"], r["model"] or None) for r in csv.DictReader(io.StringIO(out))]
        assert rows == [(u, m) for u, _, m in by_hand(root, 0.1)][: int(limit) or None]


def test_rank_refuses_a_later_text_score(mbp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A later file whose score is text is not read as numbers: the unified schema's
    check names the column, as it does when the first file is the odd one."""
    root = tmp_path / "predictions"
    write_batch(root, T0, scored(ids("a"), scores(0.9), "m"))
    later = scored(ids("b"), scores(0.8), "m")
    write_batch(root, T0 + 300, {**later, "score": pa.array(["high"])})
    code, out, err = mbp("rank", "--predictions", str(root), "--format", "csv")
    assert code in (1, 2), err
    assert out == ""
    assert err.startswith("mbp: error: ") and "score" in err
    assert len(err.strip().splitlines()) == 1
