"""`-o FILE`: whole or not at all, with a plain file's mode, and never replacing a link,
a device or a pipe."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

END = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.parquet"
    e = int(END.timestamp())
    pq.write_table(pa.table({"userid": ["b", "a"], "time": [e - 60, e - 30]}), path)
    return path


def list_users(mbp, sessions: Path, output: Path | str):
    return mbp(
        "list-users", "--sessions", str(sessions), "--scheduled-time", END.isoformat(),
        "--timezone", "UTC", "-o", str(output),
    )  # fmt: skip


def test_a_new_file_gets_the_mode_of_the_umask(mbp, sessions, tmp_path) -> None:
    old = os.umask(0o027)
    try:
        assert list_users(mbp, sessions, tmp_path / "ids.txt") == (0, "", "")
    finally:
        os.umask(old)
    assert (tmp_path / "ids.txt").read_text() == "'a','b'\n"
    assert stat.S_IMODE(os.stat(tmp_path / "ids.txt").st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_existing_file_keeps_its_mode(mbp, sessions, tmp_path) -> None:
    target = tmp_path / "ids.txt"
    target.write_text("old")
    os.chmod(target, 0o604)
    assert list_users(mbp, sessions, target)[0] == 0
    assert target.read_text() == "'a','b'\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o604


def test_a_symlink_is_followed_not_replaced(mbp, sessions, tmp_path) -> None:
    real, link = tmp_path / "real.txt", tmp_path / "link.txt"
    real.write_text("old")
    link.symlink_to(real)
    assert list_users(mbp, sessions, link)[0] == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "'a','b'\n"


def test_a_named_pipe_is_written_into(mbp, sessions, tmp_path) -> None:
    fifo = tmp_path / "ids.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert list_users(mbp, sessions, fifo)[0] == 0
    reader.join(timeout=10)
    assert got == ["'a','b'\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_folder_is_a_usage_error(mbp, sessions, tmp_path) -> None:
    (tmp_path / "dir").mkdir()
    code, out, err = list_users(mbp, sessions, tmp_path / "dir")
    assert (code, out) == (2, "")
    assert err == f"mbp: error: -o {str(tmp_path / 'dir')!r} is a folder; give the name of a file\n"


def test_a_missing_folder_is_a_usage_error(mbp, sessions, tmp_path) -> None:
    code, out, err = list_users(mbp, sessions, tmp_path / "nope" / "ids.txt")
    assert (code, out) == (2, "")
    assert "check the folder" in err


def test_rank_parquet_output_through_a_symlink(mbp, tmp_path) -> None:
    folder = tmp_path / "pred" / "dt=2026-12-03"
    folder.mkdir(parents=True)
    batch = {"userid": ["a"], "score": [0.9], "time": [1], "model": ["m"], "model_version": ["1"]}
    pq.write_table(pa.table(batch), folder / "part-20261203T100000.parquet")
    real, link = tmp_path / "real.parquet", tmp_path / "top.parquet"
    real.write_bytes(b"")
    link.symlink_to(real)
    code, out, err = mbp("rank", "--predictions", str(tmp_path / "pred"), "-o", str(link))
    assert (code, out, err) == (0, "", "")
    assert link.is_symlink()
    assert pq.read_table(real)["userid"].to_pylist() == ["a"]


def test_closed_stdout_is_a_runtime_failure(sessions) -> None:
    script = (
        f"exec >&-; {Path(sys.executable).parent / 'mbp'} list-users --sessions {sessions} "
        f"--scheduled-time {END.isoformat()} --timezone UTC"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == "mbp: error: standard output is closed; redirect it or give -o FILE\n"


def test_closed_stdin_for_a_filter_from_stdin_is_a_usage_error(tmp_path) -> None:
    script = f"exec <&-; {Path(sys.executable).parent / 'mbp'} predict --rowid-filter - --model x"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("mbp: error: --rowid-filter - reads standard input, which is")


def test_closed_stderr_keeps_messages_off_stdout(sessions, tmp_path) -> None:
    mbp = Path(sys.executable).parent / "mbp"
    script = f"exec 2>&-; {mbp} list-users --sessions {sessions} --window 0s; echo rc=$?"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout == "rc=2\n"  # the error went nowhere, not into the data


def shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=cwd, env=env)


def predictions(tmp_path: Path) -> Path:
    folder = tmp_path / "pred" / "dt=2026-12-03"
    folder.mkdir(parents=True)
    batch = {"userid": ["a"], "score": [0.9], "time": [1], "model": ["m"], "model_version": ["1"]}
    pq.write_table(pa.table(batch), folder / "part-20261203T100000.parquet")
    return tmp_path / "pred"


def test_rank_with_stdout_closed_writes_to_o_or_says_so(tmp_path) -> None:
    pred = predictions(tmp_path)
    done = shell(f"exec >&-; mbp rank --predictions {pred} -o r.csv", tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "r.csv").read_text().splitlines()[1] == '"a",0.9,1,"m","1"'
    done = shell(f"exec >&-; mbp rank --predictions {pred}", tmp_path)
    assert done.returncode == 1
    assert done.stderr == "mbp: error: standard output is closed; redirect it or give -o FILE\n"


def test_config_with_stdout_closed_names_a_fix_it_has(tmp_path) -> None:
    done = shell("exec >&-; mbp config rank", tmp_path)
    assert (done.returncode, done.stderr) == (
        1,
        "mbp: error: standard output is closed; redirect it\n",
    )


def test_predict_json_with_stdout_closed_writes_no_batch(tmp_path) -> None:
    from models import build, table

    pq.write_table(table(50, seed=3), tmp_path / "features.parquet")
    model = build()["regressor"]
    script = (
        f"exec >&-; mbp predict --model {model} --input features.parquet --output out "
        f"--scheduled-time {END.isoformat()} --json"
    )
    done = shell(script, tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        "mbp: error: standard output is closed; redirect it, or leave out --json\n"
    )
    assert not (tmp_path / "out").exists()


def test_leftovers_of_killed_writers_are_removed_live_ones_kept(mbp, sessions, tmp_path) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid names no process now
    dead = tmp_path / f".ids.txt.{finished.pid}.abc123.tmp"
    live = tmp_path / f".ids.txt.{os.getpid()}.def456.tmp"
    other = tmp_path / ".notes.txt.1.x.tmp"  # not the target's: left alone
    for path in (dead, live, other):
        path.write_text("half")
    assert list_users(mbp, sessions, tmp_path / "ids.txt") == (0, "", "")
    assert not dead.exists()
    assert live.exists() and other.exists()
    assert (tmp_path / "ids.txt").read_text() == "'a','b'\n"


@pytest.mark.parametrize("where", ["the file", "inside the folder"])
def test_o_never_overwrites_an_input_of_the_run(mbp, sessions, tmp_path, where) -> None:
    pred = predictions(tmp_path)
    info = tmp_path / "info.parquet"
    pq.write_table(pa.table({"userid": ["a"], "name": ["Ann"]}), info)
    before = {p: p.read_bytes() for p in [info, sessions, *pred.rglob("*.parquet")]}
    batch = next(pred.rglob("*.parquet"))
    if where == "the file":
        runs = [
            (["rank", "--predictions", str(pred), "--user-info", str(info), "-o", str(info)],
             f"-o {str(info)!r} would overwrite the user info {str(info)!r}"),
            (["list-users", "--sessions", str(sessions), "-o", str(sessions)],
             f"-o {str(sessions)!r} would overwrite the sessions {str(sessions)!r}"),
        ]  # fmt: skip
    else:
        runs = [
            (["rank", "--predictions", str(pred), "-o", str(batch)],
             f"-o {str(batch)!r} would overwrite the predictions {str(pred)!r}"),
            (["list-users", "--sessions", str(tmp_path), "-o", str(tmp_path / "ids.txt")],
             f"-o {str(tmp_path / 'ids.txt')!r} would overwrite the sessions {str(tmp_path)!r}"),
        ]  # fmt: skip
    for args, message in runs:
        code, out, err = (
            mbp(*args, "--scheduled-time", END.isoformat())
            if args[0] == "list-users"
            else mbp(*args)
        )
        assert (code, out) == (2, "")
        assert err == f"mbp: error: {message}, which this run reads; write the output elsewhere\n"
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "ids.txt").exists()
