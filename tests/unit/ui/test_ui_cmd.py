"""lorakit ui's command: loopback by default, a token printed once when bound beyond it, paths checked."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette", reason="lorakit[ui] is not installed")

from lorakit.cli.main import cli


@pytest.fixture
def served(monkeypatch):
    calls = []
    monkeypatch.setattr("lorakit.ui.app.serve", lambda paths, host, port, token: calls.append((host, port, token)))
    return calls


def test_loopback_needs_no_token(served, tmp_path):
    result = CliRunner().invoke(cli, ["ui", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert served == [("127.0.0.1", 7860, None)]
    assert "http://127.0.0.1:7860/  (Ctrl+C stops it)" in result.output


def test_beyond_loopback_a_token_is_generated_and_printed_once(served, tmp_path):
    result = CliRunner().invoke(cli, ["ui", str(tmp_path), "--host", "0.0.0.0", "--port", "8000"])
    assert result.exit_code == 0, result.output
    (host, port, token), = served
    assert (host, port) == ("0.0.0.0", 8000) and len(token) >= 20
    assert result.output.count(token) == 1 and f"?token={token}" in result.output


def test_a_missing_path_is_one_line(served, tmp_path):
    result = CliRunner().invoke(cli, ["ui", str(tmp_path / "nope")])
    assert result.exit_code != 0 and served == []
    assert [line for line in result.output.splitlines() if line.strip()] == \
        [f"error: lorakit ui: no such folder or file: {tmp_path / 'nope'}"]
