"""tracking.report_to: the metrics and params read back through TensorBoard's and MLflow's own readers."""

import json

import pytest

from lorakit.cli.main import cli
from tests.unit.cli.test_train import invoke, make_config


def test_tensorboard_and_mlflow_get_the_same_metrics_as_the_log(tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 4, "log_every": 1},
                         tracking={"report_to": ["tensorboard", "mlflow"]})
    assert invoke("train", config).exit_code == 0
    run = tmp_path / "runs" / "tiny-v001"
    logged = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]
    losses = {x["current_steps"]: x["loss"] for x in logged if "loss" in x}
    eval_losses = {x["current_steps"]: x["eval_loss"] for x in logged if "eval_loss" in x}

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tb_loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert tb_loss.keys() == losses.keys()
    # TensorBoard stores scalars as float32 (7 significant digits); the JSON log keeps more
    assert all(tb_loss[s] == pytest.approx(losses[s], rel=1e-5) for s in losses)
    assert {e.step for e in events.Scalars("eval/loss")} == eval_losses.keys()

    record = json.loads((run / "manifest.json").read_text())["trackers"]
    assert record["tensorboard"] == {"log_dir": "tensorboard"}
    assert record["mlflow"]["uri"] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = MlflowClient(record["mlflow"]["uri"])
    mlflow_run = client.get_run(record["mlflow"]["run_id"])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "tiny-v001"
    assert mlflow_run.data.params["lora.r"] == "16" and mlflow_run.data.params["run"] == "tiny-v001"
    history = {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, "loss")}
    assert history.keys() == losses.keys()
    assert all(history[s] == pytest.approx(losses[s], rel=1e-5) for s in losses)  # the same float32 loss
    assert {m.step for m in client.get_metric_history(mlflow_run.info.run_id, "eval_loss")} == eval_losses.keys()


def test_a_tracker_that_is_not_installed_is_a_one_line_error(tmp_path, tiny_model_dir, monkeypatch):
    import importlib.util

    from click.testing import CliRunner

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    config = make_config(tmp_path, tiny_model_dir, tracking={"report_to": ["mlflow"]})
    result = CliRunner().invoke(cli, ["train", str(config)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == ("error: tracking.report_to: mlflow is not installed; "
                                                       "install it with: pip install 'lorakit[trackers]'")


def test_no_tracker_stores_a_credential_from_the_config(tmp_path):
    from mlflow.tracking import MlflowClient

    from lorakit.config.schema import RunConfig
    from lorakit.train.trackers import build_trackers

    secret = "Tracker-Secret-7"
    cfg = RunConfig.model_validate({"model": {"name_or_path": "m"}, "data": {"train": ["t.jsonl"]},
                                    "output": {"dir": str(tmp_path)}, "tracking": {
                                        "report_to": ["tensorboard", "mlflow"],
                                        "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    params = {"tracking.mlflow_uri": f"https://ops:{secret}@mlflow.example/", "hf_token": secret,
              "data.train": [f"https://host/rows.jsonl?token={secret}"], "lora.r": 16}
    (tensorboard, mlflow), record = build_trackers(cfg.tracking, cfg.output.dir, tmp_path / "run", params)
    for tracker in (tensorboard, mlflow):
        tracker.on_train_end("completed")
    stored = MlflowClient(record["mlflow"]["uri"]).get_run(record["mlflow"]["run_id"]).data.params
    assert stored["tracking.mlflow_uri"] == "https://<redacted>@mlflow.example/" and stored["lora.r"] == "16"
    assert stored["hf_token"] == "<redacted>"
    events = b"".join(p.read_bytes() for p in (tmp_path / "run" / "tensorboard").iterdir())
    assert b"tracking.mlflow_uri: https://<redacted>@mlflow.example/" in events  # the params text, redacted
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert secret.encode() not in written  # the event files and the MLflow store alike
