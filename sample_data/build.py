"""Build the mbp sample data set from the real CDNOW purchase log.

Input: CDNOW_master.txt (23,570 customers who first bought at CDNOW in Q1 1997,
followed to 1998-06-30; 69,659 purchase rows; one header line, then
whitespace-separated `customer_id date number_of_cds dollar_value`).

Outputs (in --out, default: this script's folder):

  sessions.parquet       one event per purchase row: userid, time (epoch seconds of the
                         purchase date at 00:00 UTC; the data has no times of day),
                         cds, dollars. Sorted by time, userid; 8192-row row groups, zstd.
  features.parquet       one row per customer: float64 RFM-style features computed only
                         from purchases strictly before the cutoff 1997-10-01.
  models/ltv/1997-09.onnx
                         GradientBoostingClassifier (converted with skl2onnx) predicting
                         "spend in the 273 days after the cutoff is in the top quarter";
                         ordered feature names in metadata_props["features"] (JSON array).
  models/ltv/CURRENT     the current model version ("1997-09").
  user_info.parquet      userid, real first purchase date, and MADE-UP contact columns
                         (Customer NNNNN / customerNNNNN@example.com / 555-01xx-xxxx).

Deterministic: fixed seeds, stable sort orders. Rebuild from the repo root with
    .venv/bin/python sample_data/build.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
CUTOFF = "1997-10-01"  # features use purchases strictly before this date
HORIZON_DAYS = 273  # label window: 39 weeks from the cutoff (to 1998-06-30 inclusive)
MODEL_VERSION = "1997-09"
SEED = 42
FEATURES = [
    "recency_days", "frequency", "monetary", "tenure_days", "avg_order_value", "total_cds",
    "purchases_last_90d", "dollars_last_90d", "max_order_value", "mean_gap_days",
    "dollars_per_cd",
]


def load_purchases(con: duckdb.DuckDBPyConnection, source: Path) -> None:
    """Create table `purchases(userid, d, cds, dollars)`, skipping the header line."""
    con.execute(f"""
        CREATE TABLE purchases AS
        WITH raw AS (
            SELECT string_split_regex(trim(regexp_replace(line, '\\s+$', '')), '\\s+') AS p
            FROM read_csv('{source}', header = false, columns = {{'line': 'VARCHAR'}},
                          delim = '\\t', quote = '', escape = '', skip = 1)
        )
        SELECT p[1] AS userid, strptime(p[2], '%Y%m%d')::DATE AS d,
               p[3]::INTEGER AS cds, p[4]::DOUBLE AS dollars
        FROM raw
    """)


def write_parquet(table: pa.Table, path: Path, **kw) -> None:
    pq.write_table(table, path, compression="zstd", **kw)


def build_sessions(con, out: Path) -> pa.Table:
    schema = pa.schema([("userid", pa.string()), ("time", pa.int64()),
                        ("cds", pa.int32()), ("dollars", pa.float64())])
    t = con.sql("""
        SELECT userid, (d - DATE '1970-01-01')::BIGINT * 86400 AS time, cds, dollars
        FROM purchases ORDER BY time, userid, cds, dollars
    """).to_arrow_table().cast(schema)
    write_parquet(t, out / "sessions.parquet", row_group_size=8192)
    return t


def build_features(con, out: Path) -> pa.Table:
    # Per-day totals first: several rows on one day count as one order.
    cols = ",\n".join(f"coalesce({f}, 0)::DOUBLE AS {f}" for f in FEATURES)
    t = con.sql(f"""
        WITH days AS (
            SELECT userid, d, round(sum(dollars), 2) AS dollars, sum(cds) AS cds
            FROM purchases WHERE d < DATE '{CUTOFF}' GROUP BY userid, d
        ), agg AS (
            SELECT userid,
                   DATE '{CUTOFF}' - max(d) AS recency_days,
                   count(*) AS frequency,
                   round(sum(dollars), 2) AS monetary,
                   DATE '{CUTOFF}' - min(d) AS tenure_days,
                   sum(dollars) / count(*) AS avg_order_value,
                   sum(cds) AS total_cds,
                   count(*) FILTER (WHERE d >= DATE '{CUTOFF}' - 90) AS purchases_last_90d,
                   round(sum(dollars) FILTER (WHERE d >= DATE '{CUTOFF}' - 90), 2)
                       AS dollars_last_90d,
                   max(dollars) AS max_order_value,
                   CASE WHEN count(*) > 1 THEN (max(d) - min(d)) / (count(*) - 1) ELSE 0 END
                       AS mean_gap_days,
                   sum(dollars) / nullif(sum(cds), 0) AS dollars_per_cd
            FROM days GROUP BY userid
        )
        SELECT u.userid, {cols}
        FROM (SELECT DISTINCT userid FROM purchases) u LEFT JOIN agg USING (userid)
        ORDER BY u.userid
    """).to_arrow_table()
    t = t.cast(pa.schema([("userid", pa.string())] + [(f, pa.float64()) for f in FEATURES]))
    write_parquet(t, out / "features.parquet")
    return t


def build_labels(con) -> tuple[np.ndarray, float]:
    """Label 1 = post-cutoff spend > 0 and >= the 75th percentile over all customers."""
    t = con.sql(f"""
        SELECT userid, coalesce(sum(dollars) FILTER (WHERE d >= DATE '{CUTOFF}'
               AND d < DATE '{CUTOFF}' + {HORIZON_DAYS}), 0) AS post
        FROM purchases GROUP BY userid ORDER BY userid
    """).to_arrow_table()
    post = t["post"].to_numpy()
    p75 = float(np.percentile(post, 75))
    return ((post > 0) & (post >= p75)).astype(np.int64), p75


def build_model(features: pa.Table, y: np.ndarray, out: Path) -> dict:
    X = np.column_stack([features[f].to_numpy() for f in FEATURES]).astype(np.float32)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=SEED, stratify=y)
    clf = GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.1,
                                     random_state=SEED)
    clf.fit(X_tr, y_tr)

    model = to_onnx(clf, initial_types=[("float_input", FloatTensorType([None, len(FEATURES)]))],
                    options={id(clf): {"zipmap": False}},
                    target_opset={"": 17, "ai.onnx.ml": 3})
    # skl2onnx emits opset_import in hash-seed-dependent order; sort it for byte-stable output.
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
    onnx.helper.set_model_props(model, {
        "features": json.dumps(FEATURES),
        "description": (f"CDNOW LTV: P(spend in the {HORIZON_DAYS} days from {CUTOFF} is in the "
                        f"top quarter); features from purchases before {CUTOFF}. "
                        "Output 'probabilities'[:, 1]."),
    })
    model_dir = out / "models" / "ltv"
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / f"{MODEL_VERSION}.onnx"
    onnx.save(model, path)
    (model_dir / "CURRENT").write_text(MODEL_VERSION + "\n")

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert json.loads(sess.get_modelmeta().custom_metadata_map["features"]) == FEATURES
    probs = sess.run(["probabilities"], {"float_input": X_te})[0]
    auc_onnx = roc_auc_score(y_te, probs[:, 1])
    auc_skl = roc_auc_score(y_te, clf.predict_proba(X_te)[:, 1])
    assert abs(auc_onnx - auc_skl) < 1e-4, (auc_onnx, auc_skl)
    return {"path": path, "auc": auc_onnx, "auc_skl": auc_skl,
            "n_train": len(y_tr), "n_test": len(y_te)}


def build_user_info(con, out: Path) -> pa.Table:
    schema = pa.schema([("userid", pa.string()), ("first_purchase", pa.date32()),
                        ("user_name", pa.string()), ("user_email", pa.string()),
                        ("user_tel_no", pa.string())])
    # Contact columns are fabricated from the id: obviously fake, reserved 555 / example.com.
    t = con.sql("""
        SELECT userid, min(d) AS first_purchase,
               'Customer ' || userid AS user_name,
               'customer' || userid || '@example.com' AS user_email,
               '555-01' || substr(lpad(userid, 6, '0'), 1, 2) || '-'
                        || substr(lpad(userid, 6, '0'), 3, 4) AS user_tel_no
        FROM purchases GROUP BY userid ORDER BY userid
    """).to_arrow_table().cast(schema)
    write_parquet(t, out / "user_info.parquet")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    con = duckdb.connect()
    load_purchases(con, args.source)
    sessions = build_sessions(con, args.out)
    features = build_features(con, args.out)
    users = build_user_info(con, args.out)
    y, p75 = build_labels(con)
    m = build_model(features, y, args.out)

    n_rg = pq.ParquetFile(args.out / "sessions.parquet").num_row_groups
    print(f"sessions.parquet:  {sessions.num_rows} rows, "
          f"{len(set(sessions['userid'].to_pylist()))} customers, {n_rg} row groups")
    print(f"features.parquet:  {features.num_rows} customers x {len(FEATURES)} features "
          f"(before {CUTOFF})")
    print(f"user_info.parquet: {users.num_rows} customers")
    print(f"label: post-cutoff {HORIZON_DAYS}-day spend > 0 and >= p75 (${p75:.2f}); "
          f"positive rate {y.mean():.4f} ({int(y.sum())}/{len(y)})")
    print(f"model: {m['path'].relative_to(args.out)} "
          f"(train {m['n_train']}, held-out {m['n_test']}, sklearn AUC {m['auc_skl']:.4f})")
    print(f"held-out ROC AUC: {m['auc']:.4f}")


if __name__ == "__main__":
    main()
