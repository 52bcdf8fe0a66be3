"""No credential reaches a file lorakit writes: a training run, a queue job, an external trainer's job."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.integration.queue.conftest import remote_section

SECRETS = {  # variable -> value; each value holds a credential that must never be written
    "MLFLOW_TRACKING_URI": "http://ops:Pw-in-url-1@127.0.0.1:9/",
    "HF_TOKEN": "hf_TokenValue2",
    "WANDB_API_KEY": "KeyValue3",
    "LORAKIT_NOTIFY_URL": "https://hooks.example/notify?token=QueryToken4&channel=runs",
    "MLFLOW_TRACKING_PASSWORD": "PlainPassword5",
}
CREDENTIALS = ("Pw-in-url-1", "hf_TokenValue2", "KeyValue3", "QueryToken4", "PlainPassword5", "Cfg-Pw-6")


def scan(*roots: Path) -> dict[str, list[str]]:
    """{file: credentials found in it} for every file under ``roots``."""
    leaks = {}
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if found := [c for c in CREDENTIALS if c.encode() in data]:
                leaks[str(path)] = found
    return leaks


@pytest.fixture
def secret_env(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def test_no_credential_in_any_file_a_run_or_a_queue_job_writes(tmp_path, server, tiny_model_dir, secret_env):
    write_jsonl(tmp_path / "train.jsonl", ALPACA_ROWS)
    (tmp_path / "config.yaml").write_text(
        f"model: {{name_or_path: {tiny_model_dir}}}\ndata: {{train: train.jsonl, max_length: 64}}\n"
        "train: {max_steps: 2, micro_batch_size: 2, log_every: 1}\n")
    run = CliRunner().invoke(cli, ["train", str(tmp_path / "config.yaml"), "--name", "plain",
                                   "--set", "tracking.mlflow_uri=https://ops:Cfg-Pw-6@mlflow.example/"])
    assert run.exit_code == 0, run.output
    manifest = json.loads((tmp_path / "runs" / "plain-v001" / "manifest.json").read_text())
    env = manifest["environment"]
    assert env["TOKENIZERS_PARALLELISM"] == "false"  # not a secret, though it starts with TOKEN
    assert env["HF_TOKEN"] == env["MLFLOW_TRACKING_PASSWORD"] == "<redacted>"
    assert "WANDB_API_KEY" not in env  # not a variable that changes training: not recorded at all
    assert env["MLFLOW_TRACKING_URI"] == "http://<redacted>@127.0.0.1:9/"
    assert env["LORAKIT_NOTIFY_URL"] == "https://hooks.example/notify?token=<redacted>&channel=runs"
    assert manifest["config"]["tracking"]["mlflow_uri"] == "https://<redacted>@mlflow.example/"

    # A queue job trained by lorakit, and one by an external command, both uploaded.
    (server.root / "training" / "rows").mkdir(parents=True)
    write_jsonl(server.root / "training" / "rows" / "train.jsonl", ALPACA_ROWS)
    (server.root / "training" / "pics").mkdir(parents=True)
    (server.root / "training" / "pics" / "1.png").write_bytes(b"png")
    (tmp_path / "rclone.conf").write_text(remote_section("srv", server.port))
    (tmp_path / "fake_trainer.py").write_text(
        "import pathlib, sys\nout = pathlib.Path(sys.argv[1])\n(out / 'lora.safetensors').write_bytes(b'w')\n")
    (tmp_path / "t.toml").write_text('output_dir = "{output_dir}"\n')
    common = '[remote]\ntraining = "srv:training"\noutput = "srv:output"\nconfig = "rclone.conf"\n'
    (tmp_path / "lorakit-ws.toml").write_text(f'work_dir = "work"\nconfig = "config.yaml"\n{common}')
    (tmp_path / "command-ws.toml").write_text(
        f'work_dir = "work2"\noutput_dir = "outputs2"\n{common}[trainer]\nkind = "command"\n'
        f'command = "{{python}} {tmp_path}/fake_trainer.py {{output_dir}}"\nconfig = "t.toml"\n')
    for ws, only in (("lorakit-ws.toml", "rows"), ("command-ws.toml", "pics")):
        result = CliRunner().invoke(cli, ["queue", str(tmp_path / ws), "--only", only, "--test"])
        assert result.exit_code == 0, result.output
        assert not any(c in result.output for c in CREDENTIALS)
    uploaded = json.loads((server.root / "output" / "pics-v1" / "manifest.json").read_text())
    assert uploaded["environment"]["HF_TOKEN"] == "<redacted>"

    written = [tmp_path / d for d in ("runs", "work", "outputs", "work2", "outputs2")] + [server.root / "output"]
    assert all(d.is_dir() for d in written)
    assert scan(*written) == {}
