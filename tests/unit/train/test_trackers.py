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


def test_an_mlflow_server_that_is_not_there_is_one_line_before_the_run(tmp_path, tiny_model_dir):
    import socket

    from click.testing import CliRunner

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = make_config(tmp_path, tiny_model_dir, tracking={"report_to": ["mlflow"],
                                                             "mlflow_uri": f"http://ops:s3cret@127.0.0.1:{port}/"})
    result = CliRunner().invoke(cli, ["train", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: tracking.mlflow_uri: cannot reach http://<redacted>@127.0.0.1:{port}/ (")
    assert "s3cret" not in result.output and not (tmp_path / "runs").exists()  # before the run folder


def test_a_server_that_answers_at_all_is_there(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from lorakit.train.trackers import check_mlflow_server

    class NoHealthPage(BaseHTTPRequestHandler):  # a proxy in front of MLflow may answer 404 or 401
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NoHealthPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_mlflow_server(f"http://127.0.0.1:{server.server_port}/prefix")
    finally:
        server.shutdown()
    check_mlflow_server(f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}")  # a database is not probed


def test_mlflow_failing_mid_run_is_said_once_and_the_training_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    calls = []
    real_log_batch = MlflowClient.log_batch

    def server_gone(self, run_id, metrics=(), params=(), **kwargs):
        if metrics:  # the params at the start went through; the first step's metrics find the server gone
            calls.append(run_id)
            raise ConnectionError("Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch")
        return real_log_batch(self, run_id, metrics=metrics, params=params, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", server_gone)
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 4, "log_every": 1},
                         tracking={"report_to": ["mlflow"]})
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny-v001"
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    logged = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]
    assert sum("loss" in x for x in logged) == 4  # every step still in the run's own log
    assert len(calls) == 1  # left alone after the first failure, not retried at every step
    warnings = [line for line in result.output.splitlines() if "WARNING mlflow:" in line]
    assert len(warnings) == 1 and "training goes on without MLflow" in warnings[0], result.output
