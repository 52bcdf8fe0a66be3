"""No credential reaches a file lorakit writes or a tracker it reports to: a distinct secret in every place a user can
put one (the environment, --set, each config layer, a trainer's config, the MLflow URI, the rclone config), then every
file under the runs, the queue's folders, the output remote and the sweep storage is searched for each of them."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.integration.queue.conftest import PASSWORD, remote_section

SECRETS = {  # variable -> value; each value holds a credential that must never be written
    "MLFLOW_TRACKING_URI": "http://ops:Pw-in-url-1@127.0.0.1:9/",
    "HF_TOKEN": "hf_TokenValue2",
    "WANDB_API_KEY": "KeyValue3",
    "LORAKIT_NOTIFY_URL": "https://hooks.example/notify?token=QueryToken4&channel=runs",
    "MLFLOW_TRACKING_PASSWORD": "PlainPassword5",
}
IN_CONFIGS = {  # where -> the secret it holds
    "--set": "Set-Pw-6", "base layer": "Base-Pw-7", "overlay layer": "Overlay-Pw-8", "trainer config token": "hf_Tok9",
    "trainer config url": "Trainer-Url-10", "queue base config": "Queue-Pw-11", "sweep --set": "Sweep-Pw-12",
    "workspace overlay": "Ws-Overlay-13",
}


def credentials(obscured: str) -> list[str]:
    return ["Pw-in-url-1", "hf_TokenValue2", "KeyValue3", "QueryToken4", "PlainPassword5", *IN_CONFIGS.values(),
            PASSWORD, obscured]


def scan(secrets: list[str], *roots: Path) -> dict[str, list[str]]:
    """{file: credentials found in it} for every file under ``roots``."""
    leaks = {}
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if found := [c for c in secrets if c.encode() in data]:
                leaks[str(path)] = found
    return leaks


@pytest.fixture
def secret_env(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def uri(password: str) -> str:
    return f"https://ops:{password}@mlflow.example/"


def test_no_credential_reaches_a_file_or_a_tracker(tmp_path, server, tiny_model_dir, secret_env):
    write_jsonl(tmp_path / "train.jsonl", ALPACA_ROWS)
    config = {"model": {"name_or_path": str(tiny_model_dir)},
              "data": {"train": "train.jsonl", "max_length": 64, "val_size": 0.25},
              "train": {"max_steps": 2, "micro_batch_size": 2, "log_every": 1, "eval_every": 1},
              "tracking": {"report_to": ["tensorboard"], "mlflow_uri": uri(IN_CONFIGS["base layer"])}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "over.yaml").write_text(f"tracking: {{mlflow_uri: '{uri(IN_CONFIGS['overlay layer'])}'}}\n")

    # A training run: each layer and --set, TensorBoard on.
    run = CliRunner().invoke(cli, ["train", str(tmp_path / "config.yaml"), "--add", str(tmp_path / "over.yaml"),
                                   "--name", "plain", "--set", f"tracking.mlflow_uri={uri(IN_CONFIGS['--set'])}"])
    assert run.exit_code == 0, run.output
    manifest = json.loads((tmp_path / "runs" / "plain-over-v001" / "manifest.json").read_text())
    env = manifest["environment"]
    assert env["TOKENIZERS_PARALLELISM"] == "false"  # not a secret, though it starts with TOKEN
    assert env["HF_TOKEN"] == env["MLFLOW_TRACKING_PASSWORD"] == "<redacted>"
    assert "WANDB_API_KEY" not in env  # not a variable that changes training: not recorded at all
    assert env["MLFLOW_TRACKING_URI"] == "http://<redacted>@127.0.0.1:9/"
    assert env["LORAKIT_NOTIFY_URL"] == "https://hooks.example/notify?token=<redacted>&channel=runs"
    assert manifest["config"]["tracking"]["mlflow_uri"] == "https://<redacted>@mlflow.example/"
    events = b"".join(p.read_bytes() for p in (tmp_path / "runs" / "plain-over-v001" / "tensorboard").iterdir())
    assert b"tracking.mlflow_uri: https://<redacted>@mlflow.example/" in events  # the params text, redacted

    # A queue: a lorakit job (a secret in its base config and in a workspace overlay) and an external trainer's
    # job (a token and a URL password in its config), both uploaded to the WebDAV remote.
    (server.root / "training" / "rows").mkdir(parents=True)
    write_jsonl(server.root / "training" / "rows" / "train.jsonl", ALPACA_ROWS)
    (server.root / "training" / "pics").mkdir(parents=True)
    (server.root / "training" / "pics" / "1.png").write_bytes(b"png")
    (tmp_path / "rclone.conf").write_text(remote_section("srv", server.port))
    obscured = (tmp_path / "rclone.conf").read_text().split("pass = ")[1].split()[0]
    queue_base = {**config, "tracking": {"report_to": ["tensorboard"],
                                         "mlflow_uri": uri(IN_CONFIGS["queue base config"])}}
    (tmp_path / "queue-base.yaml").write_text(yaml.safe_dump(queue_base))
    (tmp_path / "ws-over.yaml").write_text(f"tracking: {{mlflow_uri: '{uri(IN_CONFIGS['workspace overlay'])}'}}\n")
    (tmp_path / "fake_trainer.py").write_text(
        "import pathlib, sys, tomllib\nconfig = tomllib.loads(pathlib.Path(sys.argv[1]).read_text())\n"
        "out = pathlib.Path(config['output_dir'])\n(out / 'lora.safetensors').write_bytes(b'w')\n"
        "print('token', config['hub_token'], 'url', config['push_url'])\n")
    token, url = IN_CONFIGS["trainer config token"], uri(IN_CONFIGS["trainer config url"])
    (tmp_path / "t.toml").write_text(f'output_dir = "{{output_dir}}"\nhub_token = "{token}"\npush_url = "{url}"\n')
    common = '[remote]\ntraining = "srv:training"\noutput = "srv:output"\nconfig = "rclone.conf"\n'
    (tmp_path / "lorakit-ws.toml").write_text(
        f'work_dir = "work"\nconfig = "queue-base.yaml"\noverlays = ["ws-over.yaml"]\n{common}')
    (tmp_path / "command-ws.toml").write_text(
        f'work_dir = "work2"\noutput_dir = "outputs2"\n{common}[trainer]\nkind = "command"\n'
        f'command = "{{python}} {tmp_path}/fake_trainer.py {{config}}"\nconfig = "t.toml"\n')
    for ws, only in (("lorakit-ws.toml", "rows"), ("command-ws.toml", "pics")):
        result = CliRunner().invoke(cli, ["queue", str(tmp_path / ws), "--only", only, "--test"])
        assert result.exit_code == 0, result.output
        assert not any(c in result.output for c in credentials(obscured))
    uploaded = json.loads((server.root / "output" / "pics-v1" / "manifest.json").read_text())
    assert uploaded["environment"]["HF_TOKEN"] == "<redacted>"
    assert uploaded["config"]["hub_token"] == "<redacted>"
    rows = json.loads((server.root / "output" / "rows-v1-ws-over" / "manifest.json").read_text())
    assert rows["config"]["tracking"]["mlflow_uri"] == "https://<redacted>@mlflow.example/"  # the trainer had it

    # A sweep with a secret in --set: the study, its journal, its summary and its trials' runs.
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"train.lr": [0.01, 0.02], "sampler": "grid",
                                                         "pruner": "none"}))
    sweep = subprocess.run(["lorakit", "sweep", str(tmp_path / "config.yaml"), "--space", str(tmp_path / "space.yaml"),
                            "--name", "s", "--workers", "2", "--set",
                            f"tracking.mlflow_uri={uri(IN_CONFIGS['sweep --set'])}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    spec = json.loads((tmp_path / "sweeps" / "s" / "sweep.json").read_text())
    assert spec["overrides"] == ["tracking.mlflow_uri=https://<redacted>@mlflow.example/"]
    trial = json.loads(next((tmp_path / "runs").glob("config-lr0.01-v*/manifest.json")).read_text())
    assert trial["config"]["tracking"]["mlflow_uri"] == "https://<redacted>@mlflow.example/"  # its workers had it

    written = [tmp_path / d for d in ("runs", "work", "outputs", "work2", "outputs2", "sweeps")]
    assert all(d.is_dir() for d in written)
    assert scan(credentials(obscured), *written, server.root / "output") == {}
