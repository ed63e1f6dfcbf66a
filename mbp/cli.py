"""The command line: parse options, call the core, print. The only module that
imports typer or rich."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer import _click as click
from typer._click.core import ParameterSource
from typer.core import TyperCommand, TyperGroup, TyperOption

from mbp import __version__, config, interrupts
from mbp.errors import Interrupted, MbpError, RuntimeFailure, UsageError

DEBUG_ENV = "MBP_DEBUG"


class MbpGroup(TyperGroup):
    """Runs a command and turns every failure into one line and an exit code."""

    def get_params(self, ctx: click.Context) -> list[Any]:
        return _plain_coercion(super().get_params(ctx))

    def list_commands(self, ctx: click.Context) -> list[str]:
        # The order of the pipeline, not of the source file.
        names = super().list_commands(ctx)
        order = [n for n in ("list-users", "predict", "rank", "config") if n in names]
        return order + sorted(set(names) - set(order))

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> NoReturn:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        message: str | None = None
        try:
            rv = super().main(
                args=args, prog_name=prog_name or "mbp", standalone_mode=False, **extra
            )
            code = rv if isinstance(rv, int) else 0
        except MbpError as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            message, code = str(exc), exc.exit_code
        except click.exceptions.NoArgsIsHelpError as exc:
            # `mbp` alone: the help, as it is, on stderr (stdout carries data only).
            sys.stderr.write(exc.format_message() + "\n")
            code = exc.exit_code
        except click.exceptions.ClickException as exc:
            hint = ""
            if isinstance(exc, click.exceptions.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            message, code = exc.format_message().replace("\n", " ") + hint, exc.exit_code
        except (KeyboardInterrupt, typer.Abort):
            message, code = "interrupted", 130
        except Exception as exc:  # the last line of defence: one line, not a traceback
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            message = f"unexpected {type(exc).__name__}: {exc} (run with MBP_DEBUG=1 for details)"
            code = 1
        # The run is over: from here a signal takes its default action (the shell still sees
        # 130/143), where a handler's exception could be lost in the interpreter's shutdown
        # and the run exit 0. A library may have swallowed or wrapped the signal's
        # exception; the signal decides.
        interrupts.restore()
        stop = interrupts.received()
        if stop is not None:
            message, code = str(stop), stop.exit_code
        if message is not None:
            _fail(message)
        sys.exit(code)


def _fail(message: str) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"mbp: error: {first}", file=sys.stderr)


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def _plain(kind: type, value: Any) -> Any:
    """`value` (a flag's or environment variable's text, or a TOML value) as `kind`."""
    if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            # ASCII, no '_': Python's int() and float() also take '1_0' and other scripts' digits.
            if kind is int and text.lstrip("+-").isdigit() and text.isascii():
                return int(text)
            if kind is float and text and text.isascii() and "_" not in text:
                return float(text)
        except ValueError:
            pass
        if kind is bool and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    names = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}
    raise ValueError(f"{value!r} is not {names[kind]}")


try:
    from typer._coercion import RuntimeParam

    class _PlainParam(RuntimeParam):
        """Coercion of str, int, float and bool options without typer's pydantic adapters,
        whose import costs every run 0.1 s (of 0.85 s for a filtered predict)."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            kind = self.annotation if isinstance(self.annotation, type) else str
            try:
                return _plain(kind, value)
            except ValueError as exc:
                # Name where the value came from: the flag, or the variable.
                source = ctx.get_parameter_source(param.name) if ctx is not None else None
                hint = f"'{param.opts[0]}'" if param.opts else None
                if source == ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
                    hint = f"'{param.envvar}'"
                elif source == ParameterSource.DEFAULT_MAP:
                    hint = f"'{param.name}' in the config file"
                raise click.exceptions.BadParameter(
                    str(exc), ctx=ctx, param=param, param_hint=hint
                ) from None

except ImportError:  # another typer: its own coercion, only slower to start
    _PlainParam = None  # type: ignore[assignment,misc]


def _plain_coercion(params: list[Any]) -> list[Any]:
    """Give the str, int, float and bool options (--help included) _PlainParam's coercion."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if _PlainParam is None or descriptor is None or param.multiple:
            continue
        kind = next(
            (k for k in (str, int, float, bool) if descriptor.annotation in (k, k | None)),
            None,
        )
        if kind is not None and getattr(param, "_runtime_param", False) is None:
            param._runtime_param = _PlainParam(descriptor.parameter_info, kind)
    return params


class MbpCommand(TyperCommand):
    """A command whose plain options skip typer's pydantic coercion (see _PlainParam)."""

    def get_params(self, ctx: click.Context) -> list[Any]:
        return _plain_coercion(super().get_params(ctx))


app = typer.Typer(
    cls=MbpGroup,
    name="mbp",
    help="Mini-batch prediction over local Parquet files.\n\n"
    "Example, every five minutes from cron:\n\n"
    '    mbp predict --rowid-filter "$(mbp list-users)"',
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        write_text(f"mbp {__version__}\n", None, "redirect it")
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


def _key(option: Any) -> str:
    """The option's name in mbp.toml: its long flag, `--rowid-column` -> `rowid_column`."""
    longs = [o for o in option.opts if o.startswith("--")]
    return max(longs, key=len)[2:].replace("-", "_") if longs else option.name


def _options(command: Any) -> dict[str, Any]:
    return {_key(p): p for p in command.params if isinstance(p, TyperOption)}


def _load_config(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Eager: fills the command's default map from the TOML file before other options
    are read, so the order is flag > environment > file > default."""
    path = config.find(value)
    if path is None:
        return value
    data = config.read(path)
    options = _options(ctx.command)
    group = ctx.find_root().command
    every = set(options)
    if isinstance(group, TyperGroup):
        for sub in group.commands.values():
            every |= set(_options(sub))
    values = config.defaults_for(data, path, ctx.info_name or "", set(options), every)
    for key, raw in values.items():
        _check_type(ctx, options[key], raw, path)
    ctx.default_map = {**(ctx.default_map or {}), **{options[k].name: v for k, v in values.items()}}
    ctx.meta["mbp.config"] = str(path)
    return str(path)


def _check_type(ctx: click.Context, option: Any, raw: Any, path: Path) -> None:
    """A value from the file must have the option's type: `window = 5` is refused."""
    key = _key(option)
    expected = option.type_descriptor.annotation
    kinds: dict[type, type | tuple[type, ...]] = {
        str: str,
        int: int,
        float: (int, float),
        bool: bool,
    }
    want = next((k for k in kinds if expected in (k, k | None)), None)
    problem = None
    if want is not None and (
        not isinstance(raw, kinds[want]) or (want is not bool and isinstance(raw, bool))
    ):
        names = {
            str: "text in quotes",
            int: "a whole number",
            float: "a number",
            bool: "true or false",
        }
        shown = (
            repr(raw)
            if isinstance(raw, str)
            else str(raw).lower()
            if isinstance(raw, bool)
            else raw
        )
        problem = f"expected {names[want]}, got {shown}"
        if want is str:
            problem += f'; write it as {key} = "{raw}"'
    else:
        try:
            option.get_runtime_param().coerce(raw, param=option, ctx=ctx)
        except (click.exceptions.BadParameter, ValueError, TypeError) as exc:
            problem = str(exc)
    if problem:
        raise UsageError(f"key {key!r} in config file {str(path)!r}: {problem}")


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


def _given_empty(ctx: click.Context, param: Any, value: str | None) -> str | None:
    """`--scheduled-time "$T"` with T unset would silently mean "now": say so instead.
    So is an empty or blank MBP_SCHEDULED_TIME (`export MBP_SCHEDULED_TIME=$T`), which
    click would take for unset, and a blank value in mbp.toml."""
    source = ctx.get_parameter_source(param.name)  # type: ignore[arg-type]
    variable = _env("scheduled_time")
    if value is None and source != ParameterSource.COMMANDLINE and os.environ.get(variable) == "":
        raise UsageError(
            f"{variable} is set but empty (an unset shell variable?); give a time, "
            "or unset it to use now"
        )
    if value is None or value.strip() != "":
        return value
    if source == ParameterSource.ENVIRONMENT:
        where = f"{variable} is set but blank"
    elif source == ParameterSource.DEFAULT_MAP:
        where = "scheduled_time in the config file is blank"
    else:
        where = "--scheduled-time is given but empty (an unset shell variable?)"
    raise UsageError(f"{where}; give a time, or leave it out to use now")


ScheduledOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduled-time",
        envvar=_env("scheduled_time"),
        callback=_given_empty,
        help="End of the batch, ISO-8601 or epoch seconds (default: now, floored to the window).",
    ),
]


def _required(value: str | None, option: str, env: str | None = None) -> str:
    if value is None or value == "":
        key = option.lstrip("-")
        raise UsageError(
            f"{option} is required; give it as a flag, as {env or _env(key)}, "
            f"or as {key} = ... in mbp.toml"
        )
    return value


def write_text(text: str, output: str | None, fix: str = "redirect it or give -o FILE") -> None:
    """Text to stdout, or to a file, whole or not at all (see mbp.output)."""
    interrupts.check()  # a signal that arrived while modules loaded: print nothing
    if output is None or output == "-":
        if sys.stdout is None:  # started with stdout closed (`>&-`)
            raise RuntimeFailure(f"standard output is closed; {fix}")
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as exc:  # a full disk behind a redirection
            raise RuntimeFailure(f"cannot write to standard output: {exc.strerror}") from exc
        return
    from mbp.output import write_file

    data = text.encode("utf-8")
    write_file(output, lambda f: f.write(data))


# --- list-users ----------------------------------------------------------------------


@app.command("list-users", cls=MbpCommand)
def list_users(
    sessions: Annotated[
        str | None,
        typer.Option(
            "--sessions",
            envvar=_env("sessions"),
            help="Parquet file, directory (recursive, hive folders allowed) or glob.",
        ),
    ] = None,
    userid_column: Annotated[
        str, typer.Option("--userid-column", envvar=_env("userid_column"), help="Id column.")
    ] = "userid",
    time_column: Annotated[
        str, typer.Option("--time-column", envvar=_env("time_column"), help="Event time column.")
    ] = "time",
    time_unit: Annotated[
        str,
        typer.Option(
            "--time-unit",
            envvar=_env("time_unit"),
            help="Unit of an integer time column: s, ms or us.",
        ),
    ] = "s",
    window: Annotated[
        str,
        typer.Option(
            "--window", envvar=_env("window"), help="Length of the window, e.g. 5m, 1h, 1d."
        ),
    ] = "5m",
    lookback: Annotated[
        str,
        typer.Option(
            "--lookback",
            envvar=_env("lookback"),
            help="Widen the window backwards for late events, e.g. 2m.",
        ),
    ] = "0s",
    scheduled_time: ScheduledOpt = None,
    timezone: TimezoneOpt = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", envvar=_env("list_users_format"), help="quoted ('a','b'), lines or json."
        ),
    ] = "quoted",
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            envvar=_env("list_users_output"),
            help="Write the list to this file instead of stdout.",
        ),
    ] = None,
    config_file: ConfigOpt = None,
) -> None:
    """Print the ids active in [scheduled-time - window, scheduled-time).

    Example:

    \b
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
    from mbp.output import refuse_input

    refuse_input(output, {"sessions": sessions})
    warnings: list[str] = []
    ids = core.active_users(
        _required(sessions, "--sessions"),
        span,
        userid_column=userid_column,
        time_column=time_column,
        time_unit=time_unit,
        tz=tz,
        warnings=warnings,
    )
    write_text(core.format_ids(ids, fmt) + "\n", output)
    for warning in warnings:
        print(f"mbp: warning: {warning}", file=sys.stderr)


# --- config ------------------------------------------------------------------------


@app.command(
    "config",
    cls=MbpCommand,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def show_config(
    ctx: typer.Context,
    command: Annotated[str, typer.Argument(help="list-users, predict or rank.")],
) -> None:
    """Print a command's effective settings and where each came from.

    Any further options are read as that command would read them, so their effect
    shows too. The output is valid TOML; its paths are as the command resolved them
    (from the working folder), so before pasting them into an mbp.toml elsewhere, make
    them relative to that file's folder.

    Example:

    \b
        MBP_TIMEZONE=UTC mbp config predict --config sample_data/mbp.toml --dry-run
    """
    root = ctx.find_root()
    group = root.command
    assert isinstance(group, TyperGroup)
    sub = group.get_command(root, command)
    if sub is None or command == "config":
        names = ", ".join(n for n in group.list_commands(root) if n != "config")
        raise UsageError(f"unknown command {command!r}; choose one of {names}")
    sub_ctx = sub.make_context(command, list(ctx.args), parent=root)
    source_file = sub_ctx.meta.get("mbp.config")
    lines = [
        f"# mbp {command}: effective settings (config file: {source_file or 'none'})",
        f"[{command}]",
    ]
    for param in sub.params:
        if param.name in (None, "config_file", "help") or not isinstance(param, TyperOption):
            continue
        value = sub_ctx.params.get(param.name)
        source = sub_ctx.get_parameter_source(param.name)
        origin = (
            {
                ParameterSource.COMMANDLINE: "flag",
                ParameterSource.ENVIRONMENT: f"env {param.envvar}",
                ParameterSource.DEFAULT_MAP: f"file {source_file}",
            }.get(source, "default")
            if source is not None
            else "default"
        )
        key = _key(param).replace("_", "-")
        if value is None:
            lines.append(f"# {key} = (not set)  # {origin}")
        else:
            lines.append(f"{key} = {_toml_value(value)}  # {origin}")
    write_text("\n".join(lines) + "\n", None, "redirect it")


def _toml_value(value: Any) -> str:
    """A TOML literal: JSON's but for inf and nan, and DEL, which TOML wants escaped."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


# --- rank ------------------------------------------------------------------------------


def _stdout_is_terminal() -> bool:
    return sys.stdout is not None and sys.stdout.isatty()


def _rank_table(table: Any, file: Any) -> None:
    """The ranked rows as a rich table, for eyes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    view = Table()
    for i, name in enumerate(table.column_names):
        # Ids are never cut short; long text folds rather than ending in an ellipsis.
        view.add_column(
            name,
            justify="right" if name in ("score", "time") else "left",
            no_wrap=i == 0,
            overflow="fold",
        )
    for row in table.to_pylist():
        # Text, not markup: an id '[bold]x[/bold]' is shown as it is.
        view.add_row(*(Text(_cell(name, value)) for name, value in row.items()))
    # Piped on purpose (`--format table | less`): size to the content, not to 80 columns.
    width = None if getattr(file, "isatty", lambda: False)() else 240
    Console(file=file, width=width).print(view)


def _cell(name: str, value: Any) -> str:
    """A value as people read it: scores to 4 places, batch times as UTC datetimes."""
    from datetime import UTC, datetime

    if value is None:
        return ""
    if name == "score" and isinstance(value, float):
        return f"{value:.4f}"
    if name == "time" and isinstance(value, int):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")
    # Control characters from the data (an escape sequence in a name) would drive the
    # terminal; show them escaped.
    return str(value).translate(_CONTROLS)


_CONTROLS = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0))}


@app.command("rank", cls=MbpCommand)
def rank_command(
    predictions: Annotated[
        str | None,
        typer.Option(
            "--predictions",
            envvar=_env("predictions"),
            help="The dataset mbp predict writes (DIR/dt=.../part-....parquet).",
        ),
    ] = None,
    user_info: Annotated[
        str | None,
        typer.Option(
            "--user-info",
            envvar=_env("user_info"),
            help="Parquet file, directory or glob of user details, joined on the rowid.",
        ),
    ] = None,
    rowid_column: Annotated[
        str, typer.Option("--rowid-column", envvar=_env("rowid_column"), help="Id column.")
    ] = "userid",
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            envvar=_env("columns"),
            help="User info columns to show, e.g. name,tel (default: all).",
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            envvar=_env("threshold"),
            help="Keep users whose latest score is at or above this.",
        ),
    ] = 0.7,
    limit: Annotated[
        int,
        typer.Option("--limit", envvar=_env("limit"), help="At most this many users; 0 for all."),
    ] = 100,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            envvar=_env("since"),
            help="Only scores within this long of the NEWEST time in the dataset "
            "(not of now, so replayed history works), e.g. 1h; 0s = newest batch.",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            envvar=_env("rank_format"),
            help="table, csv, json, jsonl or parquet (default: the -o extension, "
            "else a table on a terminal and CSV in a pipe).",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            envvar=_env("rank_output"),
            help="Write to this file (atomically) instead of stdout.",
        ),
    ] = None,
    config_file: ConfigOpt = None,
) -> None:
    """List users by their latest score, best first.

    The latest score per user is taken first, then --threshold: a user whose
    latest score fell below it is not listed for an older, higher one.

    Example:

    \b
        mbp rank --predictions predictions --user-info user_info.parquet --limit 20
    """
    from mbp import rank as core
    from mbp import timewindow as tw
    from mbp.output import refuse_input

    chosen = core.format_for(fmt, output, _stdout_is_terminal())
    refuse_input(output, {"predictions": predictions, "user info": user_info})
    wanted = None
    if columns is not None and columns.strip():
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
    result = core.rank(
        _required(predictions, "--predictions"),
        user_info=user_info or None,
        rowid_column=rowid_column,
        columns=wanted,
        threshold=threshold,
        limit=limit,
        since=None if since is None or since == "" else tw.parse_duration(since, "--since"),
    )
    if chosen == "parquet":
        core.write_parquet(result.table, _required(output, "--output", _env("rank_output")))
    elif chosen == "table":
        if output is None or output == "-":
            if sys.stdout is None:
                write_text("", None)  # says that stdout is closed
            try:
                _rank_table(result.table, sys.stdout)
            except OSError as exc:  # a full disk behind a redirection
                raise RuntimeFailure(f"cannot write to standard output: {exc.strerror}") from exc
        else:
            import io

            buf = io.StringIO()
            _rank_table(result.table, buf)
            write_text(buf.getvalue(), output)
    else:
        write_text(core.to_text(result.table, chosen), output)
    # After the output: a run that fails says one thing, its error.
    for warning in result.warnings:
        print(f"mbp: warning: {warning}", file=sys.stderr)


# --- predict ---------------------------------------------------------------------------


def _split(value: str | None) -> list[str] | None:
    if value is None or not value.strip():
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _stderr_is_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


@contextmanager
def _progress_bar(show: bool) -> Iterator[Any]:
    """A progress callback drawing a bar on stderr, or None when not on a terminal."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("scoring", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def _predict_report(summary: dict[str, Any]) -> str:
    """The summary in a few lines for stderr (cron logs keep them)."""
    secs = summary["seconds"]
    timing = (
        f"model load {secs['model_load']:.2f} s, prepare {secs['prepare']:.2f} s, "
        f"scan+score {secs['scan_score']:.2f} s, write {secs['write']:.2f} s"
    )
    model = f"model {summary['model']} {summary['model_version']}"
    given = summary["ids_given"]
    if given is None:
        ids = "no --rowid-filter: every row"
    else:
        ids = f"{given:,} ids given, {summary['ids_without_row']:,} with no input row"
    matched = f"{summary['rows_matched']:,} rows matched"
    if given and summary["rows_matched"] > given - summary["ids_without_row"]:
        # Every row is scored; rank keeps one score per user, the higher of a batch's.
        matched += " (some ids have more than one input row)"
    if given == 0:
        return "mbp predict: the --rowid-filter is empty; nothing scored, nothing written"
    if summary["dry_run"]:
        lines = [
            f"mbp predict --dry-run: nothing written; {ids}; {matched}",
            f"  {model} ({summary['model_path']})",
        ]
        for feed in summary["features"]:
            lines.append(
                f"  input {feed['input']} ({feed['type']}) <- {', '.join(feed['columns'])}"
            )
        lines.append(f"  output file: {summary['output']}")
        lines.append(f"  query: {summary['query']}")
        lines.extend(f"  scan: {line}" for line in summary["plan"])
        return "\n".join(lines)
    if summary["output"] is None:
        return f"mbp predict: {ids}; no input row matched; nothing written\n  {model}; {timing}"
    return (
        f"mbp predict: {ids}; {matched}; {summary['rows_written']:,} rows written to "
        f"{summary['output']}\n  {model}; {timing}"
    )


@app.command("predict", cls=MbpCommand)
def predict_command(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            envvar=_env("model"),
            help="An .onnx file, or a model NAME (or NAME@VERSION) in --models-dir.",
        ),
    ] = None,
    models_dir: Annotated[
        str,
        typer.Option(
            "--models-dir", envvar=_env("models_dir"), help="Folder of NAME/VERSION.onnx models."
        ),
    ] = "models",
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            envvar=_env("input"),
            help="Feature table: Parquet file, directory (recursive) or glob.",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            envvar=_env("predict_output"),
            help="Root folder of the output dataset (DIR/dt=.../part-....parquet).",
        ),
    ] = None,
    rowid_column: Annotated[
        str, typer.Option("--rowid-column", envvar=_env("rowid_column"), help="Id column.")
    ] = "userid",
    rowid_filter: Annotated[
        str | None,
        typer.Option(
            "--rowid-filter",
            envvar=_env("rowid_filter"),
            help="Ids to score: 'a','b' or 1,2,3 or one per line; - reads stdin, "
            "@FILE a file (default: every row).",
        ),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            envvar=_env("features"),
            help="Columns of a single-tensor model's input, in order: a,b,c "
            "(default: the model's `features` metadata or its input names).",
        ),
    ] = None,
    fill_null: Annotated[
        str | None,
        typer.Option(
            "--fill-null",
            envvar=_env("fill_null"),
            help="Fill nulls and NaN in features with this value (default: error).",
        ),
    ] = None,
    score_output: Annotated[
        str | None,
        typer.Option(
            "--score-output",
            envvar=_env("score_output"),
            help="Model output to score from (default: the probabilities or the "
            "only float output).",
        ),
    ] = None,
    score_class: Annotated[
        str | None,
        typer.Option(
            "--score-class",
            envvar=_env("score_class"),
            help="Class to score: a label, or a column index of a probability "
            "tensor (default: label 1/true, else the last; a tensor of more than two "
            "classes needs it).",
        ),
    ] = None,
    keep_columns: Annotated[
        str | None,
        typer.Option(
            "--keep-columns",
            envvar=_env("keep_columns"),
            help="Input columns to copy to the output, e.g. region,segment.",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", envvar=_env("batch_size"), help="Rows per batch; bounds memory."
        ),
    ] = 65_536,
    output_mode: Annotated[
        str,
        typer.Option(
            "--output-mode",
            envvar=_env("output_mode"),
            help="append (re-running a batch replaces its file) or overwrite "
            "(the dataset holds this batch only).",
        ),
    ] = "append",
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            envvar=_env("lock_timeout"),
            help="Seconds to wait for another run's lock before exiting 75.",
        ),
    ] = 0.0,
    scheduled_time: ScheduledOpt = None,
    interval: Annotated[
        str,
        typer.Option(
            "--interval",
            envvar=_env("interval"),
            help="Batch interval the default scheduled time is floored to, e.g. 5m.",
        ),
    ] = "5m",
    timezone: TimezoneOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run/--no-dry-run",
            envvar=_env("dry_run"),
            help="Report matches, feature mapping, output file and query plan; write nothing.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json/--no-json",
            envvar=_env("predict_json"),
            help="Print the summary as JSON on stdout.",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "-q", "--quiet/--no-quiet", envvar=_env("quiet"), help="No summary on stderr."
        ),
    ] = False,
    config_file: ConfigOpt = None,
) -> None:
    """Score the rows whose rowid is in the filter and append them to a Parquet dataset.

    Writes DIR/dt=YYYY-MM-DD/part-YYYYMMDDTHHMMSS.parquet for the scheduled time;
    re-running a batch replaces its file. Prints a summary on stderr.

    Example:

    \b
        mbp predict --model ltv --input features.parquet --output predictions \\
            --rowid-filter "$(mbp list-users --sessions sessions.parquet)"
    """
    from mbp import predict as core
    from mbp import rowids
    from mbp import timewindow as tw

    if as_json and sys.stdout is None:  # say so before the batch is written, not after
        raise RuntimeFailure("standard output is closed; redirect it, or leave out --json")
    tz = tw.zone(timezone)
    step = tw.positive_duration(interval, "--interval")
    scheduled = tw.scheduled_time(scheduled_time, step, tz)
    ids = None
    if rowid_filter is not None:
        ids = rowids.parse(rowids.read_filter(rowid_filter, sys.stdin))
    show_progress = ids is None and not quiet and not dry_run and _stderr_is_terminal()
    with _progress_bar(show_progress) as progress:
        summary = core.run(
            model=_required(model, "--model"),
            input=_required(input, "--input"),
            output=_required(output, "--output", _env("predict_output")),
            scheduled=scheduled,
            tz=tz,
            ids=ids,
            models_dir=models_dir,
            rowid_column=rowid_column,
            features=_split(features),
            fill_null=fill_null,
            score_output=score_output or None,
            score_class=score_class or None,
            keep_columns=_split(keep_columns),
            batch_size=batch_size,
            output_mode=output_mode,
            lock_timeout=lock_timeout,
            dry_run=dry_run,
            progress=progress,
        )
    if as_json:
        write_text(json.dumps(summary) + "\n", None, "redirect it, or leave out --json")
    elif not quiet:
        print(_predict_report(summary), file=sys.stderr)


class _WithoutPandas:
    """An import hook that makes pandas look absent in the mbp command.

    pyarrow imports pandas, when it is installed, on the first array it builds: 0.2 s of
    every cron run for a library mbp never uses. The library API is left alone.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"mbp runs without {name}", name=name)
        return None


def _standard_streams() -> None:
    """Started with stdin, stdout or stderr closed (`2>&-`): put /dev/null on the descriptor,
    so no file mbp opens lands on it and gets a library's log lines; messages meant for a
    closed stderr are dropped, data meant for a closed stdout is an error (write_text)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def main() -> None:
    """Console-script entry point."""
    _standard_streams()
    sys.meta_path.insert(0, _WithoutPandas())
    # Die quietly on a closed pipe (`mbp rank | head`), like any Unix filter.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    interrupts.install()
    try:
        app()
    except Interrupted as exc:  # arrived while typer built the command, before MbpGroup.main
        _fail(str(exc))
        sys.exit(exc.exit_code)
