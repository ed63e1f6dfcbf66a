"""The TOML configuration file: shared keys at the top, one table per command."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mbp.errors import UsageError

DEFAULT_FILE = "mbp.toml"
COMMANDS = ("list-users", "predict", "rank")

# Options whose values are paths: relative ones in a file are relative to the file.
# Options that mean different things in different commands: only inside a table.
COMMAND_ONLY = {"format", "output"}
PATH_OPTIONS = {"sessions", "input", "output", "predictions", "user_info", "models_dir"}


def key_name(key: str) -> str:
    """`rowid-column` and `rowid_column` are the same key."""
    return key.replace("-", "_")


def read(path: Path) -> dict[str, Any]:
    """The parsed TOML file, or a usage error naming the file."""
    try:
        # utf-8-sig: an editor's byte-order mark is no part of the settings.
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError as exc:
        raise UsageError(f"config file {str(path)!r} does not exist; check --config") from exc
    except OSError as exc:
        raise UsageError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"config file {str(path)!r} is not UTF-8 (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from exc


def find(explicit: str | None, cwd: Path | None = None) -> Path | None:
    """The config file to use: the one given, else ./mbp.toml when present."""
    if explicit:
        return Path(explicit)
    # Relative, so settings read from it stay as short as the user wrote them.
    candidate = cwd / DEFAULT_FILE if cwd else Path(DEFAULT_FILE)
    return candidate if candidate.is_file() else None


def _unknown(key: str, where: str, path: Path, choices: Iterable[str]) -> UsageError:
    close = difflib.get_close_matches(key_name(key), list(choices), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0].replace('_', '-')!r}?" if close else ""
    return UsageError(f"unknown key {key!r} {where} in config file {str(path)!r}{hint}")


def defaults_for(
    data: dict[str, Any],
    path: Path,
    command: str,
    options: set[str],
    all_options: set[str],
) -> dict[str, Any]:
    """The values the file sets for `command`, keyed by option name.

    `options` are the command's option names, `all_options` those of every command
    (a shared key at the top level may belong to another command).
    """
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in COMMANDS:
                raise _unknown(key, "(a table)", path, COMMANDS)
            continue
        name = key_name(key)
        if name not in all_options or name == "config":
            raise _unknown(key, "at the top", path, all_options - {"config"})
        if name in COMMAND_ONLY:
            raise UsageError(
                f"key {key!r} in config file {str(path)!r} differs by command; "
                f"put it in a table such as [rank]"
            )
        if name in options:
            values[name] = value
    table = data.get(command, {})
    for key, value in table.items():
        name = key_name(key)
        if name not in options or name == "config":
            raise _unknown(key, f"in [{command}]", path, options - {"config"})
        values[name] = value
    return {name: _resolve(name, value, path) for name, value in values.items()}


def _resolve(name: str, value: Any, path: Path) -> Any:
    if isinstance(value, list):
        if any("," in str(v) for v in value):
            raise UsageError(
                f"key {name.replace('_', '-')!r} in config file {str(path)!r} lists an item with "
                "a comma, which would read as two; give each name as its own item"
            )
        value = ",".join(str(v) for v in value)
    if name in PATH_OPTIONS and isinstance(value, str) and value and value != "-":
        return str(path.parent / Path(value).expanduser())
    if name == "model" and isinstance(value, str) and ("/" in value or value.endswith(".onnx")):
        return str(path.parent / Path(value).expanduser())
    if name == "rowid_filter" and isinstance(value, str) and value.startswith("@"):
        return "@" + str(path.parent / Path(value[1:]).expanduser())
    return value
