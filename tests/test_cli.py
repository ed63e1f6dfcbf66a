"""The command line itself: option values as flags, variables and TOML, and a lean start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from models import build, table

END = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """Three users scored 0.2, 0.6 and 0.9 in one batch."""
    folder = tmp_path / "predictions" / "dt=2026-12-03"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "userid": ["a", "b", "c"],
                "score": [0.2, 0.6, 0.9],
                "time": [int(END.timestamp())] * 3,
                "model": ["m"] * 3,
                "model_version": ["1"] * 3,
            }
        ),
        folder / "part-20261203T100000.parquet",
    )
    return tmp_path / "predictions"


def ranked(out: str) -> list[str]:
    return [line.split(",")[0].strip('"') for line in out.splitlines()[1:]]


@pytest.mark.parametrize(
    ("args", "env", "users"),
    [
        (["--threshold", "0.5"], {}, ["c", "b"]),
        (["--threshold", " 5e-1 "], {}, ["c", "b"]),
        (["--threshold", "1"], {}, []),
        ([], {"MBP_THRESHOLD": "0.1"}, ["c", "b", "a"]),
        (["--limit", "+1", "--threshold", "0"], {}, ["c"]),
        ([], {"MBP_LIMIT": "2", "MBP_THRESHOLD": "0"}, ["c", "b"]),
    ],
)
def test_numbers_from_flags_and_variables(mbp, history, args, env, users) -> None:
    code, out, err = mbp("rank", "--predictions", str(history), "--format", "csv", *args, env=env)
    assert (code, err) == (0, "")
    assert ranked(out) == users


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--limit", "abc"], {"MBP_LIMIT": "5"}, "Invalid value for '--limit': 'abc'"),
        (["--limit", "1.5"], {}, "'1.5' is not a whole number"),
        (["--limit", "1_000"], {}, "'1_000' is not a whole number"),
        (["--threshold", "high"], {}, "'high' is not a number"),
        (["--threshold", "1_0"], {}, "'1_0' is not a number"),
        (["--limit", "\u0663"], {}, "'\u0663' is not a whole number"),  # an Arabic-Indic 3
        (["--since", "\u096bm"], {}, "is not a duration"),  # a Devanagari 5
        ([], {"MBP_LIMIT": "ten"}, "Invalid value for 'MBP_LIMIT': 'ten' is not a whole"),
    ],
)
def test_bad_numbers_are_usage_errors(mbp, history, args, env, needle) -> None:
    code, out, err = mbp("rank", "--predictions", str(history), *args, env=env)
    assert (code, out) == (2, "")
    assert err.startswith("mbp: error: ") and err.count("\n") == 1
    assert needle in err


def predict_args(tmp_path: Path) -> list[str]:
    pq.write_table(table(50, seed=3), tmp_path / "features.parquet")
    model = build()["regressor"]
    return [
        "predict",
        "--model",
        str(model),
        "--input",
        str(tmp_path / "features.parquet"),
        "--output",
        str(tmp_path / "out"),
        "--scheduled-time",
        END.isoformat(),
    ]


@pytest.mark.parametrize("value", ["1", "true", "Yes", "on", " t "])
def test_true_flags_from_variables(mbp, tmp_path, value) -> None:
    code, out, err = mbp(*predict_args(tmp_path), env={"MBP_QUIET": value})
    assert (code, out, err) == (0, "", "")
    assert list((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_false_flags_from_variables(mbp, tmp_path, value) -> None:
    code, out, err = mbp(*predict_args(tmp_path), env={"MBP_QUIET": value})
    assert (code, out) == (0, "")
    assert err.startswith("mbp predict: ")


def test_a_flag_variable_that_is_not_a_boolean(mbp, tmp_path) -> None:
    code, out, err = mbp(*predict_args(tmp_path), env={"MBP_QUIET": "maybe"})
    assert (code, out) == (2, "")
    assert "'maybe' is not true or false" in err
    assert not (tmp_path / "out").exists()


def test_typed_values_from_the_config_file(mbp, history, tmp_path) -> None:
    cfg = tmp_path / "mbp.toml"
    cfg.write_text("[rank]\nthreshold = 0\nlimit = 2\n")  # an integer where a float goes
    code, out, err = mbp("rank", "--predictions", str(history), "--config", str(cfg))
    assert (code, err) == (0, "")
    assert ranked(out) == ["c", "b"]


# What `mbp` imports decides what every cron run pays before it does any work.
PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["mbp", *json.loads(sys.argv[1])]
from mbp.cli import main
main()
"""


def imported(args: list[str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_predict_starts_without_pandas_pydantic_or_compute(tmp_path) -> None:
    modules = imported([*predict_args(tmp_path), "-q", "--rowid-filter", "'u1','u2'"])
    assert "onnxruntime" in modules and "duckdb" in modules  # the probe saw the real work
    for heavy in ("pandas", "pydantic", "pyarrow.compute"):
        assert heavy not in modules, heavy


def test_version_imports_no_data_library() -> None:
    modules = imported(["--version"])
    for heavy in ("duckdb", "pyarrow", "onnxruntime", "numpy", "pydantic"):
        assert heavy not in modules, heavy


@pytest.mark.parametrize("command", ["list-users", "predict", "rank", "config"])
def test_help_examples_are_shown_whole(mbp, command) -> None:
    """An example folded at the terminal width (`--dry-` / `run`) breaks when pasted."""
    from mbp.cli import app

    (callback,) = [c.callback for c in app.registered_commands if c.name == command]
    doc = callback.__doc__ or ""
    example = [ln.strip() for ln in doc.split("Example:")[1].splitlines() if ln.strip()]
    example = [ln for ln in example if ln != "\b"]  # click's no-rewrap marker
    assert example and example[0].startswith(("mbp ", "MBP_"))
    code, out, err = mbp(command, "--help", env={"COLUMNS": "60"})
    assert (code, err) == (0, "")
    shown = [ln.strip() for ln in out.splitlines()]
    for line in example:
        assert line in shown, line


@pytest.mark.parametrize("delay", [0.05, 0.1])
@pytest.mark.parametrize(
    ("signum", "code", "word"), [(2, 130, "interrupted"), (15, 143, "terminated")]
)
def test_a_signal_while_the_command_starts_is_one_line(tmp_path, delay, signum, code, word) -> None:
    import time

    mbp = Path(sys.executable).parent / "mbp"
    proc = subprocess.Popen(
        [str(mbp), *predict_args(tmp_path), "--rowid-filter", "'u00001'"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)  # the imports alone take longer than `delay`
    assert (proc.returncode, out) == (code, "")
    assert err == f"mbp: error: {word}\n"
    assert not (tmp_path / "out").exists()


def test_mbp_alone_shows_the_help_on_stderr(mbp) -> None:
    code, out, err = mbp()
    assert (code, out) == (2, "")
    assert err.startswith("Usage: mbp [OPTIONS] COMMAND")
    assert "list-users" in err and "\n  predict " in err


def test_help_lists_the_commands_in_pipeline_order(mbp) -> None:
    code, out, err = mbp("--help")
    assert (code, err) == (0, "")
    listed = [ln.split()[0] for ln in out.split("Commands:")[1].splitlines() if ln.strip()]
    assert listed == ["list-users", "predict", "rank", "config"]


def test_a_flag_turns_off_what_the_config_file_turns_on(mbp, tmp_path) -> None:
    cfg = tmp_path / "mbp.toml"
    cfg.write_text("[predict]\nquiet = true\njson = true\n")
    code, out, err = mbp(*predict_args(tmp_path), "--config", str(cfg), "--no-quiet", "--no-json")
    assert (code, out) == (0, "")
    assert err.startswith("mbp predict: ")
    code, out, err = mbp(*predict_args(tmp_path), "--config", str(cfg))
    assert code == 0 and err == "" and json.loads(out)["rows_written"] == 50


def test_a_folder_where_the_batch_file_goes_is_a_usage_error(mbp, tmp_path) -> None:
    blocker = tmp_path / "out" / "dt=2026-12-03" / "part-20261203T100000.parquet"
    (blocker / "x").mkdir(parents=True)
    code, out, err = mbp(*predict_args(tmp_path), "--timezone", "UTC")
    assert (code, out) == (2, "")
    assert err == (
        f"mbp: error: the batch file {blocker} is a folder, which mbp would not replace; "
        "move it away or choose another --output\n"
    )
    assert sorted(p.name for p in blocker.parent.iterdir()) == [blocker.name]


def test_lines_refuses_an_empty_id(mbp, tmp_path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"userid": ["", "a"], "time": [int(END.timestamp()) - 1] * 2}), path)
    code, out, err = mbp("list-users", "--sessions", str(path), "--format", "lines",
                         "--scheduled-time", END.isoformat())  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith("mbp: error: an empty id cannot be given one per line")
