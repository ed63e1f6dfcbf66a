"""RELIABILITY.md is what render.py makes of the cases, and every case has its test."""

from __future__ import annotations

import importlib
from pathlib import Path

import cases
import render

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def test_reliability_md_is_rendered_from_the_cases() -> None:
    text = (REPO / "RELIABILITY.md").read_text(encoding="utf-8")
    assert text == render.render(), (
        "RELIABILITY.md is stale: run `.venv/bin/python tests/reliability/render.py "
        "> RELIABILITY.md`"
    )


def test_every_case_is_checked_by_the_test_it_names() -> None:
    ids = [c.id for c in cases.CASES]
    assert len(ids) == len(set(ids))
    for module in sorted(HERE.glob("test_*.py")):
        importlib.import_module(module.stem)  # their @case / @each_case register the cases
    assert cases.covered() == {c.id: c.test for c in cases.CASES}


def test_every_reliability_test_checks_a_case() -> None:
    named = {c.test for c in cases.CASES}
    for module in sorted(HERE.glob("test_*.py")):
        if module.name == "test_document.py":
            continue
        loaded = importlib.import_module(module.stem)
        tests = [n for n in dir(loaded) if n.startswith("test_")]
        for name in tests:
            assert f"{module.name}::{name}" in named, f"{module.name}::{name} names no case"


def test_every_bad_input_case_has_a_setup() -> None:
    import test_bad_input

    bad = [c.id for c in cases.CASES if c.test == "test_bad_input.py::test_bad_input"]
    assert sorted(test_bad_input.SETUP) == sorted(bad)
