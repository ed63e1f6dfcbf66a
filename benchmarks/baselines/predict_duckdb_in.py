"""Baseline (b), the seed's recipe taken literally: the id list pasted into
`WHERE userid IN (...)`, then onnxruntime and a pyarrow write."""

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--input", required=True)
p.add_argument("--ids", required=True, help="file of ids in list-users' quoted format")
p.add_argument("--output", required=True)
p.add_argument("--scheduled-time", required=True, help="epoch seconds")
args = p.parse_args()

sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
meta = sess.get_modelmeta()
features = json.loads(meta.custom_metadata_map["features"])
id_list = Path(args.ids).read_text().strip()  # 'u1','u2',... exactly as list-users prints it
sql = f"SELECT userid, {', '.join(features)} FROM '{args.input}' WHERE userid IN ({id_list})"
table = duckdb.sql(sql).to_arrow_table()

x = np.column_stack([table.column(f).to_numpy() for f in features]).astype(np.float32)
prob = sess.run(["probabilities"], {sess.get_inputs()[0].name: x})[0][:, 1]
n = table.num_rows
when = datetime.fromtimestamp(int(args.scheduled_time), UTC)
out = Path(args.output) / f"dt={when:%Y-%m-%d}" / f"part-{when:%Y%m%dT%H%M%S}.parquet"
out.parent.mkdir(parents=True, exist_ok=True)
pq.write_table(
    pa.table(
        {
            "userid": table.column("userid"),
            "score": pa.array(prob.astype(np.float64)),
            "time": pa.array(np.full(n, int(args.scheduled_time), dtype=np.int64)),
            "model": pa.array(["bench"] * n, pa.string()),
            "model_version": pa.array([meta.custom_metadata_map.get("version", "")] * n),
        }
    ),
    out,
)
