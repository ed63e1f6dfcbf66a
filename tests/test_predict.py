"""`mbp predict` through the real CLI, checked against onnxruntime run directly on rows
selected by hand with pyarrow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from models import FEATURES, Models, build, table, write

SCHEDULED = "2026-12-03T10:05:00"
EPOCH = int(datetime(2026, 12, 3, 10, 5, tzinfo=UTC).timestamp())
BATCH_FILE = Path("dt=2026-12-03") / "part-20261203T100500.parquet"


@pytest.fixture(scope="session")
def models() -> Models:
    return build()


@pytest.fixture(scope="session")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(table(), tmp_path_factory.mktemp("input") / "features.parquet")


def predict(mbp, model: Path | str, features: Path, out: Path, *args: str, **kw):
    return mbp(
        "predict",
        "--model", str(model),
        "--input", str(features),
        "--output", str(out),
        "--scheduled-time", SCHEDULED,
        "--timezone", "UTC",
        *args,
        **kw,
    )  # fmt: skip


def quoted(ids: list[str]) -> str:
    return ",".join("'" + i.replace("'", "''") + "'" for i in ids)


def query(sql: str, **params: object) -> tuple:
    row = duckdb.connect().execute(sql, params).fetchone()
    assert row is not None
    return row


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet")) if root.exists() else []


# --- the independent computation -----------------------------------------------------


def rows_by_hand(t: pa.Table, column: str, ids: list) -> pa.Table:
    return t.filter(pc.is_in(t[column], value_set=pa.array(ids, t[column].type)))


def onnx_scores(model: Path, rows: pa.Table, kind: str) -> np.ndarray:
    """Scores computed directly with onnxruntime, the way each model kind is meant to be read."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    if kind == "columns":
        feed = {
            "f0": rows["f0"].to_numpy().astype(np.float32).reshape(-1, 1),
            "n": rows["n"].to_numpy().astype(np.float32).reshape(-1, 1),
            "city": rows["city"].to_numpy().astype(object).reshape(-1, 1),
        }
    else:
        x = np.column_stack([rows[f].to_numpy() for f in FEATURES]).astype(np.float32)
        feed = {sess.get_inputs()[0].name: x}
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))
    if kind == "regressor":
        return np.asarray(outputs["variable"]).reshape(-1).astype(np.float64)
    if kind in ("tensor", "columns", "nometa"):
        return np.asarray(outputs["probabilities"])[:, 1].astype(np.float64)
    if kind == "strlabels":
        return np.array([m["yes"] for m in outputs["output_probability"]])
    if kind == "lightgbm":
        return np.array([m[1] for m in outputs["probabilities"]])
    return np.array([m[1] for m in outputs["output_probability"]])  # zipmap, multiclass


def written(out: Path) -> pa.Table:
    files = parquet_files(out)
    assert files, f"no parquet file under {out}"
    return pa.concat_tables(pq.read_table(f) for f in files)


def assert_scores(out_table: pa.Table, expected_ids: list, expected: np.ndarray, column="userid"):
    got = dict(zip(out_table[column].to_pylist(), out_table["score"].to_pylist(), strict=True))
    assert sorted(got) == sorted(expected_ids)
    want = dict(zip(expected_ids, expected.tolist(), strict=True))
    for rowid, score in want.items():
        assert got[rowid] == pytest.approx(score, rel=1e-6, abs=1e-6), rowid


# --- scoring --------------------------------------------------------------------------


KINDS = ["zipmap", "tensor", "regressor", "columns", "strlabels", "lightgbm", "multiclass"]


@pytest.mark.parametrize("kind", KINDS)
def test_scores_match_onnxruntime(mbp, models, features, tmp_path, kind):
    t = pq.read_table(features)
    present = [f"u{i:05d}" for i in range(0, 600, 12)]
    missing = ["nobody", "u99999", "o'brien"]
    out = tmp_path / "out"
    code, stdout, stderr = predict(
        mbp, models[kind], features, out, "--rowid-filter", quoted(present + missing), "--json"
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["ids_given"] == len(present) + len(missing)
    assert summary["rows_matched"] == len(present)
    assert summary["ids_without_row"] == len(missing)
    assert summary["rows_written"] == len(present)
    assert summary["output"] == str(out / BATCH_FILE)
    assert parquet_files(out) == [out / BATCH_FILE]
    rows = rows_by_hand(t, "userid", present)
    assert_scores(written(out), rows["userid"].to_pylist(), onnx_scores(models[kind], rows, kind))


def test_output_schema_and_values(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    ids = ["u00001", "u00002", "u00003"]
    code, _, stderr = predict(
        mbp, models["tensor"], features, out, "--rowid-filter", quoted(ids),
        "--keep-columns", "region,n",
    )  # fmt: skip
    assert code == 0, stderr
    result = pq.read_table(out / BATCH_FILE)
    assert result.schema.names == [
        "userid",
        "score",
        "time",
        "model",
        "model_version",
        "region",
        "n",
    ]
    types = [f.type for f in result.schema]
    assert types == [
        pa.string(),
        pa.float64(),
        pa.int64(),
        pa.string(),
        pa.string(),
        pa.string(),
        pa.int32(),
    ]
    assert set(result["time"].to_pylist()) == {EPOCH}
    assert set(result["model"].to_pylist()) == {"tensor"}
    assert set(result["model_version"].to_pylist()) == {"7.1"}  # from the model's metadata
    source = rows_by_hand(pq.read_table(features), "userid", ids)
    by_id = {r["userid"]: r for r in source.to_pylist()}
    for row in result.to_pylist():
        assert row["region"] == by_id[row["userid"]]["region"]
        assert row["n"] == by_id[row["userid"]]["n"]
    # The dataset reads as one table through DuckDB, with the dt partition.
    count = query(
        "SELECT count(*), min(dt)::VARCHAR FROM read_parquet($files, hive_partitioning = true)",
        files=[str(p) for p in parquet_files(out)],
    )
    assert count == (3, "2026-12-03")


def test_partition_follows_the_timezone(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    code, _, stderr = mbp(
        "predict", "--model", str(models["tensor"]), "--input", str(features), "--output", str(out),
        "--rowid-filter", "'u00001'", "--scheduled-time", "2026-12-03T23:30:00+00:00",
        "--timezone", "Asia/Tokyo",
    )  # fmt: skip
    assert code == 0, stderr
    assert parquet_files(out) == [out / "dt=2026-12-04" / "part-20261204T083000.parquet"]
    epoch = int(datetime(2026, 12, 3, 23, 30, tzinfo=UTC).timestamp())
    assert pq.read_table(parquet_files(out)[0])["time"].to_pylist() == [epoch]


def test_default_scheduled_time_is_floored_to_the_interval(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    before = datetime.now(UTC).timestamp()
    code, stdout, stderr = mbp(
        "predict", "--model", str(models["tensor"]), "--input", str(features), "--output", str(out),
        "--rowid-filter", "'u00001'", "--interval", "1h", "--timezone", "UTC", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    t = pq.read_table(parquet_files(out)[0])["time"].to_pylist()[0]
    assert t % 3600 == 0 and before - 3600 < t <= before + 1
    assert json.loads(stdout)["scheduled_time"] == t


def test_integer_rowids(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    ids = [1000, 1005, 1599]
    code, stdout, stderr = predict(
        mbp, models["zipmap"], features, out, "--rowid-column", "uid",
        "--rowid-filter", "1000, 1005,1599,5000,1005", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["ids_given"], summary["rows_matched"], summary["ids_without_row"]) == (4, 3, 1)
    result = written(out)
    assert result.schema.field("uid").type == pa.int64()
    rows = rows_by_hand(pq.read_table(features), "uid", ids)
    assert_scores(
        result, rows["uid"].to_pylist(), onnx_scores(models["zipmap"], rows, "zipmap"), "uid"
    )


def test_quoted_integer_ids_are_cast(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = predict(
        mbp, models["zipmap"], features, out, "--rowid-column", "uid",
        "--rowid-filter", "'1000','1001'", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    assert sorted(written(out)["uid"].to_pylist()) == [1000, 1001]


def test_twenty_thousand_ids_from_stdin(mbp, models, tmp_path):
    big = write(table(24_000, seed=3), tmp_path / "big.parquet")
    rng = np.random.default_rng(9)
    present = [f"u{i:05d}" for i in rng.choice(24_000, size=15_000, replace=False)]
    absent = [f"x{i:05d}" for i in range(5_000)]
    ids = present + absent
    rng.shuffle(ids)
    out = tmp_path / "out"
    code, stdout, stderr = predict(
        mbp, models["tensor"], big, out, "--rowid-filter", "-", "--json", "--batch-size", "4096",
        input="\n".join(ids) + "\n",
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["ids_given"] == 20_000
    assert summary["rows_matched"] == 15_000
    assert summary["ids_without_row"] == 5_000
    rows = rows_by_hand(pq.read_table(big), "userid", present)
    assert_scores(
        written(out), rows["userid"].to_pylist(), onnx_scores(models["tensor"], rows, "tensor")
    )
    # Batches of 4,096 rows are gathered into row groups of 65,536 (here, the one).
    meta = pq.ParquetFile(out / BATCH_FILE).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [15_000]


def test_small_batches_are_gathered_into_large_row_groups(mbp, models, tmp_path):
    """A row group per --batch-size rows would cost the writer memory per group until it
    closes (a million one-row groups took 6 GB) and every reader time."""
    big = write(table(140_000, seed=4), tmp_path / "big.parquet")
    out = tmp_path / "out"
    code, _, stderr = predict(mbp, models["tensor"], big, out, "--batch-size", "1000", "-q")
    assert (code, stderr) == (0, "")
    meta = pq.ParquetFile(out / BATCH_FILE).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(groups) == 140_000 and len(groups) == 3 and min(groups[:-1]) >= 65_536
    ids = pq.read_table(big)["userid"].to_pylist()
    assert sorted(written(out)["userid"].to_pylist()) == sorted(ids)


def test_filter_from_a_file(mbp, models, features, tmp_path):
    listing = tmp_path / "ids.txt"
    listing.write_text("'u00004','u00005'\n")
    out = tmp_path / "out"
    code, _, stderr = predict(mbp, models["tensor"], features, out, "--rowid-filter", f"@{listing}")
    assert code == 0, stderr
    assert sorted(written(out)["userid"].to_pylist()) == ["u00004", "u00005"]


def test_no_filter_scores_every_row(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = predict(
        mbp, models["regressor"], features, out, "--batch-size", "100", "--json"
    )
    assert code == 0, stderr
    t = pq.read_table(features)
    assert json.loads(stdout)["rows_written"] == t.num_rows
    assert_scores(
        written(out), t["userid"].to_pylist(), onnx_scores(models["regressor"], t, "regressor")
    )


def test_empty_filter_writes_nothing(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = predict(mbp, models["tensor"], features, out, "--rowid-filter", "")
    assert (code, stdout) == (0, "")
    assert "nothing scored" in stderr
    assert not out.exists()


def test_ids_that_match_nothing_write_nothing(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = predict(
        mbp, models["tensor"], features, out, "--rowid-filter", "'nobody'", "--json"
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["rows_matched"], summary["ids_without_row"], summary["rows_written"]) == (
        0,
        1,
        0,
    )
    assert summary["output"] is None
    assert not out.exists()  # not even the dataset folder
    code, stdout, stderr = predict(mbp, models["tensor"], features, out, "--rowid-filter", "zz")
    assert (code, stdout) == (0, "")
    assert "no input row matched; nothing written" in stderr


@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_a_rerun_that_matches_nothing_keeps_the_batch(mbp, models, features, tmp_path, mode):
    out = tmp_path / "out"
    code, _, stderr = predict(mbp, models["tensor"], features, out, "--rowid-filter", "'u00001'")
    assert code == 0, stderr
    before = (out / BATCH_FILE).read_bytes()
    code, _, stderr = predict(
        mbp, models["tensor"], features, out, "--rowid-filter", "'nobody'", "--output-mode", mode
    )
    assert code == 0, stderr
    assert (out / BATCH_FILE).read_bytes() == before
    assert pq.read_table(out / BATCH_FILE)["userid"].to_pylist() == ["u00001"]


def test_summary_on_stderr_and_quiet(mbp, models, features, tmp_path):
    code, stdout, stderr = predict(
        mbp, models["tensor"], features, tmp_path / "a", "--rowid-filter", "'u00001','zz'"
    )
    assert (code, stdout) == (0, "")
    assert "2 ids given, 1 with no input row; 1 rows matched; 1 rows written to" in stderr
    assert "scan+score" in stderr
    code, stdout, stderr = predict(
        mbp, models["tensor"], features, tmp_path / "b", "--rowid-filter", "'u00001'", "-q"
    )
    assert (code, stdout, stderr) == (0, "", "")
    assert parquet_files(tmp_path / "b")


def test_score_class_and_output(mbp, models, features, tmp_path):
    t = pq.read_table(features)
    ids = ["u00010", "u00020", "u00030"]
    rows = rows_by_hand(t, "userid", ids)
    x = np.column_stack([rows[f].to_numpy() for f in FEATURES]).astype(np.float32)
    sess = ort.InferenceSession(str(models["multitensor"]), providers=["CPUExecutionProvider"])
    probs = sess.run(["probabilities"], {"X": x})[0]
    labels = sess.run(["label"], {"X": x})[0]
    ids_in_order = rows["userid"].to_pylist()

    out = tmp_path / "default"
    code, stdout, stderr = predict(
        mbp, models["multitensor"], features, out, "--rowid-filter", quoted(ids)
    )
    # Three classes and no labels in the tensor: which one is "positive" must be said.
    assert (code, stdout) == (2, "")
    assert "holds the probabilities of 3 classes but not their labels" in stderr
    assert "--score-class 0..2" in stderr
    assert not out.exists()

    out = tmp_path / "class1"
    code, _, stderr = predict(
        mbp, models["multitensor"], features, out, "--rowid-filter", quoted(ids),
        "--score-class", "1",
    )  # fmt: skip
    assert code == 0, stderr
    assert_scores(written(out), ids_in_order, probs[:, 1])  # as the ZipMap form's label 1

    out = tmp_path / "class0"
    code, _, stderr = predict(
        mbp,
        models["multitensor"],
        features,
        out,
        "--rowid-filter",
        quoted(ids),
        "--score-class",
        "0",
    )
    assert code == 0, stderr
    assert_scores(written(out), ids_in_order, probs[:, 0])

    out = tmp_path / "zipmap2"
    code, _, stderr = predict(
        mbp,
        models["multiclass"],
        features,
        out,
        "--rowid-filter",
        quoted(ids),
        "--score-class",
        "2",
    )
    assert code == 0, stderr
    zm = ort.InferenceSession(str(models["multiclass"]), providers=["CPUExecutionProvider"])
    maps = zm.run(["output_probability"], {"X": x})[0]
    assert_scores(written(out), ids_in_order, np.array([m[2] for m in maps]))

    out = tmp_path / "strno"
    code, _, stderr = predict(
        mbp,
        models["strlabels"],
        features,
        out,
        "--rowid-filter",
        quoted(ids),
        "--score-class",
        "no",
    )
    assert code == 0, stderr
    sl = ort.InferenceSession(str(models["strlabels"]), providers=["CPUExecutionProvider"])
    maps = sl.run(["output_probability"], {"X": x})[0]
    assert_scores(written(out), ids_in_order, np.array([m["no"] for m in maps]))

    out = tmp_path / "label"
    code, _, stderr = predict(
        mbp, models["multitensor"], features, out, "--rowid-filter", quoted(ids),
        "--score-output", "label",
    )  # fmt: skip
    assert code == 2
    assert "--score-output 'label' has type tensor(int64)" in stderr
    assert labels.shape == (3,)


def test_features_option_for_a_model_without_metadata(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    ids = ["u00001", "u00002"]
    code, _, stderr = predict(
        mbp,
        models["nometa"],
        features,
        out,
        "--rowid-filter",
        quoted(ids),
        "--features",
        "f0,f1,f2",
    )
    assert code == 0, stderr
    rows = rows_by_hand(pq.read_table(features), "userid", ids)
    assert_scores(
        written(out), rows["userid"].to_pylist(), onnx_scores(models["nometa"], rows, "nometa")
    )


def test_features_option_overrides_the_metadata(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    ids = ["u00001", "u00002"]
    code, _, stderr = predict(
        mbp,
        models["tensor"],
        features,
        out,
        "--rowid-filter",
        quoted(ids),
        "--features",
        "f2,f1,f0",
    )
    assert code == 0, stderr
    rows = rows_by_hand(pq.read_table(features), "userid", ids)
    x = np.column_stack([rows[f].to_numpy() for f in ["f2", "f1", "f0"]]).astype(np.float32)
    sess = ort.InferenceSession(str(models["tensor"]), providers=["CPUExecutionProvider"])
    assert_scores(
        written(out), rows["userid"].to_pylist(), sess.run(["probabilities"], {"X": x})[0][:, 1]
    )


def test_integer_and_bool_columns_feed_float_inputs(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    ids = ["u00001", "u00002", "u00003"]
    code, _, stderr = predict(
        mbp,
        models["nometa"],
        features,
        out,
        "--rowid-filter",
        quoted(ids),
        "--features",
        "n,flag,f0",
    )
    assert code == 0, stderr
    rows = rows_by_hand(pq.read_table(features), "userid", ids)
    x = np.column_stack(
        [rows["n"].to_numpy(), rows["flag"].to_numpy(zero_copy_only=False), rows["f0"].to_numpy()]
    ).astype(np.float32)
    sess = ort.InferenceSession(str(models["nometa"]), providers=["CPUExecutionProvider"])
    assert_scores(
        written(out), rows["userid"].to_pylist(), sess.run(["probabilities"], {"X": x})[0][:, 1]
    )


def test_fill_null_fills_nulls_and_nan(mbp, models, tmp_path):
    t = table(50)
    f1 = t["f1"].to_pylist()
    f1[3], f1[7] = None, float("nan")
    t = t.set_column(t.schema.get_field_index("f1"), "f1", pa.array(f1, pa.float64()))
    src = write(t, tmp_path / "nulls.parquet")
    out = tmp_path / "out"
    ids = ["u00003", "u00007", "u00008"]
    code, _, stderr = predict(
        mbp, models["tensor"], src, out, "--rowid-filter", quoted(ids), "--fill-null", "0.5"
    )
    assert code == 0, stderr
    rows = rows_by_hand(t, "userid", ids)
    x = np.column_stack([rows[f].to_numpy(zero_copy_only=False) for f in FEATURES]).astype(
        np.float32
    )
    x[np.isnan(x)] = 0.5
    sess = ort.InferenceSession(str(models["tensor"]), providers=["CPUExecutionProvider"])
    assert_scores(
        written(out), rows["userid"].to_pylist(), sess.run(["probabilities"], {"X": x})[0][:, 1]
    )


# --- the output dataset ---------------------------------------------------------------


def test_rerun_replaces_the_batch(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):
        code, _, stderr = predict(
            mbp, models["tensor"], features, out, "--rowid-filter", "'u00001','u00002'"
        )
        assert code == 0, stderr
    assert parquet_files(out) == [out / BATCH_FILE]
    assert query(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet')") == (2,)


def test_append_and_overwrite(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    for when in ("2026-12-03T10:00:00", "2026-12-03T10:05:00"):
        code, _, stderr = mbp(
            "predict", "--model", str(models["tensor"]), "--input", str(features),
            "--output", str(out), "--rowid-filter", "'u00001'", "--scheduled-time", when,
            "--timezone", "UTC",
        )  # fmt: skip
        assert code == 0, stderr
    assert len(parquet_files(out)) == 2
    code, _, stderr = mbp(
        "predict", "--model", str(models["tensor"]), "--input", str(features), "--output", str(out),
        "--rowid-filter", "'u00002','u00003'", "--scheduled-time", "2026-12-04T00:00:00",
        "--timezone", "UTC", "--output-mode", "overwrite",
    )  # fmt: skip
    assert code == 0, stderr
    assert parquet_files(out) == [out / "dt=2026-12-04" / "part-20261204T000000.parquet"]
    assert sorted(written(out)["userid"].to_pylist()) == ["u00002", "u00003"]


def test_lock_held_by_another_process(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from mbp.dataset import DatasetLock\n"
         f"with DatasetLock(Path({str(out)!r})):\n"
         "    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, stdout, stderr = predict(
            mbp, models["tensor"], features, out, "--rowid-filter", "'u00001'"
        )
        assert code == 75
        assert stdout == ""
        assert stderr.startswith("mbp: error: dataset ") and f"pid {holder.pid}" in stderr
        assert parquet_files(out) == []
    finally:
        holder.communicate("")
    code, _, stderr = predict(mbp, models["tensor"], features, out, "--rowid-filter", "'u00001'")
    assert code == 0, stderr


def test_dry_run_writes_nothing(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = predict(
        mbp,
        models["tensor"],
        features,
        out,
        "--rowid-filter",
        "'u00001','u00002','ghost'",
        "--dry-run",
    )
    assert (code, stdout) == (0, "")
    assert not out.exists()
    assert "3 ids given, 1 with no input row; 2 rows matched" in stderr
    assert "input X (float32) <- f0, f1, f2" in stderr
    assert str(out / BATCH_FILE) in stderr
    scan = [line for line in stderr.splitlines() if line.strip().startswith("scan: READ_PARQUET")]
    assert scan and "userid IN" in scan[0]

    code, stdout, _ = predict(
        mbp,
        models["tensor"],
        features,
        out,
        "--rowid-filter",
        "'u00001','ghost'",
        "--dry-run",
        "--json",
    )
    assert code == 0
    summary = json.loads(stdout)
    assert summary["dry_run"] is True
    assert (summary["ids_given"], summary["rows_matched"], summary["rows_written"]) == (2, 1, 0)
    assert summary["features"] == [{"input": "X", "columns": FEATURES, "type": "float32"}]
    assert not out.exists()


def test_real_pipeline_through_the_installed_script(models, features, tmp_path):
    """The shell is the real client: ids on stdin of the console script."""
    script = Path(sys.executable).parent / "mbp"
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBP_")}
    done = subprocess.run(
        [str(script), "predict", "--model", str(models["tensor"]), "--input", str(features),
         "--output", str(out), "--rowid-filter", "-", "--scheduled-time", SCHEDULED,
         "--timezone", "UTC", "--json"],
        input="'u00001','u00002'\n", capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows_written"] == 2
    assert done.stderr == ""  # --json: the summary went to stdout


def test_settings_from_config_and_env(mbp, models, features, tmp_path):
    (Path.cwd() / "mbp.toml").write_text(
        f'timezone = "UTC"\n[predict]\nmodel = "{models["tensor"]}"\ninput = "{features}"\n'
        f'output = "{tmp_path / "out"}"\n'
    )
    code, _, stderr = mbp(
        "predict", "--rowid-filter", "'u00001'", env={"MBP_SCHEDULED_TIME": SCHEDULED}
    )
    assert code == 0, stderr
    assert parquet_files(tmp_path / "out") == [tmp_path / "out" / BATCH_FILE]


# --- bad input: exit 2, nothing written ----------------------------------------------


def _with(t: pa.Table, name: str, values: list, typ: pa.DataType) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, pa.array(values, typ))


def _bad_tables() -> dict[str, pa.Table]:
    t = table(40)
    f1 = t["f1"].to_pylist()
    with_null = _with(t, "f1", [None if i == 5 else v for i, v in enumerate(f1)], pa.float64())
    with_nan = _with(
        t, "f1", [float("nan") if i == 6 else v for i, v in enumerate(f1)], pa.float64()
    )
    with_inf = _with(
        t, "f1", [float("inf") if i == 7 else v for i, v in enumerate(f1)], pa.float64()
    )
    city = t["city"].to_pylist()
    null_city = _with(t, "city", [None if i == 8 else v for i, v in enumerate(city)], pa.string())
    return {
        "missing": t.drop_columns(["f2"]),
        "varchar": _with(t, "f2", [str(v) for v in t["f2"].to_pylist()], pa.string()),
        "null": with_null,
        "nan": with_nan,
        "inf": with_inf,
        "nullcity": null_city,
        "named": t.append_column("time", t["userid"])
        .append_column("dt", t["userid"])
        .append_column("file_index", t["uid"]),
    }


BAD = [
    (
        "missing",
        "tensor",
        [],
        "no column 'f2' that the model needs (it has: userid, uid, f0, f1, n,",
    ),
    (
        "varchar",
        "tensor",
        [],
        "column 'f2' has type VARCHAR, which cannot be cast to the float32 input 'X'",
    ),
    ("null", "tensor", [], "column 'f1' has a null for rowid 'u00005'"),
    ("nan", "tensor", [], "column 'f1' has a NaN for rowid 'u00006'"),
    ("inf", "tensor", [], "column 'f1' has an infinite (or too large) value for rowid 'u00007'"),
    (
        "inf",
        "tensor",
        ["--fill-null", "0"],
        "column 'f1' has an infinite (or too large) value for rowid 'u00007'",
    ),
    ("nullcity", "columns", [], "column 'city' has a null for rowid 'u00008'"),
    ("ok", "nometa", [], "give them in order with --features a,b,c"),
    ("ok", "tensor", ["--features", "f0,f1"], "takes 3 columns but --features names 2"),
    (
        "ok",
        "columns",
        ["--features", "f0,n,city"],
        "--features applies to a model with one tensor input",
    ),
    ("ok", "tensor", ["--features", "f0,f1,city"], "column 'city' has type VARCHAR"),
    (
        "ok",
        "tensor",
        ["--rowid-filter", "'u00001',DROP TABLE x"],
        "bad --rowid-filter at character 15",
    ),
    ("ok", "tensor", ["--rowid-filter", "'u00001"], "a quote that does not close"),
    (
        "ok",
        "tensor",
        ["--rowid-column", "uid", "--rowid-filter", "1,2x"],
        "rowid '2x' cannot be read as int64",
    ),
    ("ok", "tensor", ["--rowid-column", "nope"], "has no column 'nope'"),
    (
        "ok",
        "tensor",
        ["--keep-columns", "userid"],
        "--keep-columns 'userid' clashes with a name the output dataset reserves",
    ),
    ("ok", "tensor", ["--keep-columns", "nope"], "has no column 'nope'"),
    # `dt` is the output's partition key: every reader would see that, not the column.
    ("named", "tensor", ["--keep-columns", "dt"], "--keep-columns 'dt' clashes"),
    ("named", "tensor", ["--keep-columns", "file_index"], "--keep-columns 'file_index' clashes"),
    *(
        ("named", "tensor", ["--rowid-column", name], f"--rowid-column {name!r} is the name of")
        for name in ("time", "dt")
    ),
    ("ok", "tensor", ["--score-output", "nope"], "the model has no output 'nope'"),
    (
        "ok",
        "tensor",
        ["--score-class", "yes"],
        "--score-class 'yes' is not a column index: output 'probabilities' has no class labels",
    ),
    ("ok", "tensor", ["--score-class", "2"], "--score-class '2' is out of range: "),
    (
        "ok",
        "zipmap",
        ["--score-class", "7"],
        "--score-class '7' is not a class of the model (classes: 0, 1)",
    ),
    ("ok", "regressor", ["--score-class", "1"], "holds one value per row"),
    ("ok", "tensor", ["--fill-null", "abc"], "--fill-null 'abc' cannot fill the float32 input 'X'"),
    *(
        ("ok", "tensor", ["--fill-null", v], f"--fill-null {v!r} cannot fill the float32 input")
        for v in ("nan", "inf", "-inf", "1e39")
    ),
    ("ok", "tensor", ["--batch-size", "0"], "--batch-size must be between 1 and 16,777,216"),
    ("ok", "tensor", ["--batch-size", "9" * 24], "--batch-size must be between 1 and"),
    ("ok", "tensor", ["--lock-timeout", "nan"], "--lock-timeout must be zero or more"),
    ("ok", "tensor", ["--lock-timeout", "-1"], "--lock-timeout must be zero or more"),
    ("ok", "tensor", ["--scheduled-time", "99999999999999"], "is not a time"),
    ("ok", "tensor", ["--scheduled-time", "0001-01-01T00:00:00"], "between the years 1970"),
    (
        "ok",
        "tensor",
        ["--scheduled-time", "9999-12-31T23:59:59", "--timezone", "Pacific/Kiritimati"],
        "between the years 1970 and 9000",
    ),
    ("ok", "tensor", ["--interval", "99999999d"], "--interval '99999999d' is longer than"),
    (
        "ok",
        "tensor",
        ["--output-mode", "replace"],
        "--output-mode 'replace' is not one of append, overwrite",
    ),
    ("ok", "tensor", ["--interval", "5x"], "--interval '5x' is not a duration"),
]


@pytest.mark.parametrize(("data", "kind", "args", "message"), BAD)
def test_bad_input_exits_2_writing_nothing(mbp, models, tmp_path, data, kind, args, message):
    src = write(_bad_tables().get(data, table(40)), tmp_path / "in.parquet")
    out = tmp_path / "out"
    if "--rowid-filter" not in args:
        args = [*args, "--rowid-filter", "'u00001','u00005','u00006','u00007','u00008'"]
    code, stdout, stderr = predict(mbp, models[kind], src, out, *args)
    assert code == 2, stderr
    assert stdout == ""
    assert stderr.startswith("mbp: error: ") and stderr.count("\n") == 1
    assert message in stderr
    assert not out.exists()


def test_bad_rows_without_a_filter_also_write_nothing(mbp, models, tmp_path):
    src = write(_bad_tables()["null"], tmp_path / "in.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("existing")
    code, _, stderr = predict(mbp, models["tensor"], src, out, "--batch-size", "2")
    assert code == 2
    assert "rowid 'u00005'" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("missing", ["--model", "--input", "--output"])
def test_required_options(mbp, models, features, tmp_path, missing):
    given = {
        "--model": str(models["tensor"]),
        "--input": str(features),
        "--output": str(tmp_path / "o"),
    }
    args = [a for k, v in given.items() if k != missing for a in (k, v)]
    code, _, stderr = mbp("predict", *args, "--rowid-filter", "'u00001'")
    assert code == 2
    assert f"{missing} is required" in stderr
    # The variable the message names is the one that works.
    env = re.search(r"as (MBP_\w+)", stderr)
    assert env is not None, stderr
    code, _, stderr = mbp(
        "predict", *args, "--rowid-filter", "'u00001'", "--scheduled-time", SCHEDULED,
        env={env[1]: given[missing]},
    )  # fmt: skip
    assert code == 0, stderr


def test_unknown_model_name(mbp, features, tmp_path):
    (tmp_path / "models" / "ltv").mkdir(parents=True)
    (tmp_path / "models" / "ltv" / "2026-01.onnx").write_bytes(b"")
    code, _, stderr = predict(
        mbp, "churn", features, tmp_path / "out", "--models-dir", str(tmp_path / "models"),
        "--rowid-filter", "'u00001'",
    )  # fmt: skip
    assert code == 2
    assert "no model 'churn'" in stderr and "models there: ltv" in stderr
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_onnx_exits_1(mbp, features, tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"this is not a model")
    code, _, stderr = predict(mbp, bogus, features, tmp_path / "out", "--rowid-filter", "'u00001'")
    assert code == 1
    assert "is not a valid ONNX model" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_help_has_an_example(mbp):
    code, stdout, _ = mbp("predict", "--help")
    assert code == 0
    assert "Example:" in stdout and "--rowid-filter" in stdout


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=30), st.integers(1, 50))
def test_batches_are_merged_and_split_to_the_batch_size(sizes, size):
    from mbp.predict import _batches

    batches, start = [], 0
    for n in sizes:
        batches.append(pa.record_batch({"v": pa.array(range(start, start + n), pa.int64())}))
        start += n
    # The reader's batches may be larger than the size (mbp reads at least READ_ROWS).
    reader = pa.RecordBatchReader.from_batches(pa.schema({"v": pa.int64()}), batches)
    merged = list(_batches(reader, size))
    assert all(0 < b.num_rows <= size for b in merged)
    assert [v for b in merged for v in b["v"].to_pylist()] == list(range(start))


def test_core_run_reports_progress_and_skips_rows_without_rowid(models, tmp_path):
    from mbp import predict as core

    t = table(300)
    t = _with(t, "userid", [None if i == 10 else v for i, v in enumerate(t["userid"].to_pylist())],
              pa.string())  # fmt: skip
    src = write(t, tmp_path / "in.parquet")
    calls: list[tuple[int, int]] = []
    summary = core.run(
        model=str(models["tensor"]),
        input=str(src),
        output=tmp_path / "out",
        scheduled=datetime(2026, 12, 3, 10, 5, tzinfo=UTC),
        tz=UTC,
        batch_size=64,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert summary["rows_written"] == 299  # a score for a null rowid would belong to no-one
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1][0] == 299
    assert all(total == 300 for _, total in calls)
    assert None not in written(tmp_path / "out")["userid"].to_pylist()


def test_progress_bar_on_a_terminal(mbp, models, features, tmp_path, monkeypatch):
    from mbp import cli

    monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: True)
    out = tmp_path / "out"
    code, stdout, stderr = predict(mbp, models["tensor"], features, out, "--batch-size", "50")
    assert (code, stdout) == (0, "")
    assert "600 rows written" in stderr
    assert written(out).num_rows == 600


def integer_model(path: Path, elem: int) -> Path:
    """One integer input `x` of shape [N], scored as itself: Cast to float."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["score"], to=TensorProto.FLOAT)],
        "ints",
        [helper.make_tensor_value_info("x", elem, [None])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("elem", "big", "name"),
    [(6, 3_000_000_000, "int32"), (7, 2**63 + 5, "int64")],  # TensorProto.INT32, INT64
)
def test_integers_that_do_not_fit_the_input_are_refused(mbp, tmp_path, elem, big, name):
    model = integer_model(tmp_path / "ints.onnx", elem)
    arrow = pa.uint64() if big >= 2**63 else pa.int64()
    features = write(
        pa.table({"userid": ["a", "b"], "x": pa.array([7, big], arrow)}), tmp_path / "f.parquet"
    )
    out = tmp_path / "out"
    code, stdout, stderr = predict(mbp, model, features, out)
    assert (code, stdout) == (2, "")
    assert stderr == (
        f"mbp: error: column 'x' has {big} for rowid 'b', which does not fit the model's "
        f"{name} input; fix the input\n"
    )
    assert not out.exists()
    # Values that fit are scored as onnxruntime scores them.
    small = write(
        pa.table({"userid": ["a", "b"], "x": pa.array([7, -3], pa.int64())}), tmp_path / "s.parquet"
    )
    code, _, stderr = predict(mbp, model, small, out, "-q")
    assert code == 0, stderr
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": np.array([7, -3], dtype=np.int32 if elem == 6 else np.int64)})[0]
    assert_scores(written(out), ["a", "b"], want.astype(np.float64))


def test_uuid_rowids(mbp, models, tmp_path):
    import uuid

    t = table(50, seed=9)
    keys = [uuid.UUID(int=1000 + i) for i in range(t.num_rows)]
    t = t.set_column(0, "userid", pa.array([k.bytes for k in keys], pa.uuid()))
    features = write(t, tmp_path / "f.parquet")
    wanted = [keys[3], keys[17]]
    given = f"'{str(wanted[0]).upper()}',{wanted[1]},'{uuid.UUID(int=1)}'"
    out = tmp_path / "out"
    code, stdout, stderr = predict(
        mbp, models["tensor"], features, out, "--rowid-filter", given, "--json"
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["ids_given"], summary["rows_matched"], summary["ids_without_row"]) == (3, 2, 1)
    rows = t.take([3, 17])
    expected_ids = [str(k) for k in wanted]
    assert_scores(written(out), expected_ids, onnx_scores(models["tensor"], rows, "tensor"))
    code, stdout, stderr = predict(
        mbp, models["tensor"], features, out, "--rowid-filter", "'not-a-uuid'"
    )
    assert (code, stdout) == (2, "")
    assert "rowid 'not-a-uuid' is not a UUID" in stderr


def test_an_input_of_more_than_two_dimensions_is_refused_before_reading(mbp, features, tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["score"], keepdims=0)],
        "cube",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 2])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "cube.onnx"
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "out"
    code, stdout, stderr = predict(mbp, path, features, out, "--features", "f0,f1,f2,n")
    assert (code, stdout) == (2, "")
    assert "model input 'x' has shape [None, 2, 2]; mbp feeds a row per item" in stderr
    assert not out.exists()


def test_output_that_is_a_broken_symlink(mbp, models, features, tmp_path):
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone")
    code, stdout, stderr = predict(
        mbp, models["tensor"], features, out, "--rowid-filter", "'u00001'"
    )
    assert (code, stdout) == (2, "")
    assert "is a broken symbolic link; --output must be a directory" in stderr


def test_an_input_file_without_a_feature_is_named_not_read_as_nulls(mbp, models, tmp_path):
    """Read by name with the other files, its rows would have nulls for the feature."""
    folder = tmp_path / "input"
    folder.mkdir()
    whole = table(40, seed=5)
    pq.write_table(whole.slice(0, 20), folder / "a.parquet")
    pq.write_table(whole.slice(20).drop_columns(["f1"]), folder / "b.parquet")
    code, out, err = predict(mbp, models["tensor"], folder, tmp_path / "out")
    assert (code, out) == (2, "")
    assert err == (
        f"mbp: error: the input file {folder / 'b.parquet'} has no column 'f1', which the other "
        "input files have; fix that file or move it out of the input path\n"
    )
    assert not (tmp_path / "out").exists()
    # Files that agree, one with f1 as float32, are one table.
    pq.write_table(whole.slice(20).set_column(3, "f1", whole["f1"].slice(20).cast(pa.float32())),
                   folder / "b.parquet")  # fmt: skip
    code, _, err = predict(mbp, models["tensor"], folder, tmp_path / "out", "-q")
    assert (code, err) == (0, "")
    assert sum(pq.read_table(p).num_rows for p in parquet_files(tmp_path / "out")) == 40


def test_the_output_dataset_must_lie_outside_the_input(mbp, models, features, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "features.parquet").write_bytes(features.read_bytes())
    code, out, err = predict(mbp, models["tensor"], folder, folder / "predictions")
    assert (code, out) == (2, "")
    assert err == (
        f"mbp: error: --output {str(folder / 'predictions')!r} is inside --input {str(folder)!r}, "
        "so later runs would read the predictions as input; put the output dataset beside "
        "the input folder\n"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["features.parquet"]
    # A glob that picks up the output's batches is refused too, once a batch exists.
    assert predict(mbp, models["tensor"], features, tmp_path / "pred", "-q")[0] == 0
    pattern = str(tmp_path / "**" / "*.parquet")
    code, out, err = predict(mbp, models["tensor"], pattern, tmp_path / "pred")
    assert (code, out) == (2, "")
    assert err.startswith(f"mbp: error: --input {pattern!r} takes files from the --output dataset")


def test_features_named_twice_are_refused(mbp, models, features, tmp_path):
    code, out, err = predict(mbp, models["tensor"], features, tmp_path / "out",
                             "--features", "f0,f1,f0")  # fmt: skip
    assert (code, out) == (2, "")
    assert err == "mbp: error: --features names 'f0' twice; list each column once\n"


def test_a_missing_models_folder_is_named(mbp, features, tmp_path):
    code, out, err = predict(mbp, "ltv", features, tmp_path / "out",
                             "--models-dir", str(tmp_path / "nope"))  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith(
        f"mbp: error: the models folder {str(tmp_path / 'nope')!r} does not exist"
    )


def test_ids_on_more_than_one_input_row_are_all_scored_and_said(mbp, models, tmp_path):
    whole = table(10, seed=2)
    doubled = pa.concat_tables([whole, whole.slice(3, 2)])  # u00003 and u00004 twice
    src = write(doubled, tmp_path / "in.parquet")
    code, _, err = predict(mbp, models["tensor"], src, tmp_path / "out",
                           "--rowid-filter", "u00003,u00004,u00005")  # fmt: skip
    assert code == 0
    assert "3 ids given, 0 with no input row; 5 rows matched (some ids have more than one " in err
    (written,) = parquet_files(tmp_path / "out")
    assert sorted(pq.read_table(written)["userid"].to_pylist()) == [
        "u00003", "u00003", "u00004", "u00004", "u00005",
    ]  # fmt: skip
