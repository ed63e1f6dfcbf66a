"""Shared fixtures: a CLI runner that keeps stdout and stderr apart."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mbp.cli import app


class Run:
    """Invoke the real CLI in-process and return (exit code, stdout, stderr)."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | bytes | None = None, env: dict | None = None):
        result = self.runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def mbp() -> Run:
    return Run()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    # No MBP_* setting or ./mbp.toml from the developer's shell leaks into a test.
    import os

    for key in list(os.environ):
        if key.startswith("MBP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
