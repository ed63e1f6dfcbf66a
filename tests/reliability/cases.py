"""The reliability cases: what can go wrong, what mbp does, and the test that checks it.

RELIABILITY.md's table is rendered from this list (`python tests/reliability/render.py`) and a
test keeps the two equal. Each case names its test; the test carries `@case(id)` (or takes its
parameters from here with `@each_case`), and a test checks that every case is covered.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    situation: str
    outcome: str  # what mbp does, as the test checks it
    exit: str  # the exit code(s), as shown in the table
    test: str  # file::function that checks it
    args: tuple[str, ...] = ()  # for parametrized cases: what the test runs
    code: int | None = None  # for parametrized cases: the exit code asserted
    stderr: str | None = None  # for parametrized cases: a regex the one stderr line matches


CRASH = "test_crash.py"
OVERLAP = "test_overlap.py"
INTERRUPT = "test_interrupt.py"
BAD = "test_bad_input.py::test_bad_input"
WORKS = "test_bad_input.py"
FUZZ = "test_fuzz.py"
NOTHING = "one line `mbp: error: ...` on stderr naming it, no traceback; nothing written"

CASES: list[Case] = [
    # --- crash safety -------------------------------------------------------------------
    Case(
        "kill-append",
        "Crash safety",
        "`predict` (append) killed with SIGKILL at 20 random moments spread over a run "
        "(start-up, model load, scan, score, write, commit), on 800,000 rows; half the "
        "runs re-run a batch that is already there, a quarter write the first batch of a "
        "dataset that does not exist yet",
        "every visible `.parquet` file reads whole (pyarrow, rows = footer); DuckDB over "
        "`**/*.parquet` reads no temporary file, nor does `rank` (it agrees with DuckDB "
        "after every kill that left one); other batches keep their very files; the batch "
        "is absent or whole (never lost when it was there); the lock is free; a re-run "
        "leaves the batch whole and once (rows = distinct ids = input rows; every 5th "
        "round also a DuckDB anti join against the input)",
        "-9, then 0",
        f"{CRASH}::test_sigkill_during_append",
    ),
    Case(
        "kill-overwrite",
        "Crash safety",
        "`predict --output-mode overwrite` killed with SIGKILL at 20 random moments over a "
        "dataset of two older batches",
        "the dataset is the old one (the same files) or the new one (only the new batch, "
        "whole), never a mix; `rank` agrees with DuckDB after kills that left temporary "
        "files; the lock is free; a re-run leaves exactly the new batch once and no "
        "staging or old tree behind",
        "-9, then 0",
        f"{CRASH}::test_sigkill_during_overwrite",
    ),
    Case(
        "write-fails",
        "Crash safety",
        "the disk fills up in the middle of a batch, append and overwrite (simulated with a "
        "256 KiB file size limit: writes fail with EFBIG as they would with ENOSPC)",
        "one line `cannot write to ...: File too large`; the dataset keeps its very files; "
        "no temporary file or staging tree left; the lock is free",
        "1",
        "test_write_failure.py::test_write_failure_mid_batch",
    ),
    # --- overlap ------------------------------------------------------------------------
    Case(
        "overlap-exit-75",
        "Overlap",
        "a second `predict` (same batch, or another batch) while a first holds the lock, "
        "`--lock-timeout 0`",
        "the second exits 75 with one line naming the holder's pid and saying retry later, "
        "and writes nothing; the first finishes; retrying then adds the batch (or replaces "
        "the same one): every batch whole, once",
        "75, then 0",
        f"{OVERLAP}::test_second_run_exits_75_while_the_first_holds_the_lock",
    ),
    Case(
        "overlap-wait",
        "Overlap",
        "the same with `--lock-timeout 120`",
        "the second waits, then runs after the first: both exit 0; the same batch twice is "
        "there once, two batches both whole",
        "0",
        f"{OVERLAP}::test_second_run_waits_for_the_lock",
    ),
    Case(
        "overlap-race",
        "Overlap",
        "four runs started at once on a dataset that does not exist yet (appends of two "
        "batches, one of them twice, plus one or two overwrites), three rounds",
        "all exit 0 in turn; every batch whole and once; exactly one overwrite's batch "
        "survives; nothing left behind",
        "0",
        f"{OVERLAP}::test_runs_racing_for_a_new_dataset_serialize",
    ),
    Case(
        "rank-while-writing",
        "Overlap",
        "`rank` in a loop while `predict` appends batches, or overwrites the dataset and "
        "appends another batch in turn",
        "every read succeeds and shows every user with the same latest batch (never part "
        "of one) and never one tree's batch beside the other tree's",
        "0",
        f"{OVERLAP}::test_rank_while_predict_writes",
    ),
    # --- interrupt ----------------------------------------------------------------------
    Case(
        "sigint-sigterm",
        "Interrupt",
        "SIGINT (Ctrl-C) or SIGTERM at 6 random moments spread over a `predict` run (its "
        "first 80%, counted from the signal handlers' installation), append and overwrite",
        "exit 128 + signal; stderr is exactly `mbp: error: interrupted` / `terminated`; no "
        "temporary file, staging tree or lock file left; the dataset is the old one (same "
        "files) or has the new batch whole; the lock is free",
        "130 / 143",
        f"{INTERRUPT}::test_signal_at_random_moments",
    ),
    Case(
        "signal-in-native-code",
        "Interrupt",
        "SIGINT or SIGTERM arriving while onnxruntime scores a batch, or while DuckDB scans, "
        "inside mbp's own error handling around those calls",
        "reported as the interrupt, not as a model or read failure; the same clean state",
        "130 / 143",
        f"{INTERRUPT}::test_signal_while_native_code_runs",
    ),
    Case(
        "signal-while-waiting",
        "Interrupt",
        "SIGINT, SIGTERM or SIGHUP while `predict --lock-timeout 600` waits for another run's lock",
        "stops at once (under 2 s) with the one line and exit code; the holder carries on; "
        "nothing written",
        "130 / 143 / 129",
        f"{INTERRUPT}::test_signal_while_waiting_for_the_lock",
    ),
]


def _bad(id: str, situation: str, code: int, stderr: str) -> Case:
    return Case(id, "Bad input", situation, NOTHING, str(code), BAD, code=code, stderr=stderr)


CASES += [
    _bad(
        "corrupt-footer",
        "`--input` is a truncated Parquet file",
        1,
        r"^mbp: error: cannot read the input files: .*in\.parquet",
    ),
    _bad(
        "corrupt-row-group",
        "`--input` has an intact footer but a garbled page in its 8th row group (the damage "
        "shows mid-scan, after rows were scored)",
        1,
        r"^mbp: error: cannot read the input files: ",
    ),
    _bad(
        "empty-file",
        "`--input` is an empty (0-byte) file",
        1,
        r"^mbp: error: cannot read the input files: .*in\.parquet.*too small to be a Parquet",
    ),
    _bad(
        "no-parquet-files",
        "`--input` is a directory with no Parquet files",
        2,
        r"^mbp: error: no Parquet files under the input directory '.*features'",
    ),
    _bad(
        "input-missing",
        "`--input` does not exist",
        2,
        r"^mbp: error: the input path '.*nope\.parquet' does not exist",
    ),
    _bad(
        "model-not-onnx",
        "`--model` is a file that is not ONNX",
        1,
        r"^mbp: error: model file '.*model\.onnx' is not a valid ONNX model",
    ),
    _bad(
        "model-missing-file",
        "`--model` names a file that does not exist",
        2,
        r"^mbp: error: model file '.*nope\.onnx' does not exist",
    ),
    _bad(
        "model-column-missing",
        "the model needs a column the table lacks",
        2,
        r"^mbp: error: the input table has no column 'f2' that the model needs",
    ),
    _bad(
        "model-column-type",
        "a feature column has a type the model input cannot take (text for float)",
        2,
        r"^mbp: error: column 'f2' has type VARCHAR, which cannot be cast to the float32 input",
    ),
    _bad(
        "nan-feature",
        "a feature is NaN in a row being scored",
        2,
        r"^mbp: error: column 'f1' has a NaN for rowid 'u00006'",
    ),
    _bad(
        "inf-feature",
        "a feature is infinite in a row being scored",
        2,
        r"^mbp: error: column 'f1' has an infinite \(or too large\) value for rowid 'u00006'",
    ),
    _bad(
        "null-feature",
        "a feature is null in a row being scored",
        2,
        r"^mbp: error: column 'f1' has a null for rowid 'u00006'.*--fill-null",
    ),
    _bad(
        "null-feature-unfiltered",
        "a null in the 5th batch of an unfiltered run, over an existing dataset",
        2,
        r"^mbp: error: column 'f1' has a null for rowid 'u00035'",
    ),
    _bad(
        "output-is-file",
        "`--output` is a regular file",
        2,
        r"^mbp: error: output path .*out is a file; --output must be a directory",
    ),
    _bad(
        "output-unwritable",
        "`--output` cannot be created (its parent is a regular file; the tests run as root, "
        "which mode bits do not stop)",
        2,
        r"^mbp: error: cannot create the output in .*plain: not a directory",
    ),
    _bad(
        "overwrite-foreign-files",
        "`--output-mode overwrite` on a folder that holds more than batches (here the input "
        "table and a text file, as with `--output .`)",
        2,
        r"^mbp: error: --output .*out holds '(features\.parquet|notes\.txt)', which is not "
        r"part of an mbp dataset; .*overwrite would delete it",
    ),
    _bad(
        "output-in-input",
        "`--output` is a folder inside the `--input` folder (the next run would read the "
        "scores as features)",
        2,
        r"^mbp: error: --output .*out' is inside --input .*; put the output dataset beside",
    ),
    _bad(
        "input-in-output",
        "`--input` is a glob that also matches the batches of the `--output` dataset",
        2,
        r"^mbp: error: --input .* takes files from the --output dataset .*out'",
    ),
    _bad(
        "overwrite-hidden-files",
        "`--output-mode overwrite` on a folder whose only contents are hidden (`.git`, `.ssh`, "
        "as with `--output ~`)",
        2,
        r"^mbp: error: --output .*out holds '\.git', which is not part of an mbp dataset",
    ),
    _bad(
        "overwrite-working-folder",
        "`--output-mode overwrite` on the folder mbp runs in (`--output .`, even an empty one)",
        2,
        r"^mbp: error: --output .*out is the working folder or holds it",
    ),
    _bad(
        "lock-symlink",
        "the dataset's lock file is a symbolic link to another file (which a root cron job "
        "would otherwise truncate)",
        2,
        r"^mbp: error: the lock file .*\.mbp\.lock is a symbolic link; remove it",
    ),
    _bad(
        "filter-sql-or",
        "`--rowid-filter \"'1') OR 1=1 --\"`",
        2,
        r"^mbp: error: bad --rowid-filter at character 4 .*unexpected '\)'",
    ),
    _bad(
        "filter-sql-drop",
        '`--rowid-filter "\';DROP TABLE x;--"`',
        2,
        r"^mbp: error: bad --rowid-filter at character 1 .*a quote that does not close",
    ),
    _bad(
        "filter-unterminated",
        "`--rowid-filter \"'u00001','u00002\"` (a quote that does not close)",
        2,
        r"^mbp: error: bad --rowid-filter at character 10 .*a quote that does not close",
    ),
    _bad(
        "filter-stray-token",
        "`--rowid-filter \"'u00001' 'u00002'\"` (no comma)",
        2,
        r"^mbp: error: bad --rowid-filter at character 10 .*unexpected \"'\" after an id",
    ),
    _bad(
        "filter-uncastable",
        "an id that is not a number for an integer rowid column",
        2,
        r"^mbp: error: rowid '1001x' cannot be read as int64",
    ),
    _bad(
        "filter-not-utf8",
        "`--rowid-filter -` with bytes on stdin that are not UTF-8",
        2,
        r"^mbp: error: the rowid filter on stdin is not UTF-8 text \(byte 0xff at offset 11\)",
    ),
    _bad(
        "rank-corrupt",
        "`rank --predictions` holds a corrupt batch file",
        1,
        r"^mbp: error: cannot read the predictions.*part-20261203T100500\.parquet",
    ),
    _bad(
        "sessions-corrupt",
        "`list-users --sessions` is a corrupt Parquet file",
        1,
        r"^mbp: error: cannot read the sessions files",
    ),
    Case(
        "stdout-full",
        "Bad input",
        "stdout redirected to a full disk (`mbp list-users > /dev/full`)",
        "one line `cannot write to standard output: No space left on device`",
        "1",
        f"{WORKS}::test_stdout_on_a_full_disk",
    ),
    Case(
        "odd-ids",
        "Valid but awkward ids",
        "ids with quotes, `''`, commas, new lines, spaces, non-ASCII, SQL text, double "
        "quotes, backslashes and the empty id, given as an argument, on stdin and in @FILE",
        "scores exactly the rows with those ids (scores equal onnxruntime's); ids with no "
        "row are counted",
        "0",
        f"{WORKS}::test_odd_ids_score_the_right_rows",
    ),
    Case(
        "filter-200k-stdin",
        "Valid but awkward ids",
        "200,000 quoted ids on stdin (150,000 present in a 200,000-row input)",
        "exactly the matching rows, once (DuckDB count by hand), in under 10 s",
        "0",
        f"{WORKS}::test_200k_ids_on_stdin",
    ),
]

CASES += [
    Case(
        "fuzz-filter-text",
        "Fuzz",
        "any `--rowid-filter` text (quotes, commas, new lines, SQL punctuation, any Unicode)",
        "exit 0 scoring only ids that are in the table and in the text, or exit 2 with "
        "`bad --rowid-filter at character N`; never a traceback",
        "0 / 2",
        f"{FUZZ}::test_any_filter_text",
    ),
    Case(
        "fuzz-filter-roundtrip",
        "Fuzz",
        "any list of ids (any Unicode, empty, quotes), quoted as list-users prints them",
        "exactly the listed ids that have a row are scored",
        "0",
        f"{FUZZ}::test_any_ids_round_trip",
    ),
    Case(
        "fuzz-sessions",
        "Fuzz",
        "`list-users` over sessions whose id column is int32/int64/text/float/bool/date/"
        "binary/all-null and whose time column is epoch s/ms, int32, timestamps (naive, UTC), "
        "date, text, float or all-null, with random nulls",
        "usable types: exactly the ids with an event in the window (computed by hand); "
        "others: exit 2 naming the column's type; never a traceback",
        "0 / 2",
        f"{FUZZ}::test_sessions_of_any_types",
    ),
    Case(
        "fuzz-features",
        "Fuzz",
        "`predict` over feature columns of random types (floats, ints, uint8, bool, decimal, "
        "text, date, timestamp), random values (NaN, +-inf, huge), random null features and "
        "rowids, text or integer ids, with and without `--fill-null`",
        "a type the model cannot take: exit 2 naming the column; a null/NaN (unfilled) or a "
        "value float32 cannot hold: exit 2 naming a rowid; otherwise every row with a rowid "
        "scored as onnxruntime scores it",
        "0 / 2",
        f"{FUZZ}::test_features_of_any_types",
    ),
]


_BY_ID = {c.id: c for c in CASES}
_COVERED: dict[str, str] = {}  # case id -> the test that declared it


def _name(fn: Callable[..., Any]) -> str:
    return f"{Path(inspect.getfile(fn)).name}::{fn.__name__}"


def case(*ids: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare that the test checks these cases; each case must name this very test."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        for id in ids:
            assert _BY_ID[id].test == _name(fn), f"case {id} names {_BY_ID[id].test}"
            _COVERED[id] = _name(fn)
        return fn

    return mark


def each_case(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Parametrize the test with `case`: every case that names it."""
    mine = [c for c in CASES if c.test == _name(fn)]
    assert mine, f"no case names {_name(fn)}"
    for c in mine:
        _COVERED[c.id] = _name(fn)
    return pytest.mark.parametrize("case", mine, ids=[c.id for c in mine])(fn)


def covered() -> dict[str, str]:
    return dict(_COVERED)
