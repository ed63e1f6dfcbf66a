"""The real shell pipelines on sample_data/, through the installed `mbp` script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
BIN = Path(sys.executable).parent
MODEL = SAMPLE / "models" / "ltv" / "1997-09.onnx"


def sh(script: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MBP_")}
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env or {})
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A private copy of sample_data, so runs never touch the repository."""
    dest = tmp_path / "sample_data"
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("predictions"))
    return dest


def active_ids(day_end: datetime) -> list[str]:
    """Customers with a purchase in the day before `day_end`, by a hand-written query."""
    end = int(day_end.timestamp())
    rows = duckdb.execute(
        "SELECT DISTINCT userid FROM read_parquet(?) WHERE time >= ? AND time < ? ORDER BY 1",
        [str(SAMPLE / "sessions.parquet"), end - 86400, end],
    ).fetchall()
    return [r[0] for r in rows]


def expected_scores(ids: list[str]) -> dict[str, float]:
    """onnxruntime run directly on the feature rows of `ids`."""
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    features = json.loads(session.get_modelmeta().custom_metadata_map["features"])
    con = duckdb.connect()
    con.execute("CREATE TABLE wanted (userid VARCHAR)")
    con.executemany("INSERT INTO wanted VALUES (?)", [[i] for i in ids])
    cols = ", ".join(f'f."{c}"' for c in features)
    table = con.execute(
        f"SELECT f.userid, {cols} FROM read_parquet(?) f JOIN wanted USING (userid)",
        [str(SAMPLE / "features.parquet")],
    ).fetchnumpy()
    x = np.column_stack([table[c] for c in features]).astype(np.float32)
    probabilities = session.run(["probabilities"], {session.get_inputs()[0].name: x})[0]
    scores = probabilities[:, 1].astype(float).tolist()
    return dict(zip(table["userid"].tolist(), scores, strict=True))


def written(dataset: Path) -> dict[str, float]:
    rows = duckdb.execute(
        "SELECT userid, score FROM read_parquet(?, hive_partitioning = true)",
        [str(dataset / "**" / "*.parquet")],
    ).fetchall()
    assert len(rows) == len({r[0] for r in rows}), "a user was written twice"
    return dict(rows)


def assert_scores(got: dict[str, float], want: dict[str, float]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6)


DAY = datetime(1997, 10, 2, tzinfo=UTC)
LIST = "mbp list-users --sessions sessions.parquet --window 1d --timezone UTC"
PREDICT = (
    "mbp predict --model ltv --models-dir models --input features.parquet "
    "--output out --timezone UTC -q"
)


def test_command_substitution_pipeline(sample: Path) -> None:
    run = sh(
        f"T=1997-10-02T00:00:00\n{PREDICT} --scheduled-time $T "
        f'--rowid-filter "$({LIST} --scheduled-time $T)"',
        cwd=sample,
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    ids = active_ids(DAY)
    assert len(ids) == 80
    assert_scores(written(sample / "out"), expected_scores(ids))
    part = sample / "out" / "dt=1997-10-02" / "part-19971002T000000.parquet"
    table = pq.read_table(part)
    assert set(table.column("time").to_pylist()) == {int(DAY.timestamp())}
    assert set(table.column("model_version").to_pylist()) == {"1997-09"}


def test_stdin_pipeline_and_rerun_is_idempotent(sample: Path) -> None:
    script = (
        f"T=1997-10-02T00:00:00\n{LIST} --scheduled-time $T | "
        f"{PREDICT} --scheduled-time $T --rowid-filter -"
    )
    for _ in range(2):
        run = sh(script, cwd=sample)
        assert (run.returncode, run.stderr) == (0, "")
    assert_scores(written(sample / "out"), expected_scores(active_ids(DAY)))


def test_twenty_thousand_ids_through_stdin(sample: Path) -> None:
    ids = [
        r[0]
        for r in duckdb.execute(
            "SELECT userid FROM read_parquet(?) ORDER BY hash(userid) LIMIT 20000",
            [str(SAMPLE / "features.parquet")],
        ).fetchall()
    ]
    ids_text = ",".join(f"'{i}'" for i in ids) + ",'nobody'"
    assert len(ids_text) > 128 * 1024  # more than one shell argument may hold
    run = sh(
        f"{PREDICT.replace(' -q', '')} --scheduled-time 1997-10-02T00:00:00 "
        "--rowid-filter - --json",
        cwd=sample,
        stdin=ids_text,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["ids_given"] == 20001
    assert summary["ids_without_row"] == 1
    assert summary["rows_written"] == 20000
    assert_scores(written(sample / "out"), expected_scores(ids))


def test_pipeline_from_a_folder_with_only_mbp_toml(tmp_path: Path, sample: Path) -> None:
    job = tmp_path / "srv" / "ltv"
    job.mkdir(parents=True)
    (job / "mbp.toml").write_text(
        f'timezone = "UTC"\n'
        f'[list-users]\nsessions = "{sample / "sessions.parquet"}"\nwindow = "1d"\n'
        f'[predict]\nmodel = "ltv"\nmodels_dir = "{sample / "models"}"\n'
        f'input = "{sample / "features.parquet"}"\noutput = "predictions"\ninterval = "1d"\n'
        f'[rank]\npredictions = "predictions"\nuser_info = "{sample / "user_info.parquet"}"\n'
        f"threshold = 0.0\nlimit = 0\n"
    )
    run = sh(
        'mbp predict -q --rowid-filter "$(mbp list-users)"\nmbp rank --format json',
        cwd=job,
        env={"MBP_SCHEDULED_TIME": "1997-10-02T00:00:00"},
    )
    assert run.returncode == 0, run.stderr
    want = expected_scores(active_ids(DAY))
    assert_scores(written(job / "predictions"), want)
    ranked = json.loads(run.stdout)
    assert [r["userid"] for r in ranked] == sorted(want, key=lambda k: (-want[k], k))
    assert all(r["user_email"].endswith("@example.com") for r in ranked)


def test_rank_into_head_ends_quietly(sample: Path) -> None:
    setup = sh(
        f"{PREDICT} --scheduled-time 1997-10-02T00:00:00 --rowid-filter "
        f'"$({LIST} --scheduled-time 1997-10-02T00:00:00)"',
        cwd=sample,
    )
    assert setup.returncode == 0, setup.stderr
    run = sh("mbp rank --predictions out --threshold 0 --limit 0 | head -n 2", cwd=sample)
    assert run.returncode == 0
    assert run.stderr == ""
    assert len(run.stdout.splitlines()) == 2


# --- the README ------------------------------------------------------------------------

README = (REPO / "README.md").read_text()
# ```sh blocks are the runnable walk-through; a ```text block right after one is its output.
BLOCKS = re.findall(r"```sh\n(.*?)```\n(?:```text\n(.*?)```)?", README, flags=re.S)


def test_readme_has_runnable_blocks() -> None:
    assert len(BLOCKS) >= 5


def test_readme_first_commands_are_demo_and_test() -> None:
    first = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_blocks_run_in_order(tmp_path: Path) -> None:
    """Each walk-through block runs in a fresh copy of sample_data, in README order
    (later blocks read what earlier ones wrote), and prints what the README shows."""
    shutil.copytree(SAMPLE, tmp_path / "sample_data", ignore=shutil.ignore_patterns("predictions"))
    for script, shown in BLOCKS:
        run = sh(script, cwd=tmp_path)
        assert run.returncode == 0, f"README block failed:\n{script}\n{run.stderr}"
        if shown:
            stable = [ln for ln in shown.splitlines() if not re.search(r"\d s\b", ln)]
            output = (run.stdout + run.stderr).splitlines()
            for line in stable:
                assert line in output, f"README shows {line!r}, the run printed:\n{output}"


@pytest.mark.parametrize("command", ["list-users", "predict", "rank", "config"])
def test_every_command_has_help_with_an_example_and_is_in_the_readme(mbp, command: str) -> None:
    code, out, err = mbp(command, "--help")
    assert (code, err) == (0, "")
    assert "Example" in out
    assert f"mbp {command}" in README
