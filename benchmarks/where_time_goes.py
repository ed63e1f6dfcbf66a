"""Where a filtered predict's time goes as the feature table grows (N and 5N rows, K ids).

In one process, on the benchmark's data (made here if `make bench` has not made it yet):
DuckDB's filtered scan with only the rowid column, the same scan with the model's feature
columns too (the floor's query), and onnxruntime on the matched rows. Medians of a few runs; DuckDB's profile gives
the rows the Parquet scan emitted and the row groups it read.

    .venv/bin/python benchmarks/where_time_goes.py --scale full
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import onnxruntime as ort
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate  # noqa: E402


def median_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def scan_profile(con: duckdb.DuckDBPyConnection, sql: str, files: str) -> dict:
    con.execute("SET enable_profiling = 'no_output'")
    con.execute(sql, {"f": files}).fetchall()
    profile = json.loads(con.get_profiling_information(format="json"))
    con.disable_profiling()

    def find(node: dict) -> dict | None:
        if (node.get("extra_info") or {}).get("Function") == "READ_PARQUET":
            return node
        for child in [*node.get("children", []), *node.get("operator", [])]:
            if (hit := find(child)) is not None:
                return hit
        return None

    return find(profile) or {}


def measure(features: str, ids_file: str, model: str, repeats: int) -> dict[str, float | str]:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = json.loads(sess.get_modelmeta().custom_metadata_map["features"])
    text = Path(ids_file).read_text().strip()
    ids = pa.table({"userid": [s.strip().strip("'") for s in text.split(",") if s.strip()]})
    con = duckdb.connect()
    con.register("wanted", ids)
    where = "WHERE userid IN (SELECT userid FROM wanted)"
    only_ids = f"SELECT userid FROM read_parquet($f) {where}"
    cols = ", ".join(f'"{c}"' for c in names)
    full = f"SELECT userid, {cols} FROM read_parquet($f) {where}"
    table = con.sql(full, params={"f": features}).to_arrow_table()
    x = np.column_stack([table.column(c).to_numpy() for c in names]).astype(np.float32)
    scan = scan_profile(con, full, features)
    return {
        "rowid column only": median_time(
            lambda: con.sql(only_ids, params={"f": features}).to_arrow_table(), repeats
        ),
        "rowid + 10 features": median_time(
            lambda: con.sql(full, params={"f": features}).to_arrow_table(), repeats
        ),
        "onnxruntime on the matches": median_time(
            lambda: sess.run(None, {sess.get_inputs()[0].name: x}), repeats
        ),
        "rows the scan emitted": f"{scan.get('rows_scanned', 0):,}",
        "MB the scan read": f"{scan.get('bytes_scanned', 0) / 1e6:,.0f}",
        "row groups read": f"{scan.get('row_groups_scanned', '?')} / "
        f"{scan.get('total_row_groups_to_scan', '?')}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", choices=sorted(generate.SCALES), default=os.environ.get("BENCH_SCALE") or "quick"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", type=Path, default=generate.default_dir())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = generate.SCALES[args.scale]
    p = generate.ensure(args.dir.resolve(), n, args.seed, log=lambda m: print(m, file=sys.stderr))
    small = measure(p.features, p.ids[10_000], p.model, args.repeats)
    big = measure(p.features_5n, p.ids_5n, p.model, args.repeats)
    print(f"| K = 10,000 ids | N = {n:,} | 5N = {5 * n:,} | 5N / N |")
    print("|---|---:|---:|---:|")
    for key, value in small.items():
        other = big[key]
        if isinstance(value, float) and isinstance(other, float):
            print(f"| {key} | {value:.3f} s | {other:.3f} s | {other / value:.2f}x |")
        else:
            print(f"| {key} | {value} | {other} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
