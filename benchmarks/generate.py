"""Synthetic benchmark data for mbp, seeded and cached in a scratch directory.

Makes, for a scale and seed:
  features-n<N>-s<seed>.parquet   N users (userid VARCHAR 'u00000042', sorted), f00..f19 DOUBLE,
                                  row groups of 122,880 rows; also one of 5N rows
  sessions-n<N>-d<days>-s<seed>.parquet  a time-ordered session log (userid, time epoch s,
                                  event), N events a day, over 1 and 10 days ending at END
  tiny-sessions.parquet           100 events, for start-up measurements
  model-s<seed>.onnx              GradientBoostingClassifier, 200 trees, on f00..f09, one
                                  float input, no ZipMap, metadata `features` = the 10 names
  ids-n<N>-k<K>-s<seed>.txt       K ids sampled from the table, in list-users' quoted format
  predictions-f<F>-u<U>-n<N>-s<seed>/dt=YYYY-MM-DD/part-YYYYMMDDTHHMMSS.parquet
                                  F five-minute batches of U scored users (predict's layout)

Each artifact is written under a temporary name and renamed, and reused when it exists, so
an interrupted run never leaves a half-made file behind and a second run starts at once.
Hash-based values (DuckDB's hash of row number, seed and column) make the data the same on
every machine and independent of thread count.

    python benchmarks/generate.py --scale quick --dir /tmp/mbp-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np

N_FEATURES = 20
MODEL_FEATURES = [f"f{k:02d}" for k in range(10)]
ROW_GROUP = 122_880
BATCHES = 8_640  # a month of five-minute batches: 30 * 24 * 12
END = datetime(2026, 12, 1, tzinfo=UTC)  # the end of every generated history
SCALES = {"quick": 1_000_000, "full": 5_000_000}
K_VALUES = (1_000, 10_000, 100_000)
# 2^53: the top 53 bits of a 64-bit hash divided by this are uniform in [0, 1).
_UNIT = 9_007_199_254_740_992


@dataclass(frozen=True)
class Paths:
    """Everything one scale needs, by role."""

    n: int
    features: str
    features_5n: str
    sessions_short: str
    sessions_long: str
    tiny_sessions: str
    model: str
    ids: dict[int, str]
    ids_5n: str
    predictions: str
    predictions_users: int
    scheduled_time: str  # END, ISO-8601: where the session window and the batches end


def _uniform(seed: int, stream: int, var: str = "i") -> str:
    return f"(hash({var}, {seed}, {stream}) >> 11)::DOUBLE / {_UNIT}"


def _publish(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _copy(con: duckdb.DuckDBPyConnection, select: str, final: Path) -> None:
    tmp = final.with_name(f".{final.name}.tmp")
    con.execute(
        f"COPY ({select}) TO '{tmp}' (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP}, COMPRESSION zstd)"
    )
    _publish(tmp, final)


def userid_sql(expr: str) -> str:
    """SQL for the id of user number `expr`: 'u' and eight digits, so ids sort like numbers."""
    return f"'u' || lpad(({expr})::VARCHAR, 8, '0')"


def features(con: duckdb.DuckDBPyConnection, n: int, seed: int, final: Path) -> None:
    """N users sorted by userid, 20 float columns; f00..f09 drive the label."""
    cols = ", ".join(f"{_uniform(seed, k)} AS f{k:02d}" for k in range(N_FEATURES))
    _copy(con, f"SELECT {userid_sql('i')} AS userid, {cols} FROM range({n}) t(i)", final)


def sessions(con: duckdb.DuckDBPyConnection, n: int, days: int, seed: int, final: Path) -> None:
    """`n` events a day over `days` days ending at END, time-ordered, random users."""
    rows = n * days
    span = days * 86_400
    start = int(END.timestamp()) - span
    user = f"hash(i, {seed}, 101) % {n}"
    select = (
        f"SELECT {userid_sql(user)} AS userid, "
        f"{start} + (i * {span}) // {rows} AS time, "
        f"(hash(i, {seed}, 102) % 5)::INTEGER AS event "
        f"FROM range({rows}) t(i) ORDER BY i"
    )
    _copy(con, select, final)


def ids(n: int, k: int, seed: int, final: Path) -> None:
    """K distinct ids present in the table, in list-users' quoted format."""
    rng = np.random.default_rng([seed, k, n])
    picked = np.sort(rng.choice(n, size=k, replace=False))
    text = ",".join(f"'u{i:08d}'" for i in picked)
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_text(text + "\n")
    _publish(tmp, final)


def label(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A nonlinear target over f00..f09 with noise, so the trees have work to do."""
    signal = (
        2.0 * x[:, 0]
        + x[:, 1] * x[:, 2]
        + np.sin(6.0 * x[:, 3])
        - 1.5 * (x[:, 4] - 0.5) ** 2
        + 0.5 * x[:, 5] * (x[:, 6] > 0.5)
        + 0.3 * (x[:, 7] + x[:, 8] - x[:, 9])
    )
    noise = rng.normal(0.0, 0.3, size=len(x))
    return (signal + noise > np.median(signal)).astype(np.int64)


def model(seed: int, final: Path) -> None:
    """A 200-tree gradient-boosted classifier as ONNX, its feature names in the metadata."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng([seed, 7])
    x = rng.random((20_000, len(MODEL_FEATURES)))
    y = label(x, rng)
    clf = GradientBoostingClassifier(n_estimators=200, max_depth=3, random_state=seed)
    clf.fit(x.astype(np.float32), y)
    onx = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, len(MODEL_FEATURES)]))],
        options={id(clf): {"zipmap": False}},
        target_opset=17,
    )
    entry = onx.metadata_props.add()
    entry.key, entry.value = "features", json.dumps(MODEL_FEATURES)
    entry = onx.metadata_props.add()
    entry.key, entry.value = "version", f"bench-s{seed}"
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_bytes(onx.SerializeToString())
    _publish(tmp, final)


def predictions(n: int, users: int, seed: int, final: Path) -> None:
    """BATCHES five-minute batch files of `users` scored users each, ending at END."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng([seed, 11, n, users])
    first = int(END.timestamp()) - (BATCHES - 1) * 300
    for b in range(BATCHES):
        t = first + b * 300
        when = datetime.fromtimestamp(t, UTC)
        ids_ = np.sort(rng.choice(n, size=users, replace=False))
        table = pa.table(
            {
                "userid": pa.array([f"u{i:08d}" for i in ids_], pa.string()),
                "score": pa.array(rng.random(users), pa.float64()),
                "time": pa.array(np.full(users, t, dtype=np.int64)),
                "model": pa.array(["bench"] * users, pa.string()),
                "model_version": pa.array([f"bench-s{seed}"] * users, pa.string()),
            }
        )
        folder = tmp / f"dt={when:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"part-{when:%Y%m%dT%H%M%S}.parquet", compression="zstd")
    _publish(tmp, final)


def tiny_sessions(con: duckdb.DuckDBPyConnection, final: Path) -> None:
    end = int(END.timestamp())
    select = (
        f"SELECT {userid_sql('i % 37')} AS userid, {end} - 600 + i * 6 AS time FROM range(100) t(i)"
    )
    _copy(con, select, final)


def paths(root: Path, n: int, seed: int) -> Paths:
    users = max(100, n // 5_000)  # 200 a batch at N = 1M, 1,000 at N = 5M
    return Paths(
        n=n,
        features=str(root / f"features-n{n}-s{seed}.parquet"),
        features_5n=str(root / f"features-n{5 * n}-s{seed}.parquet"),
        sessions_short=str(root / f"sessions-n{n}-d1-s{seed}.parquet"),
        sessions_long=str(root / f"sessions-n{n}-d10-s{seed}.parquet"),
        tiny_sessions=str(root / "tiny-sessions.parquet"),
        model=str(root / f"model-s{seed}.onnx"),
        ids={k: str(root / f"ids-n{n}-k{k}-s{seed}.txt") for k in K_VALUES},
        ids_5n=str(root / f"ids-n{5 * n}-k10000-s{seed}.txt"),
        predictions=str(root / f"predictions-f{BATCHES}-u{users}-n{n}-s{seed}"),
        predictions_users=users,
        scheduled_time=END.isoformat().replace("+00:00", "Z"),
    )


def ensure(root: Path, n: int, seed: int, log=print) -> Paths:  # type: ignore[no-untyped-def]
    """Generate whatever is missing for N rows and `seed` under `root`; return the paths."""
    root.mkdir(parents=True, exist_ok=True)
    p = paths(root, n, seed)
    con = duckdb.connect()
    jobs = [
        (p.features, lambda f: features(con, n, seed, f)),
        (p.features_5n, lambda f: features(con, 5 * n, seed, f)),
        (p.sessions_short, lambda f: sessions(con, n, 1, seed, f)),
        (p.sessions_long, lambda f: sessions(con, n, 10, seed, f)),
        (p.tiny_sessions, lambda f: tiny_sessions(con, f)),
        (p.model, lambda f: model(seed, f)),
        *[(p.ids[k], lambda f, k=k: ids(n, k, seed, f)) for k in K_VALUES],
        (p.ids_5n, lambda f: ids(5 * n, 10_000, seed, f)),
        (p.predictions, lambda f: predictions(n, p.predictions_users, seed, f)),
    ]
    for target, make in jobs:
        final = Path(target)
        if final.exists():
            continue
        started = time.perf_counter()
        make(final)
        log(f"generated {final.name} in {time.perf_counter() - started:.1f} s")
    return p


def default_dir() -> Path:
    return Path(os.environ.get("BENCH_DIR") or "/tmp/mbp-bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="quick")
    parser.add_argument("--n", type=int, help="rows of the feature table (overrides --scale)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", type=Path, default=default_dir(), help="scratch directory")
    args = parser.parse_args(argv)
    n = args.n or SCALES[args.scale]
    p = ensure(args.dir, n, args.seed, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(asdict(p), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
