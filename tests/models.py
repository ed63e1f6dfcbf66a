"""Small ONNX models made by the real converters (skl2onnx, onnxmltools + LightGBM), and a
feature table to score with them. Built once per test session (`build()` is cached)."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = ["f0", "f1", "f2"]
N_ROWS = 600


def table(n: int = N_ROWS, seed: int = 0) -> pa.Table:
    """A feature table: string and integer ids, float, integer, string and bool columns."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "userid": pa.array([f"u{i:05d}" for i in range(n)]),
            "uid": pa.array(np.arange(1000, 1000 + n, dtype=np.int64)),
            "f0": rng.normal(size=n),
            "f1": rng.normal(size=n),
            "f2": rng.normal(size=n),
            "n": pa.array(rng.integers(0, 20, size=n).astype(np.int32)),
            "city": pa.array(rng.choice(["paris", "lyon", "nice"], size=n)),
            "region": pa.array(rng.choice(["north", "south"], size=n)),
            "flag": pa.array(rng.random(n) < 0.5),
        }
    )


def _training(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=400) > 0).astype(np.int64)
    return x, y


def _save(model: onnx.ModelProto, path: Path, meta: dict[str, str] | None = None) -> Path:
    if meta:
        onnx.helper.set_model_props(model, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


@dataclass(frozen=True)
class Models:
    """Paths of the test models, keyed by kind."""

    root: Path
    paths: dict[str, Path]

    def __getitem__(self, kind: str) -> Path:
        return self.paths[kind]


def _build(root: Path) -> Models:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x, y = _training()
    one = [("X", FloatTensorType([None, 3]))]
    listed = {"features": json.dumps(FEATURES)}
    opset = {"": 17, "ai.onnx.ml": 3}
    paths: dict[str, Path] = {}
    clf = LogisticRegression().fit(x, y)
    paths["zipmap"] = _save(
        to_onnx(clf, initial_types=one, target_opset=opset), root / "zipmap.onnx", listed
    )
    paths["tensor"] = _save(
        to_onnx(clf, initial_types=one, options={"zipmap": False}, target_opset=opset),
        root / "tensor.onnx",
        {"features": "f0, f1, f2", "version": "7.1"},
    )
    paths["nometa"] = _save(
        to_onnx(clf, initial_types=one, options={"zipmap": False}, target_opset=opset),
        root / "nometa.onnx",
    )
    reg = GradientBoostingRegressor(n_estimators=20, max_depth=2).fit(x, x[:, 0] * 2 + x[:, 2])
    paths["regressor"] = _save(
        to_onnx(reg, initial_types=one, target_opset=opset), root / "regressor.onnx", listed
    )
    labels = np.where(y == 1, "yes", "no")
    strclf = LogisticRegression().fit(x, labels)
    paths["strlabels"] = _save(
        to_onnx(strclf, initial_types=one, target_opset=opset), root / "strlabels.onnx", listed
    )
    three = np.digitize(x[:, 0], [-0.5, 0.5])  # classes 0, 1, 2
    multi = LogisticRegression().fit(x, three)
    paths["multiclass"] = _save(
        to_onnx(multi, initial_types=one, target_opset=opset), root / "multiclass.onnx", listed
    )
    paths["multitensor"] = _save(
        to_onnx(multi, initial_types=one, options={"zipmap": False}, target_opset=opset),
        root / "multitensor.onnx",
        listed,
    )

    # One named input per column, one of them a string: a scikit-learn pipeline.
    t = table(300, seed=5).to_pandas()
    target = (t["f0"] + (t["city"] == "paris") > 0.3).astype(int)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["f0", "n"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(t[["f0", "n", "city"]], target)
    per_column = [
        ("f0", FloatTensorType([None, 1])),
        ("n", FloatTensorType([None, 1])),
        ("city", StringTensorType([None, 1])),
    ]
    paths["columns"] = _save(
        to_onnx(pipe, initial_types=per_column, options={"zipmap": False}, target_opset=opset),
        root / "columns.onnx",
    )

    import lightgbm
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        booster = lightgbm.LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1).fit(x, y)
        lgbm = onnxmltools.convert_lightgbm(booster, initial_types=[("input", MlFloat([None, 3]))])
    paths["lightgbm"] = _save(lgbm, root / "lightgbm.onnx", listed)
    return Models(root, paths)


@functools.cache
def build() -> Models:
    """All test models, built once in a temporary folder removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="mbp-test-models-"))
    atexit.register(shutil.rmtree, root, True)
    return _build(root)


def write(t: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)
    return path
