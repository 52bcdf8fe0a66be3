"""TensorBoard and MLflow, through their own APIs: the same metrics and params as trainer_log.jsonl.

Both are callbacks of the training loop (main process only). Params are the flattened resolved
config plus the run's identity; metrics are the step and validation figures.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorakit.config.schema import PAIR_STATS, TrackingSection
from lorakit.errors import ConfigError
from lorakit.redaction import redact, redact_text
from lorakit.train.callbacks import eval_values

log = logging.getLogger(__name__)

STEP_METRICS = ("loss", "lr", "grad_norm", "tokens_per_second")


def step_values(metrics: dict[str, Any]) -> dict[str, float]:
    """A step's tracked numbers: STEP_METRICS, and a DPO step's rewards and log-probabilities."""
    return {name: metrics[name] for name in (*STEP_METRICS, *PAIR_STATS) if name in metrics}
NEEDS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
MLFLOW_PROBE_SECONDS = 5  # a server on the network answers a health check well within this
MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


def check_trackers(tracking: TrackingSection) -> None:
    """Raises ConfigError when a tracker in tracking.report_to is not installed, or MLflow's server is not there."""
    for tracker in tracking.report_to:
        if importlib.util.find_spec(NEEDS[tracker]) is None:
            raise ConfigError(f"tracking.report_to: {tracker} is not installed; "
                              "install it with: pip install 'lorakit[trackers]'")
    if "mlflow" in tracking.report_to and tracking.mlflow_uri:
        check_mlflow_server(tracking.mlflow_uri)


def check_mlflow_server(uri: str) -> None:
    """An http(s) tracking server answers at all (any HTTP status is an answer; a database or a folder is not
    probed): MLflow's client would retry an absent one for minutes, then fail the run with a traceback.

    Raises:
        ConfigError: naming the server (credentials redacted) and why it could not be reached.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    netloc = parts.hostname or ""
    health = urllib.parse.urlunsplit((parts.scheme, f"{netloc}:{parts.port}" if parts.port else netloc,
                                      parts.path.rstrip("/") + "/health", "", ""))  # no credentials needed there
    try:
        urllib.request.urlopen(health, timeout=MLFLOW_PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ConfigError(f"tracking.mlflow_uri: cannot reach {redact_text(uri)} ({getattr(e, 'reason', e)}); "
                          "start the server, correct the URI, or take mlflow out of tracking.report_to") from None


def default_mlflow_uri(output_dir: str) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


class TensorBoardLog:
    """Scalars under train/ and eval/, and the params as a text summary, in ``<run>/tensorboard``."""

    def __init__(self, log_dir: Path, params: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))
        self.writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in sorted(params.items())))

    def on_train_begin(self, total_steps: int) -> None:
        pass

    def on_step_end(self, metrics: dict[str, Any]) -> None:
        for name, value in step_values(metrics).items():
            self.writer.add_scalar(f"train/{name}", value, metrics["step"])

    def on_evaluate(self, metrics: dict[str, Any]) -> None:
        for name, value in eval_values(metrics).items():
            self.writer.add_scalar(f"eval/{name.removeprefix('eval_')}", value, metrics["step"])

    def on_samples(self, step: int, samples: list[dict[str, str]]) -> None:
        rows = "\n".join(f"| {s['prompt']} | {s['output']} |".replace("\n", " ") for s in samples)
        self.writer.add_text("samples", "| prompt | answer |\n|---|---|\n" + rows, step)

    def on_train_end(self, status: str) -> None:
        self.writer.flush()
        self.writer.close()


class MlflowLog:
    """One MLflow run per lorakit run (a resumed run continues its MLflow run)."""

    def __init__(self, uri: str, experiment: str, run_name: str, params: dict[str, Any],
                 run_id: str | None = None) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        if run_id is None:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            # MLflow caps a param value at 6000 characters; a long list of data files is cut, not refused.
            self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        self.gone: str | None = None  # why MLflow was left alone, once a call failed

    def _safely(self, what: str, call: Callable[[], Any]) -> None:
        """A tracking server that stops answering must not stop the training (trainer_log.jsonl holds every
        value): the first failure is said, and MLflow is left alone from then on (each call would retry for
        minutes)."""
        if self.gone is not None:
            return
        try:
            call()
        except Exception as e:
            self.gone = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
            log.warning("mlflow: %s failed (%s); training goes on without MLflow (trainer_log.jsonl has every "
                        "value)", what, redact_text(self.gone))

    def _log(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, step) for k, v in values.items()]
        self._safely(f"logging step {step}", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def on_train_begin(self, total_steps: int) -> None:
        pass

    def on_step_end(self, metrics: dict[str, Any]) -> None:
        self._log(step_values(metrics), metrics["step"])

    def on_evaluate(self, metrics: dict[str, Any]) -> None:
        self._log(eval_values(metrics), metrics["step"])

    def on_samples(self, step: int, samples: list[dict[str, str]]) -> None:
        text = "".join(f"{s['prompt']}\t{s['output']}\n" for s in samples)
        self._safely(f"the samples of step {step}",
                     lambda: self.client.log_text(self.run_id, text, f"samples/step-{step:06d}.tsv"))

    def on_train_end(self, status: str) -> None:
        self._safely("ending its run",
                     lambda: self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED")))


def build_trackers(tracking: TrackingSection, output_dir: str, run_dir: Path, params: dict[str, Any],
                   previous: dict[str, Any] | None = None) -> tuple[list[Any], dict[str, Any]]:
    """The tracker callbacks for tracking.report_to, and what the manifest records about them.

    Args:
        output_dir: output.dir (where MLflow's default database goes).
        previous: the manifest's ``trackers`` record of this run (a resumed run logs on).
    """
    callbacks: list[Any] = []
    record: dict[str, Any] = {}
    params = redact(params)  # a password in tracking.mlflow_uri reaches neither TensorBoard nor MLflow
    if "tensorboard" in tracking.report_to:
        callbacks.append(TensorBoardLog(run_dir / "tensorboard", params))
        record["tensorboard"] = {"log_dir": "tensorboard"}
    if "mlflow" in tracking.report_to:
        uri = tracking.mlflow_uri or default_mlflow_uri(output_dir)
        run_id = ((previous or {}).get("mlflow") or {}).get("run_id")
        try:
            tracker = MlflowLog(uri, tracking.mlflow_experiment, run_dir.name, params, run_id)
        except Exception as e:  # asked for, and not there at the start: said before any step, in one line
            first = (str(e).splitlines() or [""])[0][:300]
            raise ConfigError(f"tracking.mlflow_uri: MLflow at {redact_text(uri)} did not start a run "
                              f"({type(e).__name__}: {redact_text(first)}); start the server or correct the URI, "
                              "or take mlflow out of tracking.report_to") from None
        callbacks.append(tracker)
        record["mlflow"] = {"uri": uri, "experiment": tracking.mlflow_experiment, "run_id": tracker.run_id}
        log.info("mlflow: run %s in %s", tracker.run_id, uri)
    return callbacks, record
