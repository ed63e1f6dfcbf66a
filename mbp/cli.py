"""The command line: parse options, call the core, print. The only module that
imports typer or rich."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer import _click as click
from typer.core import TyperGroup

from mbp import __version__, config
from mbp.errors import Interrupted, MbpError, UsageError

DEBUG_ENV = "MBP_DEBUG"


class MbpGroup(TyperGroup):
    """Runs a command and turns every failure into one line and an exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> NoReturn:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args=args, prog_name=prog_name or "mbp", standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except MbpError as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            _fail(str(exc))
            code = exc.exit_code
        except click.exceptions.ClickException as exc:
            hint = ""
            if isinstance(exc, click.exceptions.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            _fail(exc.format_message().replace("\n", " ") + hint)
            code = exc.exit_code
        except (KeyboardInterrupt, click.exceptions.Abort):
            _fail("interrupted")
            code = 130
        except Exception as exc:  # the last line of defence: one line, not a traceback
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            _fail(f"unexpected {type(exc).__name__}: {exc} (run with MBP_DEBUG=1 for details)")
            code = 1
        sys.exit(code)


def _fail(message: str) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"mbp: error: {first}", file=sys.stderr)


app = typer.Typer(
    cls=MbpGroup,
    name="mbp",
    help="Mini-batch prediction over local Parquet files.\n\n"
    "Example, every five minutes from cron:\n\n"
    "    mbp predict --rowid-filter \"$(mbp list-users)\"",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"mbp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Mini-batch prediction over local Parquet files."""


# --- configuration -----------------------------------------------------------------


def _all_option_names(ctx: click.Context) -> set[str]:
    group = ctx.find_root().command
    names: set[str] = set()
    if isinstance(group, click.Group):
        for sub in group.commands.values():
            names |= {p.name for p in sub.params if p.name}
    return names


def _load_config(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Eager: fills the command's default map from the TOML file before other options
    are read, so the order is flag > environment > file > default."""
    path = config.find(value)
    if path is None:
        return value
    data = config.read(path)
    command = ctx.info_name or ""
    options = {p.name for p in ctx.command.params if p.name}
    values = config.defaults_for(data, path, command, options, _all_option_names(ctx))
    by_name = {p.name: p for p in ctx.command.params}
    for name, raw in values.items():
        option = by_name[name]
        try:
            option.type_cast_value(ctx, raw)
        except click.exceptions.BadParameter as exc:
            raise UsageError(
                f"key {name.replace('_', '-')!r} in config file {str(path)!r}: "
                f"{exc.format_message()}"
            ) from exc
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta["mbp.config"] = str(path)
    return str(path)


def _env(name: str) -> str:
    """`MBP_<OPTION>`; options whose meaning differs by command (--format, --output)
    get the command in the name, `MBP_RANK_FORMAT`, so one exported pipeline
    setting never leaks into another command."""
    return "MBP_" + name.upper().replace("-", "_")


ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        help="TOML file of settings (default ./mbp.toml when present).",
        callback=_load_config,
        is_eager=True,
        envvar="MBP_CONFIG",
        show_default=False,
    ),
]
TimezoneOpt = Annotated[
    str | None,
    typer.Option(
        "--timezone",
        envvar=_env("timezone"),
        help="IANA zone for flooring, naive timestamps and date partitions "
        "(default: the machine's zone, like cron).",
    ),
]
ScheduledOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduled-time",
        envvar=_env("scheduled_time"),
        help="End of the batch, ISO-8601 or epoch seconds (default: now, floored to the window).",
    ),
]


def _required(value: str | None, option: str) -> str:
    if value is None or value == "":
        key = option.lstrip("-")
        raise UsageError(
            f"{option} is required; give it as a flag, as {_env(key)}, "
            f"or as {key} = ... in mbp.toml"
        )
    return value


def write_text(text: str, output: str | None) -> None:
    """Text to stdout, or atomically to a file (temporary name, then rename)."""
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(output)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {output!r}: {exc.strerror}; check the folder") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- list-users ----------------------------------------------------------------------


@app.command("list-users")
def list_users(
    sessions: Annotated[
        str | None,
        typer.Option("--sessions", envvar=_env("sessions"),
                     help="Parquet file, directory (recursive, hive folders allowed) or glob."),
    ] = None,
    userid_column: Annotated[
        str, typer.Option("--userid-column", envvar=_env("userid_column"), help="Id column.")
    ] = "userid",
    time_column: Annotated[
        str, typer.Option("--time-column", envvar=_env("time_column"), help="Event time column.")
    ] = "time",
    time_unit: Annotated[
        str,
        typer.Option("--time-unit", envvar=_env("time_unit"),
                     help="Unit of an integer time column: s, ms or us."),
    ] = "s",
    window: Annotated[
        str,
        typer.Option("--window", envvar=_env("window"),
                     help="Length of the window, e.g. 5m, 1h, 1d."),
    ] = "5m",
    lookback: Annotated[
        str,
        typer.Option("--lookback", envvar=_env("lookback"),
                     help="Widen the window backwards for late events, e.g. 2m."),
    ] = "0s",
    scheduled_time: ScheduledOpt = None,
    timezone: TimezoneOpt = None,
    fmt: Annotated[
        str,
        typer.Option("--format", envvar=_env("list_users_format"), help="quoted ('a','b'), lines or json."),
    ] = "quoted",
    output: Annotated[
        str | None,
        typer.Option("-o", "--output", envvar=_env("list_users_output"),
                     help="Write the list to this file instead of stdout."),
    ] = None,
    config_file: ConfigOpt = None,
) -> None:
    """Print the ids active in [scheduled-time - window, scheduled-time).

    Example:

        mbp list-users --sessions sessions.parquet --window 5m --timezone UTC
    """
    from mbp import sessions as core
    from mbp import timewindow as tw

    tz = tw.zone(timezone)
    length = tw.positive_duration(window, "--window")
    back = tw.parse_duration(lookback, "--lookback")
    end = tw.scheduled_time(scheduled_time, length, tz)
    span = tw.window(end, length, back, tz)
    if fmt not in ("quoted", "lines", "json"):
        raise UsageError(f"--format {fmt!r} is not one of quoted, lines, json")
    ids = core.active_users(
        _required(sessions, "--sessions"),
        span,
        userid_column=userid_column,
        time_column=time_column,
        time_unit=time_unit,
        tz=tz,
    )
    write_text(core.format_ids(ids, fmt) + "\n", output)


def main() -> None:
    """Console-script entry point."""
    # Die quietly on a closed pipe (`mbp rank | head`), like any Unix filter.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

    def _terminate(signum: int, frame: object) -> None:
        raise Interrupted("terminated", exit_code=128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    app()
