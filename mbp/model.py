"""ONNX models: find one in the models folder, load it, map the table's columns to its
inputs, and turn its output into one score per row."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mbp.errors import RuntimeFailure, UsageError
from mbp.sources import INTEGER_TYPES, first_line

# ONNX tensor element types mbp can feed, and what a table column must be to feed them.
_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
_FLOATING = {"FLOAT", "DOUBLE"}
_ACCEPTS = {
    np.float32: INTEGER_TYPES | _FLOATING | {"BOOLEAN", "DECIMAL"},
    np.float64: INTEGER_TYPES | _FLOATING | {"BOOLEAN", "DECIMAL"},
    np.int64: INTEGER_TYPES | {"BOOLEAN"},
    np.int32: INTEGER_TYPES | {"BOOLEAN"},
    np.bool_: {"BOOLEAN"},
    np.object_: {"VARCHAR"},
}
_TRUE_LABELS = {"1", "true"}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a `--model` value points, and the name and version it records."""

    path: Path
    name: str
    version: str | None  # None: read from the file (metadata `version`, else content hash)


def _natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    # 2026-9 < 2026-10: runs of digits compare as numbers.
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", text)
        if part
    )


def versions(model_dir: Path) -> list[str]:
    """The versions in a model's folder, oldest first (natural order)."""
    found = [p.stem for p in model_dir.glob("*.onnx") if p.is_file() and not p.name.startswith(".")]
    return sorted(found, key=_natural_key)


def _names(models_dir: Path) -> list[str]:
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if p.is_dir() and versions(p))


def _is_path(value: str) -> bool:
    return value.endswith(".onnx") or "/" in value or "\\" in value


def resolve(value: str, models_dir: str | Path = "models") -> ResolvedModel:
    """Resolve `--model`: an .onnx path, NAME (newest or CURRENT) or NAME@VERSION."""
    if _is_path(value):
        path = Path(value).expanduser()
        if path.is_dir():  # models/ltv: the folder of one model's versions
            return resolve(path.name, path.parent)
        if not path.is_file():
            raise UsageError(f"model file {value!r} does not exist; check --model")
        return ResolvedModel(path, path.stem, None)
    root = Path(models_dir).expanduser()
    name, _, version = value.partition("@")
    folder = root / name
    if not root.is_dir():
        raise UsageError(
            f"the models folder {str(root)!r} does not exist (looking for model {value!r}); "
            "set --models-dir, or give --model an .onnx path"
        )
    if not name or not folder.is_dir() or not versions(folder):
        have = ", ".join(_names(root)) or "none"
        raise UsageError(
            f"no model {name!r} in the models folder {str(root)!r} (models there: {have}); "
            "give --model an .onnx path, or a NAME with NAME/VERSION.onnx under --models-dir"
        )
    available = versions(folder)
    if version:
        if version not in available:
            raise UsageError(
                f"model {name!r} has no version {version!r} (versions: {', '.join(available)}); "
                f"use {name}@<version> with one of them"
            )
        return ResolvedModel(folder / f"{version}.onnx", name, version)
    pin = folder / "CURRENT"
    if pin.is_file():
        try:
            pinned = pin.read_text(encoding="utf-8-sig").strip().removesuffix(".onnx")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read {str(pin)!r} ({exc}); it names the pinned version, as text"
            ) from exc
        if pinned not in available:
            raise UsageError(
                f"{str(pin)!r} pins version {pinned!r}, which is not there "
                f"(versions: {', '.join(available)}); fix or remove CURRENT"
            )
        return ResolvedModel(folder / f"{pinned}.onnx", name, pinned)
    return ResolvedModel(folder / f"{available[-1]}.onnx", name, available[-1])


@dataclass(frozen=True)
class Tensor:
    """An ONNX input or output as onnxruntime describes it."""

    name: str
    type: str
    shape: tuple[Any, ...]


@dataclass
class Model:
    """A loaded model: its onnxruntime session, inputs, outputs and metadata."""

    name: str
    version: str
    path: Path
    session: Any  # onnxruntime.InferenceSession
    inputs: list[Tensor]
    outputs: list[Tensor]
    metadata: dict[str, str]


def load(resolved: ResolvedModel) -> Model:
    """Load the model with onnxruntime on the CPU; a bad file is a runtime failure."""
    import onnxruntime as ort

    try:
        data = resolved.path.read_bytes()
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot read model file {str(resolved.path)!r}: {exc.strerror}"
        ) from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3  # shape warnings from converters are noise in cron logs
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise RuntimeFailure(
            f"model file {str(resolved.path)!r} is not a valid ONNX model ({first_line(exc)}); "
            "check the file or re-export the model"
        ) from exc
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    version = resolved.version
    if version is None:
        version = metadata.get("version") or hashlib.sha256(data).hexdigest()[:12]
    return Model(
        name=resolved.name,
        version=version,
        path=resolved.path,
        session=session,
        inputs=[Tensor(i.name, i.type, tuple(i.shape)) for i in session.get_inputs()],
        outputs=[Tensor(o.name, o.type, tuple(o.shape)) for o in session.get_outputs()],
        metadata=metadata,
    )


# --- features -------------------------------------------------------------------------


@dataclass(frozen=True)
class Feed:
    """One model input and the table columns, in order, that fill it."""

    input: str
    columns: tuple[str, ...]
    dtype: type
    rank: int  # 1: shape [N]; 2: shape [N, k]


def _width(shape: tuple[Any, ...]) -> int | None:
    return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None


def parse_features(text: str | None) -> list[str] | None:
    """A feature list from `--features a,b,c` or metadata (JSON array or comma-separated)."""
    if text is None or not text.strip():
        return None
    s = text.strip()
    if s.startswith("["):
        try:
            value = json.loads(s)
        except json.JSONDecodeError as exc:
            raise UsageError(f"the feature list {s[:60]!r} is not a JSON array: {exc}") from exc
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError("the feature list must be a JSON array of column names")
        return value
    return [part.strip() for part in s.split(",") if part.strip()]


def _base(duck_type: str) -> str:
    return duck_type.split("(", 1)[0].strip()


def feeds(model: Model, columns: dict[str, str], features: list[str] | None = None) -> list[Feed]:
    """Map the table's columns (name -> DuckDB type) to the model's inputs, checking
    that every column exists and can be cast, before any row is read."""
    unsupported = [t for t in model.inputs if t.type not in _NUMPY]
    if unsupported:
        bad = unsupported[0]
        raise UsageError(f"model input {bad.name!r} has type {bad.type}, which mbp cannot feed")
    deep = [t for t in model.inputs if len(t.shape) not in (1, 2)]
    if deep:
        raise UsageError(
            f"model input {deep[0].name!r} has shape {list(deep[0].shape)}; mbp feeds a row "
            "per item, inputs of shape [N] or [N, columns]"
        )
    if features and len(set(features)) != len(features):
        twice = next(f for f in features if features.count(f) > 1)
        raise UsageError(f"--features names {twice!r} twice; list each column once")
    if len(model.inputs) == 1 and (features or "features" in model.metadata):
        tensor = model.inputs[0]
        ordered = features or parse_features(model.metadata["features"]) or []
        width = _width(tensor.shape)
        if not ordered or (len(tensor.shape) == 1 and len(ordered) != 1):
            raise UsageError(
                f"model input {tensor.name!r} has shape {list(tensor.shape)}, which the feature "
                f"list {ordered} does not fit; fix --features or the model's `features` metadata"
            )
        if width is not None and width != len(ordered):
            source = "--features" if features else "the model's `features` metadata"
            raise UsageError(
                f"model input {tensor.name!r} takes {width} columns but {source} names "
                f"{len(ordered)}; list exactly the columns the model was trained on"
            )
        result = [Feed(tensor.name, tuple(ordered), _NUMPY[tensor.type], len(tensor.shape))]
    elif features:
        raise UsageError(
            f"--features applies to a model with one tensor input; this model has inputs "
            f"{', '.join(t.name for t in model.inputs)}, each read from the column of that name"
        )
    else:
        for t in model.inputs:
            width = _width(t.shape)
            lone_unnamed = len(model.inputs) == 1 and t.name not in columns and width != 1
            if len(t.shape) == 2 and (width not in (None, 1) or lone_unnamed):
                raise UsageError(
                    f"model input {t.name!r} takes several columns and the model does not name "
                    "them; give them in order with --features a,b,c (or store them in the "
                    "model's `features` metadata)"
                )
        result = [Feed(t.name, (t.name,), _NUMPY[t.type], len(t.shape)) for t in model.inputs]
    _check_columns(result, columns)
    return result


def _check_columns(result: list[Feed], columns: dict[str, str]) -> None:
    needed = [c for f in result for c in f.columns]
    missing = [c for c in dict.fromkeys(needed) if c not in columns]
    if missing:
        raise UsageError(
            f"the input table has no column {', '.join(repr(c) for c in missing)} that the model "
            f"needs (it has: {', '.join(columns)}); rename the columns or set --features"
        )
    for feed in result:
        for column in feed.columns:
            duck = columns[column]
            if _base(duck) not in _ACCEPTS[feed.dtype]:
                want = np.dtype(feed.dtype).name if feed.dtype is not np.object_ else "string"
                raise UsageError(
                    f"column {column!r} has type {duck}, which cannot be cast to the {want} "
                    f"input {feed.input!r}; convert the column or use another model"
                )


def fill_value(text: str | None, result: list[Feed]) -> dict[str, Any]:
    """`--fill-null VALUE` parsed for each input's type (input name -> value)."""
    if text is None:
        return {}
    values: dict[str, Any] = {}
    for feed in result:
        try:
            if feed.dtype in (np.float32, np.float64):
                value = float(text)
                if not abs(value) <= float(np.finfo(feed.dtype).max):  # NaN, inf, 1e39
                    raise ValueError(text)
                values[feed.input] = value
            elif feed.dtype in (np.int64, np.int32):
                values[feed.input] = int(text)
            elif feed.dtype is np.bool_:
                values[feed.input] = {"true": True, "false": False, "1": True, "0": False}[
                    text.strip().lower()
                ]
            else:
                values[feed.input] = text
        except (ValueError, KeyError) as exc:
            kind = np.dtype(feed.dtype).name if feed.dtype is not np.object_ else "string"
            raise UsageError(
                f"--fill-null {text!r} cannot fill the {kind} input {feed.input!r}; "
                "give a finite value of that type"
            ) from exc
    return values


# --- scoring --------------------------------------------------------------------------


def _scorable(t: Tensor) -> bool:
    return t.type in ("tensor(float)", "tensor(double)") or (
        t.type.startswith("seq(map(") and "tensor(float" in t.type
    )


def score_output(model: Model, wanted: str | None = None) -> Tensor:
    """The output the score comes from: `--score-output`, else the only numeric one
    (for a classifier, its probabilities)."""
    names = ", ".join(f"{t.name} ({t.type})" for t in model.outputs)
    if wanted:
        for t in model.outputs:
            if t.name == wanted:
                if not _scorable(t):
                    raise UsageError(
                        f"--score-output {wanted!r} has type {t.type}, not a score; "
                        f"pick a float output (outputs: {names})"
                    )
                return t
        raise UsageError(
            f"the model has no output {wanted!r} (outputs: {names}); fix --score-output"
        )
    candidates = [t for t in model.outputs if _scorable(t)]
    if len(candidates) > 1:
        probs = [t for t in candidates if "prob" in t.name.lower()]
        candidates = probs if len(probs) == 1 else candidates
    if len(candidates) != 1:
        problem = "no float output" if not candidates else "several float outputs"
        raise UsageError(
            f"the model has {problem} (outputs: {names}); pick one with --score-output"
        )
    return candidates[0]


class Scorer:
    """Feature columns of an Arrow batch in, one float64 score per row out."""

    def __init__(
        self,
        model: Model,
        feeds: list[Feed],
        output: Tensor,
        *,
        score_class: str | None = None,
        fill_null: dict[str, Any] | None = None,
        rowid_column: str = "userid",
    ) -> None:
        self.session = model.session
        self.feeds = feeds
        self.output = output
        self.zipmap = output.type.startswith("seq(")
        self.score_class = score_class
        self.fill = fill_null or {}
        self.rowid_column = rowid_column
        self._label: Any = None  # the ZipMap key scored, fixed at the first batch
        self._column: int | None = None
        width = _width(output.shape)
        if not self.zipmap and score_class is not None:
            if width == 1 or len(output.shape) == 1:
                raise UsageError(
                    f"output {output.name!r} holds one value per row; --score-class applies "
                    "to class probabilities"
                )
            self._column = self._class_index(score_class, width)
        elif not self.zipmap and width is not None and len(output.shape) == 2:
            self._column = self._default_column(width)  # before any row is read

    def _default_column(self, width: int) -> int:
        """The positive class of a probability tensor, which carries no labels: of two
        classes the second (label 1 or true, as every converter orders them); of more,
        the user must say which, or a ZipMap's label 1 and the tensor's last would differ."""
        if width <= 2:
            return width - 1
        raise UsageError(
            f"output {self.output.name!r} holds the probabilities of {width} classes but not "
            f"their labels; choose a column with --score-class 0..{width - 1}, or export the "
            "model with a ZipMap, whose labels mbp reads"
        )

    def _class_index(self, label: str, width: int | None) -> int:
        ok = label.strip().isdigit() and (width is None or int(label) < width)
        if not ok:
            span = f"0..{width - 1}" if width else "0, 1, ..."
            problem = "is out of range" if label.strip().isdigit() else "is not a column index"
            raise UsageError(
                f"--score-class {label!r} {problem}: output {self.output.name!r} has no class "
                f"labels, only columns {span}; give one of them"
            )
        return int(label)

    def score(self, batch: pa.RecordBatch) -> np.ndarray:
        """Scores for the rows of `batch`, which holds the feature and rowid columns."""
        inputs = {f.input: self._matrix(batch, f) for f in self.feeds}
        try:
            (raw,) = self.session.run([self.output.name], inputs)
        except Exception as exc:  # onnxruntime's own exception types
            raise RuntimeFailure(f"the model failed on a batch: {first_line(exc)}") from exc
        return self._pick(raw)

    def _matrix(self, batch: pa.RecordBatch, feed: Feed) -> np.ndarray:
        n = batch.num_rows
        x = np.empty((n, len(feed.columns)), dtype=feed.dtype)
        for j, name in enumerate(feed.columns):
            col = batch.column(name)
            if col.null_count:
                if feed.input not in self.fill:
                    self._fail(batch, name, col.is_null().index(True).as_py(), "a null")
                col = _filled(col, self.fill[feed.input], feed.dtype)
            if pa.types.is_decimal(col.type):
                col = col.cast(pa.float64())
            values = col.to_numpy(zero_copy_only=False)
            if feed.dtype in (np.int32, np.int64) and values.size:
                self._check_range(batch, name, values, feed.dtype)
            with np.errstate(over="ignore"):  # too large for float32: caught as infinite below
                x[:, j] = values
        if feed.dtype in (np.float32, np.float64):
            self._check_finite(batch, feed, x)
        return x if feed.rank == 2 else x[:, 0]

    def _check_range(self, batch: pa.RecordBatch, name: str, values: Any, dtype: type) -> None:
        # numpy wraps an integer that does not fit (3,000,000,000 as int32 is -1,294,967,296).
        info = np.iinfo(dtype)
        bad = (values < info.min) | (values > info.max)
        if bad.any():
            row = int(np.argmax(bad))
            rowid = batch.column(self.rowid_column)[row].as_py()
            raise UsageError(
                f"column {name!r} has {values[row]} for rowid {rowid!r}, which does not fit "
                f"the model's {np.dtype(dtype).name} input; fix the input"
            )

    def _check_finite(self, batch: pa.RecordBatch, feed: Feed, x: np.ndarray) -> None:
        if np.isfinite(x).all():
            return
        nan = np.isnan(x)
        if nan.any():
            if feed.input not in self.fill:
                row, j = np.argwhere(nan)[0]
                self._fail(batch, feed.columns[j], int(row), "a NaN")
            x[nan] = self.fill[feed.input]
        inf = ~np.isfinite(x)
        if inf.any():
            row, j = np.argwhere(inf)[0]
            self._fail(batch, feed.columns[j], int(row), "an infinite (or too large) value")

    def _fail(self, batch: pa.RecordBatch, column: str, row: int, what: str) -> None:
        rowid = batch.column(self.rowid_column)[row].as_py()
        hint = "" if "infinite" in what else ", or fill them with --fill-null VALUE"
        raise UsageError(f"column {column!r} has {what} for rowid {rowid!r}; fix the input{hint}")

    def _pick(self, raw: Any) -> np.ndarray:
        if self.zipmap:
            return self._pick_zipmap(raw)
        out = np.asarray(raw)
        if out.ndim == 1:
            return out.astype(np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0].astype(np.float64)
        if out.ndim != 2:
            raise RuntimeFailure(
                f"output {self.output.name!r} has shape {out.shape}; expected [N], [N, 1] or [N, C]"
            )
        if self._column is None:
            self._column = self._default_column(out.shape[1])
        elif self._column >= out.shape[1]:
            raise UsageError(
                f"--score-class {self._column}: output {self.output.name!r} has only "
                f"{out.shape[1]} columns"
            )
        return out[:, self._column].astype(np.float64)

    def _pick_zipmap(self, rows: Sequence[dict[Any, float]]) -> np.ndarray:
        if not rows:
            return np.empty(0, dtype=np.float64)
        if self._label is None:
            self._label = self._zipmap_label(list(rows[0].keys()))
        key = self._label
        return np.fromiter((r[key] for r in rows), dtype=np.float64, count=len(rows))

    def _zipmap_label(self, labels: list[Any]) -> Any:
        if self.score_class is not None:
            for label in labels:
                if str(label) == self.score_class:
                    return label
            raise UsageError(
                f"--score-class {self.score_class!r} is not a class of the model "
                f"(classes: {', '.join(str(x) for x in labels)})"
            )
        for label in labels:
            if str(label).lower() in _TRUE_LABELS:
                return label
        return labels[-1]


def _filled(col: pa.Array, value: Any, dtype: type) -> pa.Array:
    # Widen first so the fill value fits: 0.5 into an integer column feeding a float input.
    if dtype in (np.float32, np.float64):
        col = col.cast(pa.float64())
    elif dtype in (np.int64, np.int32):
        col = col.cast(pa.int64())
    return col.fill_null(value)
