"""Inputs for the reliability tests, made once per session under a temporary folder."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
from harness import BIG_ROWS, NEW, OLD, OLDER, Made, predict_args, run, spawn, visible_files
from models import Models, build


def features(path: Path, rows: int, first: int = 0) -> Path:
    """A feature table made by DuckDB: userid 'u00000000'..., and float features f0, f1, f2."""
    duckdb.connect().execute(
        f"COPY (SELECT 'u' || lpad(i::VARCHAR, 8, '0') AS userid, "
        "hash(i, 1) % 1000 / 500.0 - 1 AS f0, hash(i, 2) % 1000 / 500.0 - 1 AS f1, "
        f"hash(i, 3) % 1000 / 500.0 - 1 AS f2 FROM range({first}, {first + rows}) t(i)) "
        f"TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 100000)"
    )
    return path


@pytest.fixture(scope="session")
def models() -> Models:
    return build()


@pytest.fixture(scope="session")
def model(models: Models) -> Path:
    """A logistic regression over f0, f1, f2 (skl2onnx, probabilities as a tensor)."""
    return models["tensor"]


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return features(tmp_path_factory.mktemp("big") / "features.parquet", BIG_ROWS)


@pytest.fixture(scope="session")
def medium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return features(tmp_path_factory.mktemp("medium") / "features.parquet", 200_000)


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Users disjoint from `big`'s, so their rows are told apart from its batches."""
    return features(tmp_path_factory.mktemp("small") / "features.parquet", 5_000, 5_000_000)


@pytest.fixture(scope="session")
def made(big: Path, small: Path, model: Path, tmp_path_factory: pytest.TempPathFactory) -> Made:
    """The batches NEW (big), OLD and OLDER (small) made by real runs; NEW's run is timed."""
    top = tmp_path_factory.mktemp("made")
    files, roots = {}, {}
    for name, source, when in [("old", small, OLD), ("older", small, OLDER)]:
        roots[name] = top / name
        done = run(predict_args(model, source, roots[name], when))
        assert done.returncode == 0, done.stderr
        (files[name],) = visible_files(roots[name])
    roots["new"] = top / "new"
    started = time.monotonic()
    proc = spawn(predict_args(model, big, roots["new"], NEW))
    while not visible_files(roots["new"]):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    committed = time.monotonic() - started
    assert proc.wait(timeout=120) == 0, proc.communicate()
    (files["new"],) = visible_files(roots["new"])
    return Made(files, roots, time.monotonic() - started, committed)
