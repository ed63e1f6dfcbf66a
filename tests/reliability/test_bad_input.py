"""Bad input gets the documented exit code, one line on stderr naming the problem, and nothing
written; awkward but valid ids (quotes, commas, new lines, non-ASCII, 200,000 of them) work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cases import Case, case, each_case
from harness import MBP, NEW, clean_env, epoch, iso, one_line_error, predict_args
from models import Models, table, write

# --- the bad inputs, one builder per case: files under `tmp`, then the mbp arguments ------


def _predict(models: Models, input: Path | str, tmp: Path, *extra: str) -> list[str]:
    return predict_args(models["tensor"], input, tmp / "out", NEW, *extra)


def _table(tmp: Path, **columns: pa.Array) -> Path:
    t = table(40)
    for name, values in columns.items():
        t = t.set_column(t.schema.get_field_index(name), name, values)
    return write(t, tmp / "in.parquet")


def _with(column: str, row: int, value: object) -> pa.Array:
    values = table(40)[column].to_pylist()
    values[row] = value
    return pa.array(values, pa.float64())


def _corrupt_row_group(tmp: Path) -> Path:
    """A file whose footer is fine but whose 8th row group has a garbled data page, so the
    damage shows only in the middle of the scan."""
    path = tmp / "in.parquet"
    pq.write_table(table(20_000), path, compression="none", row_group_size=2_000)
    chunk = pq.ParquetFile(path).metadata.row_group(7).column(3)
    end = chunk.dictionary_page_offset + chunk.total_compressed_size
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset + 20 : end] = b"\xff" * (end - chunk.data_page_offset - 20)
    path.write_bytes(bytes(data))
    return path


def _truncated(tmp: Path) -> Path:
    good = write(table(400), tmp / "good" / "in.parquet").read_bytes()
    path = tmp / "in.parquet"
    path.write_bytes(good[: len(good) // 2])
    (tmp / "good" / "in.parquet").unlink()
    (tmp / "good").rmdir()
    return path


def _existing_dataset(tmp: Path) -> None:
    out = tmp / "out" / "dt=2026-12-03"
    out.mkdir(parents=True)
    pq.write_table(pa.table({"userid": ["x"], "score": [0.5], "time": [1]}), out / "part-a.parquet")


Builder = Callable[[Path, Models], list[str]]


def _nulls_unfiltered(tmp: Path, m: Models) -> list[str]:
    _existing_dataset(tmp)
    src = _table(tmp, f1=_with("f1", 35, None))
    return _predict(m, src, tmp, "--batch-size", "8")  # the bad row is in the 5th batch


def _output_is_file(tmp: Path, m: Models) -> list[str]:
    (tmp / "out").write_text("a file")
    return _predict(m, _table(tmp), tmp, "--rowid-filter", "'u00001'")


def _unwritable(tmp: Path, m: Models) -> list[str]:
    # Tests run as root, which writes through any mode bits: a parent that is a regular
    # file stops root too.
    (tmp / "plain").write_text("x")
    args = _predict(m, _table(tmp), tmp, "--rowid-filter", "'u00001'")
    return [a if a != str(tmp / "out") else str(tmp / "plain" / "out") for a in args]


def _overwrite_foreign(tmp: Path, m: Models) -> list[str]:
    # `--output .` from a project folder: overwrite must not delete the model, the input...
    _existing_dataset(tmp)
    (tmp / "out" / "notes.txt").write_text("not a batch")
    write(table(40), tmp / "out" / "features.parquet")
    return _predict(m, _table(tmp), tmp, "--output-mode", "overwrite")


def _output_in_input(tmp: Path, m: Models) -> list[str]:
    _table(tmp)  # tmp/in.parquet, and the output would go to tmp/out
    return _predict(m, tmp, tmp)


def _input_in_output(tmp: Path, m: Models) -> list[str]:
    _existing_dataset(tmp)
    return _predict(m, str(tmp / "**" / "*.parquet"), tmp)


def _overwrite_hidden(tmp: Path, m: Models) -> list[str]:
    for name in (".git/config", ".ssh/id_rsa"):
        (tmp / "out" / name).parent.mkdir(parents=True)
        (tmp / "out" / name).write_text("precious")
    return _predict(m, _table(tmp), tmp, "--output-mode", "overwrite")


def _overwrite_cwd(tmp: Path, m: Models) -> list[str]:
    (tmp / "out").mkdir()
    os.chdir(tmp / "out")  # the test's own working folder, restored by its fixture
    return _predict(m, _table(tmp), tmp, "--output-mode", "overwrite")


def _lock_symlink(tmp: Path, m: Models) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "victim.txt").write_text("keep me")
    (tmp / "out" / ".mbp.lock").symlink_to(tmp / "victim.txt")
    return _predict(m, _table(tmp), tmp, "--rowid-filter", "'u00001'")


def _rank(tmp: Path, m: Models) -> list[str]:
    (tmp / "scores" / "dt=2026-12-03").mkdir(parents=True)
    (tmp / "scores" / "dt=2026-12-03" / "part-20261203T100500.parquet").write_bytes(b"PAR1junk")
    return ["rank", "--predictions", str(tmp / "scores"), "--format", "csv"]


def _sessions(tmp: Path, m: Models) -> list[str]:
    (tmp / "sessions.parquet").write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    return ["list-users", "--sessions", str(tmp / "sessions.parquet"), "--scheduled-time",
            iso(NEW), "--timezone", "UTC", "-o", str(tmp / "ids.txt")]  # fmt: skip


def _filtered(text: str, *extra: str) -> Builder:
    return lambda tmp, m: _predict(m, _table(tmp), tmp, "--rowid-filter", text, *extra)


def _empty_dir(tmp: Path, m: Models) -> list[str]:
    (tmp / "features").mkdir()
    (tmp / "features" / "features.csv").write_text("userid,f0\n")
    return _predict(m, tmp / "features", tmp)


def _not_onnx(tmp: Path, m: Models) -> list[str]:
    (tmp / "model.onnx").write_text("not a model")
    args = _predict(m, _table(tmp), tmp, "--rowid-filter", "'u00001'")
    return [a if a != str(m["tensor"]) else str(tmp / "model.onnx") for a in args]


def _empty_file(tmp: Path, m: Models) -> list[str]:
    (tmp / "in.parquet").write_bytes(b"")
    return _predict(m, tmp / "in.parquet", tmp)


def _missing_column(tmp: Path, m: Models) -> list[str]:
    return _predict(m, write(table(40).drop_columns(["f2"]), tmp / "in.parquet"), tmp)


def _string_feature(tmp: Path, m: Models) -> list[str]:
    return _predict(m, _table(tmp, f2=pa.array([f"{i}" for i in range(40)])), tmp)


def _bad_value(value: float | None) -> Builder:
    return lambda tmp, m: _predict(
        m, _table(tmp, f1=_with("f1", 6, value)), tmp, "--rowid-filter", "'u00003','u00006'"
    )


SETUP: dict[str, Builder] = {
    "corrupt-footer": lambda tmp, m: _predict(m, _truncated(tmp), tmp),
    "corrupt-row-group": lambda tmp, m: _predict(m, _corrupt_row_group(tmp), tmp),
    "empty-file": _empty_file,
    "no-parquet-files": _empty_dir,
    "model-not-onnx": _not_onnx,
    "model-missing-file": lambda tmp, m: predict_args(
        tmp / "nope.onnx", _table(tmp), tmp / "out", NEW
    ),
    "input-missing": lambda tmp, m: _predict(m, tmp / "nope.parquet", tmp),
    "model-column-missing": _missing_column,
    "model-column-type": _string_feature,
    "nan-feature": _bad_value(float("nan")),
    "inf-feature": _bad_value(float("inf")),
    "null-feature": _bad_value(None),
    "null-feature-unfiltered": _nulls_unfiltered,
    "output-is-file": _output_is_file,
    "output-unwritable": _unwritable,
    "overwrite-foreign-files": _overwrite_foreign,
    "overwrite-hidden-files": _overwrite_hidden,
    "output-in-input": _output_in_input,
    "input-in-output": _input_in_output,
    "overwrite-working-folder": _overwrite_cwd,
    "lock-symlink": _lock_symlink,
    "filter-sql-or": _filtered("'1') OR 1=1 --"),
    "filter-sql-drop": _filtered("';DROP TABLE x;--"),
    "filter-unterminated": _filtered("'u00001','u00002"),
    "filter-stray-token": _filtered("'u00001' 'u00002'"),
    "filter-uncastable": _filtered("1000,1001x", "--rowid-column", "uid"),
    "filter-not-utf8": _filtered("-"),
    "rank-corrupt": _rank,
    "sessions-corrupt": _sessions,
}

STDIN = {"filter-not-utf8": b"'u00001','u\xff'"}


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Every directory and file under `top`, hidden ones included, with contents."""
    found: dict[str, bytes | None] = {}
    for d, dirs, files in os.walk(top):
        for name in dirs:
            found[os.path.relpath(os.path.join(d, name), top)] = None
        for name in files:
            found[os.path.relpath(os.path.join(d, name), top)] = Path(d, name).read_bytes()
    return found


@each_case
def test_bad_input(mbp, models: Models, tmp_path: Path, case: Case) -> None:
    work = tmp_path / "work"
    work.mkdir()
    args = SETUP[case.id](work, models)
    before = snapshot(tmp_path)
    code, stdout, stderr = mbp(*args, input=STDIN.get(case.id))
    assert code == case.code, stderr
    assert stdout == ""
    assert one_line_error(stderr), stderr
    assert case.stderr is not None and re.search(case.stderr, stderr), stderr
    assert snapshot(tmp_path) == before  # nothing written, no directory made


# --- awkward ids that must work ------------------------------------------------------------


ODD_IDS = [
    "O'Brien",
    "''",
    "a,b",
    "line\nbreak",
    " padded ",
    "Zoë",
    "用户",
    "emoji 🙂",
    "'1') OR 1=1 --",
    "';DROP TABLE x;--",
    'say "hi"',
    "back\\slash",
    "",
]


def quoted(ids: list[str]) -> str:
    """The filter as list-users prints it, formatted here independently of mbp."""
    return ",".join("'" + i.replace("'", "''") + "'" for i in ids)


def scores_by_hand(model: Path, rows: pa.Table) -> dict[str, float]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.column_stack([rows[f].to_numpy() for f in ("f0", "f1", "f2")]).astype(np.float32)
    (probabilities,) = session.run(["probabilities"], {"X": x})
    return dict(zip(rows["userid"].to_pylist(), probabilities[:, 1].tolist(), strict=True))


@pytest.mark.parametrize("via", ["argument", "stdin", "file"])
@case("odd-ids")
def test_odd_ids_score_the_right_rows(mbp, models: Models, tmp_path: Path, via: str) -> None:
    t = table(40)
    ids = t["userid"].to_pylist()
    ids[: len(ODD_IDS)] = ODD_IDS
    t = t.set_column(0, "userid", pa.array(ids))
    src = write(t, tmp_path / "in.parquet")
    wanted = ODD_IDS + ["u00030", "nobody", "u00031x"]
    text = quoted(wanted)
    value, stdin = {"argument": (text, None), "stdin": ("-", text), "file": (None, None)}[via]
    if via == "file":
        (tmp_path / "ids.txt").write_text(text, encoding="utf-8")
        value = f"@{tmp_path / 'ids.txt'}"
    out = tmp_path / "out"
    code, stdout, stderr = mbp(
        *predict_args(models["tensor"], src, out, NEW, "--rowid-filter", value, "--json"),
        input=stdin,
    )
    assert code == 0, stderr
    assert json.loads(stdout)["ids_without_row"] == 2
    rows = t.filter(pc.is_in(t["userid"], value_set=pa.array(wanted)))
    assert rows.num_rows == len(ODD_IDS) + 1
    got = pq.read_table(out)
    expected = scores_by_hand(models["tensor"], rows)
    assert sorted(got["userid"].to_pylist()) == sorted(expected)
    for rowid, score in zip(got["userid"].to_pylist(), got["score"].to_pylist(), strict=True):
        assert score == pytest.approx(expected[rowid], abs=1e-6), rowid


@case("filter-200k-stdin")
def test_200k_ids_on_stdin(mbp, models: Models, medium: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    present = [f"u{i:08d}" for i in rng.choice(200_000, size=150_000, replace=False)]
    ids = present + [f"x{i:08d}" for i in range(50_000)]
    rng.shuffle(ids)
    out = tmp_path / "out"
    started = time.monotonic()
    code, stdout, stderr = mbp(
        *predict_args(models["tensor"], medium, out, NEW, "--rowid-filter", "-", "--json"),
        input=quoted(ids) + "\n",
    )
    seconds = time.monotonic() - started
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["ids_given"], summary["ids_without_row"]) == (200_000, 50_000)
    # An independent count: the rows of the input whose id is in the list, and the output.
    con = duckdb.connect()
    con.register("wanted", pa.table({"id": ids}))
    ((expected,),) = con.execute(
        "SELECT count(*) FROM read_parquet($f) WHERE userid IN (SELECT id FROM wanted)",
        {"f": str(medium)},
    ).fetchall()
    ((rows, distinct, unmatched),) = con.execute(
        "SELECT count(*), count(DISTINCT userid), count(*) FILTER "
        "(WHERE userid NOT IN (SELECT id FROM wanted)) FROM read_parquet($f)",
        {"f": str(out / "**" / "*.parquet")},
    ).fetchall()
    assert expected == 150_000
    assert (rows, distinct, unmatched) == (expected, expected, 0)
    assert seconds < 10, f"200,000 ids took {seconds:.1f} s"  # about 1.5 s on 2 cores


@case("stdout-full")
def test_stdout_on_a_full_disk(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions.parquet"
    pq.write_table(pa.table({"userid": ["a", "b"], "time": [epoch(NEW) - 60] * 2}), sessions)
    args = ["list-users", "--sessions", str(sessions), "--scheduled-time", iso(NEW)]
    with open("/dev/full", "w") as full:  # every write fails with ENOSPC
        done = subprocess.run(
            [*MBP, *args], stdout=full, stderr=subprocess.PIPE, text=True, env=clean_env()
        )
    assert done.returncode == 1
    assert one_line_error(done.stderr), done.stderr
    assert "cannot write to standard output: No space left on device" in done.stderr
