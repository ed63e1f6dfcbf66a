"""Baseline (a), what a user would write instead: pandas reads the whole table, `isin`
picks the rows, onnxruntime scores them, `to_parquet` writes them."""

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

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
ids = [s.strip().strip("'") for s in Path(args.ids).read_text().strip().split(",")]

df = pd.read_parquet(args.input)
df = df[df["userid"].isin(ids)]
x = df[features].to_numpy(dtype=np.float32)
prob = sess.run(["probabilities"], {sess.get_inputs()[0].name: x})[0][:, 1]

out = pd.DataFrame(
    {
        "userid": df["userid"].to_numpy(),
        "score": prob.astype(np.float64),
        "time": np.int64(args.scheduled_time),
        "model": "bench",
        "model_version": meta.custom_metadata_map.get("version", ""),
    }
)
when = datetime.fromtimestamp(int(args.scheduled_time), UTC)
path = Path(args.output) / f"dt={when:%Y-%m-%d}" / f"part-{when:%Y%m%dT%H%M%S}.parquet"
path.parent.mkdir(parents=True, exist_ok=True)
out.to_parquet(path, index=False)
