"""Every problem a config has before a run starts is reported at once, and nothing is made."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS


def test_every_problem_before_the_start_is_listed_at_once_and_nothing_is_made(tmp_path, tiny_model_dir,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA_ROWS))
    (tmp_path / "config.yaml").write_text(
        f"model: {{name_or_path: {tiny_model_dir}}}\n"
        "data: {train: train.jsonl, eval: [missing-eval.jsonl], max_length: 64}\n"
        "train: {max_steps: 1, sample_prompts: missing-prompts.txt}\n"
        "tracking: {copy_files: [missing-notes.md]}\n")
    before = sorted(p.name for p in tmp_path.iterdir())

    result = CliRunner().invoke(cli, ["train", "config.yaml"])

    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "3 problems before the run could start" in result.output, result.output
    for problem in ("tracking.copy_files: file not found: missing-notes.md",
                    "train.sample_prompts: file not found: missing-prompts.txt",
                    "data.eval: data file not found: missing-eval.jsonl"):
        assert problem in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, no runs/


def test_one_problem_is_still_one_line(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA_ROWS))
    (tmp_path / "config.yaml").write_text(f"model: {{name_or_path: {tiny_model_dir}}}\n"
                                          "data: {train: train.jsonl, max_length: 64}\n"
                                          "tracking: {copy_files: [missing-notes.md]}\n")
    result = CliRunner().invoke(cli, ["train", "config.yaml"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: tracking.copy_files: file not found: missing-notes.md"], result.output


def test_a_row_the_chat_template_cannot_render_is_refused_before_the_run_folder(tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    from tests.unit.data.test_peer_data import TRL_TOOL_ROW

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tools.jsonl").write_text(json.dumps(TRL_TOOL_ROW) + "\n")
    # the tiny tokenizer's own ChatML template knows nothing of tools: found only once the tokenizer renders a row
    (tmp_path / "config.yaml").write_text(f"model: {{name_or_path: {tiny_model_dir}}}\n"
                                          "data: {train: tools.jsonl, max_length: 64}\n")
    before = sorted(p.name for p in tmp_path.iterdir())

    result = CliRunner().invoke(cli, ["train", "config.yaml"])

    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "does not render tool calls or tool definitions" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, no runs/
