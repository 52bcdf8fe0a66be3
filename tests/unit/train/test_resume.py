"""Resume: a run stopped part-way and continued ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from lorakit.cli.main import cli
from lorakit.config import load_config
from lorakit.recipe.run import resume_training, run_training
from tests.unit.cli.test_train import invoke, make_config

SETTINGS = {"max_steps": 8, "log_every": 1, "eval_every": 3, "resumable": True, "resume_every": 2}


def losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "trainer_log.jsonl").read_text().splitlines()]
    return ([(x["current_steps"], x["loss"]) for x in lines if "loss" in x],
            [(x["current_steps"], x["eval_loss"]) for x in lines if "eval_loss" in x])


def assert_same_run(a, b, steps=8):
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        # the same ops in the same order on the CPU: equal in practice; 1e-6 leaves room for a BLAS that
        # splits work by thread differently after a restart, far below one AdamW step (lr 1e-2)
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=1e-6)
    (train_a, eval_a), (train_b, eval_b) = losses(a), losses(b)
    assert [s for s, _ in train_b] == list(range(1, steps + 1))  # every step logged exactly once
    assert [s for s, _ in train_a] == [s for s, _ in train_b] and [s for s, _ in eval_a] == [s for s, _ in eval_b]
    for (_, la), (_, lb) in zip(train_a + eval_a, train_b + eval_b, strict=True):
        assert lb == pytest.approx(la, rel=1e-6, abs=1e-6)  # as for the weights above


class SignalAt:
    """Send this process a real signal at the end of a step, as a user or Slurm would."""

    def __init__(self, step, signum):
        self.step, self.signum = step, signum

    def on_train_begin(self, total_steps): pass
    def on_evaluate(self, metrics): pass
    def on_train_end(self, status): pass

    def on_step_end(self, metrics):
        if metrics["step"] == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, tiny_model_dir, signum):
    config = make_config(tmp_path, tiny_model_dir, train=SETTINGS, lora={"dropout": 0.1})  # dropout uses the RNG
    whole = run_training(load_config(config))
    stopped = run_training(load_config(config), callbacks=[SignalAt(3, signum)])
    assert stopped.status == "interrupted"
    manifest = json.loads((stopped.run_dir / "manifest.json").read_text())
    assert manifest["status_history"][-1] == {**manifest["status_history"][-1], "status": "interrupted",
                                              "reason": {signal.SIGINT: "Ctrl+C", signal.SIGTERM: "SIGTERM"}[signum]}
    state = torch.load(stopped.run_dir / "resume_state.pt", weights_only=True)
    assert state["steps_done"] == 3
    # the state is saved a moment before the final runtime is read: wall-clock time apart, well under 0.5 s
    assert state["counters"]["seconds"] == pytest.approx(stopped.metrics["train_runtime"], abs=0.5)

    resumed = resume_training(stopped.run_dir)
    assert resumed.status == "completed" and resumed.run_dir == stopped.run_dir
    assert_same_run(whole.run_dir, resumed.run_dir)
    manifest = json.loads((resumed.run_dir / "manifest.json").read_text())
    assert [h["status"] for h in manifest["status_history"]] == ["created", "running", "interrupted", "running",
                                                                "completed"]
    assert manifest["status_history"][3]["reason"] == "resumed after step 3"
    assert [(a["change"], a["step_reached"]) for a in manifest["attempts"]] == [
        ("as configured", 3), ("resumed after step 3", 8)]
    assert not (resumed.run_dir / "resume_state.pt").exists()  # the final adapter supersedes it
    # run time adds up across the stop: at least the time the stopped part took
    assert resumed.metrics["train_runtime"] >= stopped.metrics["train_runtime"] > 0
    assert resumed.metrics["train_tokens"] == whole.metrics["train_tokens"]


# Training in a child process, slowed by a callback so the test can kill it part-way.
SLOW_RUN = """
import sys, time
from lorakit.config import load_config
from lorakit.recipe.run import run_training

class Slow:
    def on_train_begin(self, total_steps): pass
    def on_step_end(self, metrics): time.sleep(0.3)
    def on_evaluate(self, metrics): pass
    def on_train_end(self, status): pass

run_training(load_config(sys.argv[1]), callbacks=[Slow()])
"""


def kill_after_step_4(config, cwd, run):
    """Train ``config`` slowly in a child process and SIGKILL it once its rolling state holds step 4."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(config)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "resume_state.pt").is_file() or \
            torch.load(run / "resume_state.pt", weights_only=True)["steps_done"] < 4:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)  # polling a subprocess
    proc.send_signal(signal.SIGKILL)  # no handler, no clean-up: only what is on disk survives
    proc.wait()


def test_killed_run_resumes_from_its_rolling_state(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train=SETTINGS)
    assert invoke("train", config).exit_code == 0  # tiny-v001: uninterrupted
    run = tmp_path / "runs" / "tiny-v002"
    kill_after_step_4(config, tmp_path, run)
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    result = CliRunner().invoke(cli, ["train", "--resume", "tiny-v002"])
    assert result.exit_code == 0, result.output
    assert_same_run(tmp_path / "runs" / "tiny-v001", run)


def test_resume_refuses_what_it_cannot_reproduce(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 2})
    assert invoke("train", config).exit_code == 0
    done = CliRunner().invoke(cli, ["train", "--resume", "runs/tiny-v001"])
    assert done.exit_code == 1 and "completed already" in done.output and "lora.init_from" in done.output

    stopped = run_training(load_config(config), callbacks=[SignalAt(1, signal.SIGINT)])
    (tmp_path / "train.jsonl").write_text((tmp_path / "train.jsonl").read_text() + "\n")
    changed = CliRunner().invoke(cli, ["train", "--resume", str(stopped.run_dir)])
    assert changed.exit_code == 1 and "data file train.jsonl changed (sha256" in changed.output

    (stopped.run_dir / "resume_state.pt").unlink()
    missing = CliRunner().invoke(cli, ["train", "--resume", str(stopped.run_dir)])
    assert missing.exit_code == 1 and "resume_state.pt is missing" in missing.output
    unknown = CliRunner().invoke(cli, ["train", "--resume", "nope"])
    assert unknown.exit_code == 1 and "no run 'nope'" in unknown.output
    both = CliRunner().invoke(cli, ["train", str(config), "--resume", "tiny-v001"])
    assert both.exit_code == 2 and "give no CONFIG" in both.output


def test_a_run_squeezed_by_out_of_memory_resumes_with_the_settings_it_had_reached(tmp_path, tiny_model_dir,
                                                                                 monkeypatch):
    from lorakit.faults import ENV as FAULTS
    from tests.unit.train.test_oom import UNPACKED

    monkeypatch.setenv(FAULTS, "oom-tokens:60")  # micro-batches of 4 examples do not all fit: the ladder halves them
    config = make_config(tmp_path, tiny_model_dir, train={**UNPACKED, "max_steps": 8, "log_every": 1})
    whole = run_training(load_config(config))
    stopped = run_training(load_config(config), callbacks=[SignalAt(6, signal.SIGINT)])
    state = torch.load(stopped.run_dir / "resume_state.pt", weights_only=True)
    assert state["settings"]["micro_batch_size"] < 4 and state["steps_done"] == 6
    resumed = resume_training(stopped.run_dir)
    manifest = json.loads((resumed.run_dir / "manifest.json").read_text())
    assert manifest["attempts"][-1]["change"] == "resumed after step 6"
    assert f"micro_batch_size={state['settings']['micro_batch_size']}" in manifest["attempts"][-1]["settings"]
    (train_a, _), (train_b, _) = losses(whole.run_dir), losses(resumed.run_dir)
    assert [s for s, _ in train_a] == [s for s, _ in train_b]
    for (_, la), (_, lb) in zip(train_a, train_b, strict=True):
        assert lb == pytest.approx(la, rel=1e-5)  # re-cut micro-batches: another float32 summation order
