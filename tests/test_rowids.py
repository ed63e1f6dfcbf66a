"""The rowid filter parser: what it accepts, what it refuses, and its round-trip law."""

from __future__ import annotations

import io
import re

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mbp import rowids
from mbp.errors import UsageError
from mbp.sessions import format_ids


@pytest.mark.parametrize(
    "text,ids",
    [
        ("'a','b'", ["a", "b"]),
        ("1,2,3", ["1", "2", "3"]),
        ("a\nb\n\n", ["a", "b"]),
        ("", []),
        ("  \n ", []),
        ("'x''y' , 'z,w'\n 'q'", ["x'y", "z,w", "q"]),
        ("''", [""]),
        ("'a','a',a", ["a"]),
        ("550e8400-e29b-41d4-a716-446655440000", ["550e8400-e29b-41d4-a716-446655440000"]),
        ("'line\nbreak'", ["line\nbreak"]),
        ("'Zoë','用户'", ["Zoë", "用户"]),
        ("'a',\n'b'", ["a", "b"]),
        ("josé\n用户\nZoë", ["josé", "用户", "Zoë"]),  # what --format lines prints
        ("a.b@example.com,+44", ["a.b@example.com", "+44"]),
    ],
)
def test_accepts(text: str, ids: list[str]) -> None:
    assert rowids.parse(text) == ids


@pytest.mark.parametrize(
    "text,position",
    [
        ("'1') OR 1=1 --", 4),
        ("';DROP TABLE x;--", 1),
        ("a,,b", 3),
        ("a,", 3),
        ("a b", 3),
        ('"a"', 1),
        ("1; DROP TABLE t", 2),
        ("'a' 'b'", 5),
        ("x\n  (y)", 5),
    ],
)
def test_refuses_with_position(text: str, position: int) -> None:
    with pytest.raises(UsageError, match=f"at character {position} "):
        rowids.parse(text)


def test_read_filter_sources(tmp_path) -> None:
    f = tmp_path / "ids.txt"
    f.write_text("'a','b'\n")
    assert rowids.read_filter(f"@{f}", io.StringIO()) == "'a','b'\n"
    assert rowids.read_filter("-", io.StringIO("1,2")) == "1,2"
    assert rowids.read_filter("'a'", io.StringIO()) == "'a'"
    with pytest.raises(UsageError, match="cannot read the rowid filter file"):
        rowids.read_filter(f"@{tmp_path / 'missing'}", io.StringIO())


def test_cast_to_integer_column() -> None:
    arr = rowids.to_arrow(["00012", "12", "7", "-3"], pa.int64(), "userid")
    assert sorted(arr.to_pylist()) == [-3, 7, 12]
    with pytest.raises(UsageError, match="rowid 'x1' cannot be read as int64"):
        rowids.to_arrow(["1", "x1"], pa.int64(), "userid")


@pytest.mark.parametrize("bad", ["0x10", "0X1F", "+1", "1e0", "1_000", "1.0", "٣"])
def test_integer_ids_are_decimal_digits_only(bad: str) -> None:
    """Arrow alone would read 0x10 as user 16: an id the user never gave."""
    with pytest.raises(UsageError, match=re.escape(f"rowid {bad!r} cannot be read as int32")):
        rowids.to_arrow(["5", bad], pa.int32(), "userid")


ids_strategy = st.lists(st.text(min_size=0, max_size=12), max_size=30)


@given(ids_strategy)
def test_quoted_output_parses_back(ids: list[str]) -> None:
    distinct = sorted(set(ids))
    assert rowids.parse(format_ids(distinct, "quoted")) == distinct


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=30))
def test_integer_ids_round_trip(ids: list[int]) -> None:
    distinct = sorted(set(ids))
    parsed = rowids.parse(format_ids(distinct, "quoted"))
    assert rowids.to_arrow(parsed, pa.int64(), "id").to_pylist() == distinct


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_any_text_parses_or_is_refused(text: str) -> None:
    try:
        ids = rowids.parse(text)
    except UsageError as exc:
        assert str(exc).startswith("bad --rowid-filter at character ")
        return
    # Whatever parses is a list of plain strings that formats back to the same list.
    assert all(isinstance(i, str) for i in ids)
    assert rowids.parse(rowids.format_quoted(ids)) == ids


@example(["-"])
@example(["@a", "b"])
@example(["-", "a"])
@example(["ab@c"])
@example(["jose\u0301", "नमस्ते"])
@example(["a\u2018b"])
@example(["\ufeffa"])
@given(ids_strategy)
def test_lines_output_reads_back_as_a_filter_or_is_refused(ids: list[str]) -> None:
    """What `--format lines` prints, given to --rowid-filter, is the same ids."""
    distinct = sorted(set(ids))
    try:
        text = format_ids(distinct, "lines")
    except UsageError as exc:
        message = str(exc)
        if "empty id" in message:
            assert "" in distinct
        elif "one id per line cannot carry" in message:
            assert not all(rowids.is_bare(i) for i in distinct)
        else:
            assert "would not read back" in message and distinct[0][:1] in ("@", "-")
        return
    filter_text = rowids.read_filter(text, io.StringIO("'not', 'these'"))
    assert rowids.parse(filter_text) == distinct


@pytest.mark.parametrize(
    "text,ids",
    [
        ("jose\u0301,नमस्ते", ["jose\u0301", "नमस्ते"]),  # combining accent, vowel signs
        ("x_y-z.1:2+3@4", ["x_y-z.1:2+3@4"]),
    ],
)
def test_bare_ids_take_letters_marks_and_digits_of_any_script(text: str, ids: list[str]) -> None:
    assert rowids.parse(text) == ids
    assert all(rowids.is_bare(i) for i in ids)


@pytest.mark.parametrize(
    "text,position",
    [("a\u2018b\u2019", 2), ("\ufeffa,b", 1), ("a,b\u200b", 4), ("\u20ac1", 1), ("a\uff0cb", 2)],
)
def test_bare_ids_refuse_other_symbols(text: str, position: int) -> None:
    """A curly quote, a byte-order mark, a zero-width space, '€' or a full-width comma is
    more likely a paste gone wrong than part of an id: refused, not matched to nobody."""
    with pytest.raises(UsageError, match=f"at character {position} .*(unexpected|byte-order mark)"):
        rowids.parse(text)


def test_a_byte_order_mark_starting_a_file_or_stdin_is_no_part_of_the_ids(tmp_path) -> None:
    f = tmp_path / "ids.txt"
    f.write_bytes("\ufeffa\nb\n".encode())
    assert rowids.parse(rowids.read_filter(f"@{f}", io.StringIO())) == ["a", "b"]

    class Stdin(io.StringIO):
        buffer = io.BytesIO("\ufeff'a','b'".encode())

    assert rowids.parse(rowids.read_filter("-", Stdin())) == ["a", "b"]
    with pytest.raises(
        UsageError, match="character 1 .*a byte-order mark \\(U\\+FEFF\\); remove it"
    ):
        rowids.parse(rowids.read_filter("\ufeffa,b", None))


def test_an_at_sign_alone_asks_for_a_file_name() -> None:
    with pytest.raises(UsageError, match="--rowid-filter @ needs a file name after it"):
        rowids.read_filter("@", io.StringIO())
