"""A run on a LLaMA-Factory registry of tool-calling and alpaca data, end to end through ``lorakit train``."""

import json

import yaml
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import write_jsonl

TOOL_ROW = {
    "conversations": [
        {"from": "human", "value": "what is two plus two ?"},
        {"from": "function_call", "value": json.dumps({"name": "add", "arguments": {"a": 2, "b": 2}})},
        {"from": "observation", "value": "four"},
        {"from": "gpt", "value": "two plus two equals four"},
    ],
    "tools": json.dumps([{"name": "add", "description": "sum of two numbers", "parameters": {"type": "object"}}]),
}


def test_a_registry_run_trains_tool_calls_and_records_every_file_and_ignored_field(tmp_path, tiny_model_dir):
    write_jsonl(tmp_path / "tools.jsonl", [TOOL_ROW] * 8)
    write_jsonl(tmp_path / "qa.jsonl", [{"q": "say hello", "a": "hello there", "id": i} for i in range(8)])
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "tools": {"file_name": "tools.jsonl", "formatting": "sharegpt",
                  "columns": {"messages": "conversations", "tools": "tools"}},
        "qa": {"file_name": "qa.jsonl", "columns": {"prompt": "q", "response": "a"}}}))
    config = {"model": {"name_or_path": str(tiny_model_dir)},
              "data": {"train": "dataset_info.json#tools,qa", "template": "chatml", "max_length": 128},
              "train": {"max_steps": 2, "micro_batch_size": 2, "grad_accum": 1, "log_every": 1},
              "output": {"name": "peer"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["train", "config.yaml"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "runs" / "peer-v001" / "manifest.json").read_text())
    assert set(manifest["data_files"]) == {"dataset_info.json", "tools.jsonl", "qa.jsonl"}
    stats = manifest["data_stats"]["train"]
    assert stats["rows"] == 16 and stats["formats"] == {"dataset_info.json#tools": "messages",
                                                        "dataset_info.json#qa": "alpaca"}
    assert stats["ignored_fields"] == {"dataset_info.json#qa": ["id"]}
    assert "train data: dataset_info.json#qa: ignored fields: id" in result.output  # said in the training log
