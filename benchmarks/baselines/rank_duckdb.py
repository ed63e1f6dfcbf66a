"""Baseline for rank: the query a user would write by hand over the predictions dataset.

Latest score per user, then the threshold, best first, the top 100 as CSV on stdout.
"""

import argparse
import csv
import sys

import duckdb

p = argparse.ArgumentParser()
p.add_argument("--predictions", required=True)
p.add_argument("--threshold", type=float, default=0.7)
p.add_argument("--limit", type=int, default=100)
args = p.parse_args()

rows = duckdb.execute(
    """
    SELECT userid, score, time, model, model_version FROM (
        SELECT * FROM read_parquet($glob, hive_partitioning = true)
        QUALIFY row_number() OVER (PARTITION BY userid ORDER BY time DESC) = 1
    )
    WHERE score >= $threshold
    ORDER BY score DESC, userid
    LIMIT $limit
    """,
    {"glob": f"{args.predictions}/**/*.parquet", "threshold": args.threshold, "limit": args.limit},
).fetchall()
out = csv.writer(sys.stdout, lineterminator="\n")
out.writerow(["userid", "score", "time", "model", "model_version"])
out.writerows(rows)
