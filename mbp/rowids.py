"""The rowid filter: a strict parser for the id lists `list-users` prints.

Accepted: quoted ids `'a','b'` (a quote inside doubled: `'O''Brien'`), bare ids such as
numbers, UUIDs or words in any script (`1,2,3`, `josé`), one id per line, or any mix;
whitespace around items is ignored and an empty text is an empty list. Anything else is
refused with its position, so a filter can never smuggle SQL: the ids are data, bound
later as an Arrow table.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mbp.errors import UsageError

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported where the ids are cast, not here: list-users needs only
# format_quoted, and importing pyarrow costs it about 0.2 s of start-up on every cron run.
# pyarrow.compute (35 ms more) is imported only for ids that are not text.

# Bare ids are words in any script, with . : @ + - _ (numbers, UUIDs, e-mails, josé, नमस्ते):
# the pattern takes any run of characters but blanks, controls and ASCII punctuation other
# than those, and _foreign() then refuses the non-ASCII ones that are not letters, marks
# or digits (a curly quote, a full-width comma, a zero-width space, a byte-order mark).
_B = r"[^\s\x00-\x1f\x7f,'\"`;()\[\]{}<>=*/\\|&!?#$%^~]+"
_ITEM = re.compile(rf"[ \t\r]*(?:'((?:[^']|'')*)'|({_B}))[ \t\r]*")
_BLANK = re.compile(r"[ \t\r\n]*")
_BARE = re.compile(_B)


def _foreign(bare: str) -> int:
    """The index of the first character in `bare` that a bare id may not hold, or -1."""
    if bare.isascii():
        return -1
    for i, c in enumerate(bare):
        if not c.isascii() and unicodedata.category(c)[0] not in "LMN":
            return i
    return -1


def is_bare(rowid: str) -> bool:
    """Whether `rowid` reads back as itself without quotes (one id per line)."""
    return _BARE.fullmatch(rowid) is not None and _foreign(rowid) < 0


def read_filter(value: str, stdin: TextIO | None) -> str:
    """The filter text: `-` reads stdin, `@FILE` a file, anything else is the list itself.

    Read as UTF-8 bytes, not as text: newline translation would turn a carriage return
    inside a quoted id into a line feed, and the locale's decoder lets bad bytes through.
    """
    if value == "-":
        if stdin is None:  # started with stdin closed (`<&-`)
            raise UsageError(
                "--rowid-filter - reads standard input, which is closed; pipe the ids in"
            )
        buffer = getattr(stdin, "buffer", None)
        if buffer is None:  # a plain text stream, as in tests
            return stdin.read()
        return _utf8(buffer.read(), "on stdin")
    if value.startswith("@"):
        if value == "@":
            raise UsageError("--rowid-filter @ needs a file name after it: @ids.txt")
        path = Path(value[1:])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(
                f"cannot read the rowid filter file {str(path)!r}: {exc.strerror}; check the path"
            ) from exc
        return _utf8(data, f"file {str(path)!r}")
    # An argument that is not UTF-8 reaches Python with its bad bytes as surrogates.
    return _utf8(value.encode("utf-8", "surrogateescape"), "argument")


def _utf8(data: bytes, where: str) -> str:
    # A file or a pipe may start with a byte-order mark (Windows editors write one): it is
    # no part of the first id. In an argument it can only be a mistake, refused below.
    codec = "utf-8" if where == "argument" else "utf-8-sig"
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"the rowid filter {where} is not UTF-8 text (byte {data[exc.start]:#04x} at "
            f"offset {exc.start}); convert it to UTF-8"
        ) from exc


def _error(text: str, pos: int, problem: str) -> UsageError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return UsageError(
        f"bad --rowid-filter at character {pos + 1} (line {line}, column {column}): {problem}; "
        "give ids as 'a','b', as 1,2,3, or one per line"
    )


def _describe_bad(text: str, pos: int) -> str:
    if pos >= len(text):
        return "the list ends after a comma"
    c = text[pos]
    if c == "'":
        return "a quote that does not close (double a quote inside an id: '')"
    if c == ",":
        return "an empty item"
    if c == "\ufeff":
        return "a byte-order mark (U+FEFF); remove it"
    return f"unexpected {c!r}"


def parse(text: str) -> list[str]:
    """The ids in `text`, in first-seen order, each once; UsageError with the position."""
    ids: dict[str, None] = {}
    n = len(text)
    pos = _BLANK.match(text, 0).end()  # type: ignore[union-attr]
    while pos < n:
        m = _ITEM.match(text, pos)
        if m is None:
            bad = pos  # point past leading blanks, at the character that is wrong
            while bad < n and text[bad] in " \t\r":
                bad += 1
            raise _error(text, bad, _describe_bad(text, bad))
        quoted, bare = m.groups()
        if bare is not None and (bad := _foreign(bare)) >= 0:
            at = m.start(2) + bad
            raise _error(text, at, _describe_bad(text, at))
        ids[quoted.replace("''", "'") if quoted is not None else bare] = None
        pos = m.end()
        if pos >= n:
            break
        sep = text[pos]
        if sep == ",":
            pos = _BLANK.match(text, pos + 1).end()  # type: ignore[union-attr]
            if pos >= n:
                raise _error(text, pos, "the list ends after a comma")
        elif sep == "\n":
            pos = _BLANK.match(text, pos + 1).end()  # type: ignore[union-attr]
        else:
            raise _error(text, pos, f"unexpected {sep!r} after an id; expected ',' or a new line")
    return list(ids)


def format_quoted(ids: list[str] | list[int]) -> str:
    """Ids as one line `'a','b'`, a quote inside an id doubled."""
    return ",".join("'" + str(i).replace("'", "''") + "'" for i in ids)


def to_arrow(ids: list[str], arrow_type: pa.DataType, column: str) -> pa.Array:
    """The ids cast to the rowid column's type, each once; UsageError naming a bad id."""
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pa.array(list(dict.fromkeys(ids)), arrow_type)
    # Only other types need the compute functions, whose import costs 35 ms.
    import pyarrow.compute as pc

    values = pa.array(ids, pa.string())
    # Arrow's cast also reads 0x10 as 16; an integer id is decimal digits only.
    if pa.types.is_integer(arrow_type) and len(values):
        digits = pc.match_substring_regex(values, r"^-?[0-9]+$")
        if not pc.all(digits).as_py():
            bad = ids[pc.index(digits, False).as_py()]
            raise UsageError(
                f"rowid {bad!r} cannot be read as {arrow_type} (the type of column {column!r}); "
                "check the filter"
            )
    try:
        cast = pc.cast(values, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        bad = _first_uncastable(ids, arrow_type)
        raise UsageError(
            f"rowid {bad!r} cannot be read as {arrow_type} (the type of column {column!r}); "
            "check the filter"
        ) from exc
    return pc.unique(cast)


def _first_uncastable(ids: list[str], arrow_type: pa.DataType) -> str:
    import pyarrow as pa
    import pyarrow.compute as pc

    for value in ids:
        try:
            pc.cast(pa.array([value], pa.string()), arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return value
    return ids[0] if ids else ""
