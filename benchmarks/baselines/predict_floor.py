"""Baseline (c), the floor: only the essential work of a filtered predict.

DuckDB scans the feature table joined with the ids registered as an Arrow table, one
onnxruntime run scores the matched rows, one pyarrow write stores them. Without --ids it
streams the whole table in batches (the nightly pattern), one row group per batch.
"""

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path


class _WithoutPandas:
    # pyarrow imports pandas, when installed, on the first array it builds (0.2 s): not
    # essential work, and mbp's command blocks it the same way.
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(name)


sys.meta_path.insert(0, _WithoutPandas())

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--input", required=True)
p.add_argument("--ids", help="file of ids in list-users' quoted format; none: score every row")
p.add_argument("--output", required=True)
p.add_argument("--scheduled-time", required=True, help="epoch seconds")
p.add_argument("--batch-size", type=int, default=65_536)
args = p.parse_args()

sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
meta = sess.get_modelmeta()
features = json.loads(meta.custom_metadata_map["features"])
version = meta.custom_metadata_map.get("version", "")
when = datetime.fromtimestamp(int(args.scheduled_time), UTC)
out = Path(args.output) / f"dt={when:%Y-%m-%d}" / f"part-{when:%Y%m%dT%H%M%S}.parquet"
out.parent.mkdir(parents=True, exist_ok=True)

con = duckdb.connect()
cols = ", ".join(f'"{f}"' for f in features)
if args.ids:
    text = Path(args.ids).read_text().strip()
    wanted = pa.table({"userid": [s.strip().strip("'") for s in text.split(",") if s.strip()]})
    con.register("wanted", wanted)
    sql = f"SELECT userid, {cols} FROM read_parquet($f) WHERE userid IN (SELECT userid FROM wanted)"
    table = con.sql(sql, params={"f": args.input}).to_arrow_table()
else:
    sql = f"SELECT userid, {cols} FROM read_parquet($f)"
    reader = con.sql(sql, params={"f": args.input}).to_arrow_reader(args.batch_size)


def scored(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    x = np.column_stack([batch.column(f).to_numpy() for f in features]).astype(np.float32)
    prob = sess.run(["probabilities"], {sess.get_inputs()[0].name: x})[0][:, 1]
    n = batch.num_rows
    return pa.table(
        {
            "userid": batch.column("userid"),
            "score": pa.array(prob.astype(np.float64)),
            "time": pa.array(np.full(n, int(args.scheduled_time), dtype=np.int64)),
            "model": pa.array(["bench"] * n, pa.string()),
            "model_version": pa.array([version] * n, pa.string()),
        }
    )


if args.ids:
    pq.write_table(scored(table), out)
else:
    writer = None
    for batch in reader:
        t = scored(batch)
        writer = writer or pq.ParquetWriter(out, t.schema)
        writer.write_table(t)
    if writer:
        writer.close()
