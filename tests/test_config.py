"""Settings from flags, MBP_* variables and mbp.toml, in that order of priority."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

END = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    """Events 1, 10 and 100 minutes before END: the window length decides who is active."""
    e = int(END.timestamp())
    path = tmp_path / "data" / "sessions.parquet"
    path.parent.mkdir()
    pq.write_table(
        pa.table({"userid": ["m1", "m10", "m100"], "time": [e - 60, e - 600, e - 6000]}), path
    )
    return path


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mbp.toml"
    path.write_bytes(text.encode("latin-1" if "\xfc" in text else "utf-8"))
    return path


ARGS = ("list-users", "--scheduled-time", END.isoformat())


def test_file_beats_default(mbp, sessions: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f'[list-users]\nsessions = "{sessions}"\nwindow = "15m"\n')
    assert mbp(*ARGS, "--config", str(cfg))[:2] == (0, "'m1','m10'\n")


def test_env_beats_file(mbp, sessions: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f'[list-users]\nsessions = "{sessions}"\nwindow = "15m"\n')
    code, out, _ = mbp(*ARGS, "--config", str(cfg), env={"MBP_WINDOW": "2h"})
    assert (code, out) == (0, "'m1','m10','m100'\n")


def test_flag_beats_env(mbp, sessions: Path) -> None:
    code, out, _ = mbp(
        *ARGS, "--sessions", str(sessions), "--window", "5m", env={"MBP_WINDOW": "2h"}
    )
    assert (code, out) == (0, "'m1'\n")


def test_flag_beats_file(mbp, sessions: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f'[list-users]\nsessions = "{sessions}"\nwindow = "2h"\n')
    assert mbp(*ARGS, "--config", str(cfg), "--window", "15m")[:2] == (0, "'m1','m10'\n")


def test_env_beats_default(mbp, sessions: Path) -> None:
    code, out, _ = mbp(*ARGS, env={"MBP_SESSIONS": str(sessions), "MBP_WINDOW": "15m"})
    assert (code, out) == (0, "'m1','m10'\n")


def test_shared_keys_apply_and_tables_override(mbp, sessions: Path, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, f'window = "2h"\nsessions = "{sessions}"\n[list-users]\nwindow = "15m"\n'
    )
    assert mbp(*ARGS, "--config", str(cfg))[:2] == (0, "'m1','m10'\n")


def test_mbp_toml_in_the_working_folder_is_read(mbp, sessions: Path, tmp_path: Path) -> None:
    write_config(Path.cwd(), f'[list-users]\nsessions = "{sessions}"\nwindow = "15m"\n')
    assert mbp(*ARGS)[:2] == (0, "'m1','m10'\n")


def test_config_from_environment(mbp, sessions: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "etc", f'[list-users]\nsessions = "{sessions}"\n')
    assert mbp(*ARGS, env={"MBP_CONFIG": str(cfg)})[:2] == (0, "'m1'\n")


def test_relative_paths_are_relative_to_the_file(mbp, sessions: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "conf", '[list-users]\nsessions = "../data/sessions.parquet"\n')
    assert Path.cwd() != cfg.parent
    assert mbp(*ARGS, "--config", str(cfg))[:2] == (0, "'m1'\n")
    # A relative flag stays relative to the working folder.
    os.chdir(tmp_path)
    assert mbp(*ARGS, "--sessions", "data/sessions.parquet")[:2] == (0, "'m1'\n")


@pytest.mark.parametrize(
    "text,needle",
    [
        (
            'timzone = "UTC"\n',
            "unknown key 'timzone' at the top in config file '{cfg}'; did you mean 'timezone'?",
        ),
        (
            '[list-users]\nwindw = "5m"\n',
            "unknown key 'windw' in [list-users] in config file '{cfg}'; did you mean 'window'?",
        ),
        ("[list-users]\nthreshold = 0.5\n", "unknown key 'threshold' in [list-users]"),
        (
            '[predcit]\nmodel = "x"\n',
            "unknown key 'predcit' (a table) in config file '{cfg}'; did you mean 'predict'?",
        ),
        (
            "[list-users]\nwindow = 5\n",
            "key 'window' in config file '{cfg}': expected text in quotes, got 5; "
            'write it as window = "5"',
        ),
        (
            "scheduled_time = 2026-12-03T10:05:00\n",
            "key 'scheduled_time' in config file '{cfg}': expected text in quotes, got "
            '2026-12-03 10:05:00; write it as scheduled_time = "2026-12-03 10:05:00"',
        ),
        ("[list-users]\nwindow = true\n", "expected text in quotes, got true;"),
        ('format = "json"\n', "key 'format' in config file '{cfg}' differs by command"),
        ("[list-users\n", "config file '{cfg}' is not valid TOML"),
        ('timezone = "Europe/M\xfcnchen"\n', "config file '{cfg}' is not UTF-8 (byte 0xfc at"),
    ],
)
def test_bad_config_exits_2_naming_key_and_file(
    mbp, tmp_path: Path, text: str, needle: str
) -> None:
    cfg = write_config(tmp_path, text)
    code, out, err = mbp(*ARGS, "--config", str(cfg))
    assert (code, out) == (2, "")
    assert err.startswith("mbp: error: ") and err.count("\n") == 1
    assert needle.format(cfg=cfg) in err


def test_missing_config_file(mbp, tmp_path: Path) -> None:
    code, out, err = mbp(*ARGS, "--config", str(tmp_path / "nope.toml"))
    assert (code, out) == (2, "")
    assert "does not exist" in err


def test_wrong_type_for_a_number(mbp, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[rank]\nthreshold = "high"\n')
    code, out, err = mbp("rank", "--config", str(cfg))
    assert (code, out) == (2, "")
    assert "key 'threshold' in config file" in err and "expected a number, got 'high'" in err


def test_mbp_config_shows_each_source(mbp, sessions: Path, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, f'timezone = "UTC"\n[list-users]\nsessions = "{sessions}"\nwindow = "15m"\n'
    )
    code, out, err = mbp(
        "config",
        "list-users",
        "--config",
        str(cfg),
        "--time-column",
        "t",
        env={"MBP_LOOKBACK": "1m"},
    )
    assert (code, err) == (0, "")
    by_key = {}
    for line in out.splitlines()[2:]:
        setting, origin = line.split("  # ", 1)
        by_key[setting.split(" = ")[0].lstrip("# ")] = (setting, origin)
    assert by_key["time-column"] == ('time-column = "t"', "flag")
    assert by_key["lookback"] == ('lookback = "1m"', "env MBP_LOOKBACK")
    assert by_key["window"] == ('window = "15m"', f"file {cfg}")
    assert by_key["sessions"] == (f'sessions = "{sessions}"', f"file {cfg}")
    assert by_key["timezone"] == ('timezone = "UTC"', f"file {cfg}")
    assert by_key["userid-column"] == ('userid-column = "userid"', "default")
    assert out.splitlines()[0] == f"# mbp list-users: effective settings (config file: {cfg})"


def test_mbp_config_output_is_valid_toml(mbp, sessions: Path, tmp_path: Path) -> None:
    import tomllib

    code, out, _ = mbp("config", "list-users", "--sessions", str(sessions))
    assert code == 0
    data = tomllib.loads(out)["list-users"]
    assert data["sessions"] == str(sessions) and data["window"] == "5m"


def test_mbp_config_output_pastes_back_as_a_config_file(mbp, tmp_path: Path) -> None:
    """Infinite values in TOML's spelling, and every key under the command's table, so
    command-only keys such as format are accepted back."""
    import tomllib

    code, out, err = mbp("config", "rank", "--predictions", str(tmp_path), "--format", "csv",
                         env={"MBP_LOCK_TIMEOUT": "inf"})  # fmt: skip
    assert (code, err) == (0, "")
    assert tomllib.loads(out)["rank"]["format"] == "csv"
    code, out, err = mbp("config", "predict", env={"MBP_LOCK_TIMEOUT": "inf"})
    assert (code, err) == (0, "")
    assert tomllib.loads(out)["predict"]["lock-timeout"] == float("inf")
    cfg = tmp_path / "mbp.toml"
    cfg.write_text(out)
    code, again, err = mbp("config", "predict", "--config", str(cfg))
    assert (code, err) == (0, "")
    assert tomllib.loads(again)["predict"]["lock-timeout"] == float("inf")


def test_config_as_a_key_of_the_file_is_refused(mbp, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 'config = "other.toml"\n')
    code, out, err = mbp("config", "list-users", "--config", str(cfg))
    assert (code, out) == (2, "")
    assert err.startswith("mbp: error: unknown key 'config' at the top in config file")


def test_a_list_item_with_a_comma_is_refused(mbp, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[rank]\ncolumns = ["a", "b,c"]\n')
    code, out, err = mbp("config", "rank", "--config", str(cfg))
    assert (code, out) == (2, "")
    assert "'columns'" in err and "lists an item with a comma" in err


def test_mbp_config_unknown_command(mbp) -> None:
    code, out, err = mbp("config", "predcit")
    assert (code, out) == (2, "")
    assert "unknown command 'predcit'" in err


def test_a_filter_file_in_the_config_is_relative_to_it(mbp, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "job", '[predict]\nrowid_filter = "@ids.txt"\n')
    code, out, err = mbp("config", "predict", "--config", str(cfg))
    assert (code, err) == (0, "")
    assert f'rowid-filter = "@{tmp_path / "job" / "ids.txt"}"' in out


@pytest.mark.parametrize(
    "how,message",
    [
        ("flag", "--scheduled-time is given but empty (an unset shell variable?)"),
        ("env", "MBP_SCHEDULED_TIME is set but blank"),
        ("file", "scheduled_time in the config file is blank"),
    ],
)
def test_a_blank_scheduled_time_is_refused_not_taken_for_now(
    mbp, sessions: Path, tmp_path: Path, how: str, message: str
) -> None:
    cfg = write_config(tmp_path, f'sessions = "{sessions}"\n')
    args = ["list-users", "--config", str(cfg)]
    env = {}
    if how == "flag":
        args += ["--scheduled-time", " "]
    elif how == "env":
        env["MBP_SCHEDULED_TIME"] = " \t"
    else:
        cfg.write_text(f'sessions = "{sessions}"\nscheduled_time = " "\n')
    code, out, err = mbp(*args, env=env)
    assert (code, out) == (2, "")
    assert err == f"mbp: error: {message}; give a time, or leave it out to use now\n"


def test_an_empty_scheduled_time_variable_is_refused(mbp, sessions: Path) -> None:
    """`export MBP_SCHEDULED_TIME=$T` with T unset must not silently score "now"."""
    args = ["list-users", "--sessions", str(sessions)]
    code, out, err = mbp(*args, env={"MBP_SCHEDULED_TIME": ""})
    assert (code, out) == (2, "")
    assert err == (
        "mbp: error: MBP_SCHEDULED_TIME is set but empty (an unset shell variable?); "
        "give a time, or unset it to use now\n"
    )
    # The flag still wins over the variable.
    code, out, _ = mbp(*args, "--scheduled-time", END.isoformat(), env={"MBP_SCHEDULED_TIME": ""})
    assert (code, out) == (0, "'m1'\n")


def test_a_byte_order_mark_in_mbp_toml_is_ignored(mbp, sessions: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "mbp.toml"
    cfg.write_bytes(f'\ufeff[list-users]\nsessions = "{sessions}"\n'.encode())
    assert mbp(*ARGS, "--config", str(cfg))[:2] == (0, "'m1'\n")
