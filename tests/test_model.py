"""mbp.model: resolving --model in the models folder, loading, feature mapping, scoring."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
from models import FEATURES, Models, build

from mbp import model as mdl
from mbp.errors import RuntimeFailure, UsageError


@pytest.fixture(scope="session")
def models() -> Models:
    return build()


def _folder(root: Path, name: str, versions: list[str], source: Path) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for v in versions:
        shutil.copy(source, folder / f"{v}.onnx")
    return folder


# --- resolution -----------------------------------------------------------------------


def test_newest_version_in_natural_order(tmp_path, models):
    _folder(tmp_path, "ltv", ["2026-9", "2026-10", "2025-12", "2026-2"], models["tensor"])
    r = mdl.resolve("ltv", tmp_path)
    assert (r.name, r.version, r.path) == ("ltv", "2026-10", tmp_path / "ltv" / "2026-10.onnx")
    assert mdl.versions(tmp_path / "ltv") == ["2025-12", "2026-2", "2026-9", "2026-10"]


def test_current_pins_a_version(tmp_path, models):
    folder = _folder(tmp_path, "ltv", ["2026-10", "2026-11"], models["tensor"])
    (folder / "CURRENT").write_text("2026-10\n")
    assert mdl.resolve("ltv", tmp_path).version == "2026-10"
    (folder / "CURRENT").write_text("2026-11.onnx")
    assert mdl.resolve("ltv", tmp_path).version == "2026-11"
    (folder / "CURRENT").write_bytes("\ufeff2026-10\r\n".encode())  # as Notepad saves it
    assert mdl.resolve("ltv", tmp_path).version == "2026-10"


def test_current_naming_a_missing_version(tmp_path, models):
    folder = _folder(tmp_path, "ltv", ["2026-10"], models["tensor"])
    (folder / "CURRENT").write_text("2027-01")
    with pytest.raises(
        UsageError, match=r"pins version '2027-01', which is not there \(versions: 2026-10\)"
    ):
        mdl.resolve("ltv", tmp_path)


def test_current_that_is_not_text(tmp_path, models):
    folder = _folder(tmp_path, "ltv", ["2026-10"], models["tensor"])
    (folder / "CURRENT").write_bytes(b"2026-10\xff")
    with pytest.raises(UsageError, match="it names the pinned version, as text"):
        mdl.resolve("ltv", tmp_path)


def test_explicit_version(tmp_path, models):
    folder = _folder(tmp_path, "ltv", ["2026-10", "2026-11"], models["tensor"])
    (folder / "CURRENT").write_text("2026-11")
    r = mdl.resolve("ltv@2026-10", tmp_path)
    assert (r.version, r.path) == ("2026-10", folder / "2026-10.onnx")
    with pytest.raises(UsageError, match=r"no version '2025-01' \(versions: 2026-10, 2026-11\)"):
        mdl.resolve("ltv@2025-01", tmp_path)


def test_unknown_name_lists_the_models(tmp_path, models):
    _folder(tmp_path, "ltv", ["1"], models["tensor"])
    _folder(tmp_path, "churn", ["1"], models["tensor"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no model 'fraud' .*models there: churn, ltv\)"):
        mdl.resolve("fraud", tmp_path)
    with pytest.raises(UsageError, match=r"models there: none"):
        mdl.resolve("ltv", tmp_path / "empty")
    with pytest.raises(UsageError, match=r"the models folder .*nowhere' does not exist"):
        mdl.resolve("ltv", tmp_path / "nowhere")


def test_a_model_folder_path(tmp_path, models):
    _folder(tmp_path, "ltv", ["2026-9", "2026-10"], models["tensor"])
    r = mdl.resolve(str(tmp_path / "ltv"), "elsewhere")
    assert (r.name, r.version) == ("ltv", "2026-10")


def test_a_path_is_a_path(tmp_path, models):
    r = mdl.resolve(str(models["tensor"]), tmp_path)
    assert (r.name, r.version, r.path) == ("tensor", None, models["tensor"])
    with pytest.raises(UsageError, match="model file .* does not exist"):
        mdl.resolve(str(tmp_path / "missing.onnx"))


def test_version_of_a_bare_file(models):
    assert mdl.load(mdl.resolve(str(models["tensor"]))).version == "7.1"  # metadata `version`
    digest = hashlib.sha256(models["zipmap"].read_bytes()).hexdigest()[:12]
    assert mdl.load(mdl.resolve(str(models["zipmap"]))).version == digest


def test_named_model_records_name_and_version(tmp_path, models):
    _folder(tmp_path, "ltv", ["2026-11"], models["tensor"])
    m = mdl.load(mdl.resolve("ltv", tmp_path))
    assert (m.name, m.version) == ("ltv", "2026-11")  # the file name wins over metadata


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("nope")
    with pytest.raises(RuntimeFailure, match="is not a valid ONNX model"):
        mdl.load(mdl.resolve(str(bad)))


# --- features -------------------------------------------------------------------------

COLUMNS = {"userid": "VARCHAR", "f0": "DOUBLE", "f1": "DOUBLE", "f2": "DOUBLE",
           "n": "INTEGER", "city": "VARCHAR", "flag": "BOOLEAN", "d": "DECIMAL(10,2)",
           "when": "TIMESTAMP"}  # fmt: skip


def test_features_from_metadata_json_and_comma_list(models):
    for kind in ("zipmap", "tensor"):
        feeds = mdl.feeds(mdl.load(mdl.resolve(str(models[kind]))), COLUMNS)
        assert [(f.input, f.columns, f.dtype, f.rank) for f in feeds] == [
            ("X", tuple(FEATURES), np.float32, 2)
        ]


def test_one_input_per_column(models):
    feeds = mdl.feeds(mdl.load(mdl.resolve(str(models["columns"]))), COLUMNS)
    assert [(f.input, f.columns, f.dtype) for f in feeds] == [
        ("f0", ("f0",), np.float32),
        ("n", ("n",), np.float32),
        ("city", ("city",), np.object_),
    ]


def test_column_types(models):
    m = mdl.load(mdl.resolve(str(models["nometa"])))
    assert mdl.feeds(m, COLUMNS, ["n", "flag", "d"])[0].columns == ("n", "flag", "d")
    with pytest.raises(UsageError, match="column 'when' has type TIMESTAMP, which cannot be cast"):
        mdl.feeds(m, COLUMNS, ["f0", "f1", "when"])
    with pytest.raises(UsageError, match="no column 'a', 'b' that the model needs"):
        mdl.feeds(m, COLUMNS, ["a", "f0", "b"])


def test_parse_features():
    assert mdl.parse_features('["a", "b c"]') == ["a", "b c"]
    assert mdl.parse_features(" a, b ,c ") == ["a", "b", "c"]
    assert mdl.parse_features("") is None
    with pytest.raises(UsageError, match="JSON array of column names"):
        mdl.parse_features("[1, 2]")


# --- scoring --------------------------------------------------------------------------


def _batch(**columns) -> pa.RecordBatch:
    n = len(next(iter(columns.values())))
    return pa.RecordBatch.from_pydict({"userid": [f"u{i}" for i in range(n)], **columns})


def _scorer(models, kind, **kw) -> mdl.Scorer:
    m = mdl.load(mdl.resolve(str(models[kind])))
    feeds = mdl.feeds(m, COLUMNS, kw.pop("features", None))
    return mdl.Scorer(m, feeds, mdl.score_output(m, kw.pop("output", None)), **kw)


def test_regression_and_probability_outputs(models):
    batch = _batch(f0=[0.1, -2.0], f1=[1.0, 0.5], f2=[3.0, -1.0])
    x = np.array([[0.1, 1.0, 3.0], [-2.0, 0.5, -1.0]], dtype=np.float32)
    reg = ort.InferenceSession(str(models["regressor"]), providers=["CPUExecutionProvider"])
    want = reg.run(None, {"X": x})[0].reshape(-1)
    assert _scorer(models, "regressor").score(batch) == pytest.approx(want, rel=1e-6)
    clf = ort.InferenceSession(str(models["tensor"]), providers=["CPUExecutionProvider"])
    want = clf.run(["probabilities"], {"X": x})[0][:, 1]
    got = _scorer(models, "tensor").score(batch)
    assert got.dtype == np.float64 and got == pytest.approx(want, rel=1e-6)


def test_zipmap_picks_label_one_or_the_last(models):
    batch = _batch(f0=[0.3], f1=[0.2], f2=[0.1])
    x = np.array([[0.3, 0.2, 0.1]], dtype=np.float32)
    for kind, label in (("multiclass", 1), ("strlabels", "yes"), ("lightgbm", 1)):
        sess = ort.InferenceSession(str(models[kind]), providers=["CPUExecutionProvider"])
        name = [o.name for o in sess.get_outputs() if o.type.startswith("seq")][0]
        want = sess.run([name], {"input" if kind == "lightgbm" else "X": x})[0][0][label]
        assert _scorer(models, kind).score(batch) == pytest.approx([want], rel=1e-6)


def test_string_input_and_empty_batch(models):
    s = _scorer(models, "columns")
    batch = _batch(f0=[0.5, 1.5], n=pa.array([3, 4], pa.int32()), city=["paris", "unseen"])
    sess = ort.InferenceSession(str(models["columns"]), providers=["CPUExecutionProvider"])
    want = sess.run(
        ["probabilities"],
        {
            "f0": np.array([[0.5], [1.5]], np.float32),
            "n": np.array([[3], [4]], np.float32),
            "city": np.array([["paris"], ["unseen"]], dtype=object),
        },
    )[0][:, 1]
    assert s.score(batch) == pytest.approx(want, rel=1e-6)
    empty = _scorer(models, "zipmap").score(_batch(f0=pa.array([], pa.float64()),
                                                   f1=pa.array([], pa.float64()),
                                                   f2=pa.array([], pa.float64())))  # fmt: skip
    assert empty.shape == (0,)


def test_fill_null_values_by_input_type(models):
    m = mdl.load(mdl.resolve(str(models["columns"])))
    feeds = mdl.feeds(m, COLUMNS)
    assert mdl.fill_value("2", feeds) == {"f0": 2.0, "n": 2.0, "city": "2"}
    assert mdl.fill_value(None, feeds) == {}
    with pytest.raises(UsageError, match="--fill-null 'x' cannot fill the float32 input 'f0'"):
        mdl.fill_value("x", feeds)


def test_null_in_an_integer_column_is_filled(models):
    s = _scorer(models, "nometa", features=["n", "f1", "f2"], fill_null={"X": 1.5})
    batch = _batch(n=pa.array([None, 2], pa.int32()), f1=[0.0, 0.0], f2=[0.0, 0.0])
    sess = ort.InferenceSession(str(models["nometa"]), providers=["CPUExecutionProvider"])
    want = sess.run(["probabilities"], {"X": np.array([[1.5, 0, 0], [2, 0, 0]], np.float32)})[0]
    assert s.score(batch) == pytest.approx(want[:, 1], rel=1e-6)


def test_a_value_too_large_for_float32_is_refused(models):
    s = _scorer(models, "tensor")
    with pytest.raises(UsageError, match="infinite .* for rowid 'u1'"):
        s.score(_batch(f0=[0.0, 1e300], f1=[0.0, 0.0], f2=[0.0, 0.0]))


def test_null_string_filled(models):
    s = _scorer(models, "columns", fill_null={"f0": 0.0, "n": 0.0, "city": "lyon"})
    batch = _batch(f0=[0.5, 0.5], n=pa.array([1, 1], pa.int32()), city=[None, "lyon"])
    scores = s.score(batch)
    assert scores[0] == scores[1]  # the filled row is the same as the one given "lyon"
    with pytest.raises(UsageError, match="column 'city' has a null for rowid 'u0'"):
        _scorer(models, "columns").score(batch)
