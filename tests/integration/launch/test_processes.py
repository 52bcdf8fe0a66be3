"""`lorakit train --nproc 2`: two real processes (torchrun's launcher, gloo on the CPU) train one run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from lorakit.cli.main import cli
from tests.unit.cli.test_train import invoke, make_config

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="torchrun's launcher as used on Linux")


def lorakit(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorakit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def log_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]


def test_two_processes_train_what_one_process_trains_with_the_same_effective_batch(tmp_path, tiny_model_dir,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 18 examples, 4 per step: the last step of each epoch has 2, one for each process; dropout off so
    # both runs draw no random numbers.
    config = make_config(tmp_path, tiny_model_dir, lora={"dropout": 0.0},
                         train={"epochs": 2, "micro_batch_size": 1, "grad_accum": 4, "log_every": 1, "eval_every": 2})
    single = invoke("train", config, "--name", "one")
    assert single.exit_code == 0, single.output
    multi = lorakit(tmp_path, "train", str(config), "--name", "two", "--nproc", "2", "--set", "train.grad_accum=2")
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert multi.stdout.count("completed: runs/two-v001") == 1  # reported once, by rank 0

    one, two = tmp_path / "runs" / "one-v001", tmp_path / "runs" / "two-v001"
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["config"]["launch"]["nproc"] == 2
    assert [s["status"] for s in manifest["status_history"]] == ["created", "running", "completed"]
    log_one, log_two = log_of(one), log_of(two)
    assert [e["current_steps"] for e in log_two] == [e["current_steps"] for e in log_one]  # each step logged once
    assert len(log_two) == len({(e["current_steps"], "eval_loss" in e) for e in log_two})
    for a, b in zip(log_one, log_two, strict=True):
        for key in ("loss", "eval_loss"):
            if key in a:
                # float32 losses near 2-5 summed in another order: rounding stays far below 1e-5
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a, b)
    results_one = json.loads((one / "all_results.json").read_text())
    results_two = json.loads((two / "all_results.json").read_text())
    for key in ("train_steps", "train_tokens", "train_supervised_tokens"):  # every example once per epoch
        assert results_two[key] == results_one[key]
    weights_one, weights_two = (load_file(r / "adapter_model.safetensors") for r in (one, two))
    assert weights_one.keys() == weights_two.keys()
    # The gradients agree to float32 rounding (the losses above, to 1e-5), but AdamW divides each gradient by
    # its running RMS: where a component is near zero, a rounding difference from the other summation order
    # (two partial sums all-reduced) can flip it, moving that weight by up to two steps of lr. Such flips are
    # a few components among thousands, so they barely move the adapter as a whole, while examples weighted
    # wrongly turn the whole update: compare the adapters' B matrices (zero at the start, so they are the update
    # itself) by the norm of their difference against the norm of the update. Measured 6e-7 with torch 2.13;
    # 1e-3 leaves room for a few flipped components on other kernels, and a wrong weighting shows as 0.1 or more.
    import torch

    b_one = torch.cat([v.flatten() for k, v in sorted(weights_one.items()) if "lora_B" in k])
    b_two = torch.cat([weights_two[k].flatten() for k in sorted(weights_one) if "lora_B" in k])
    assert (b_two - b_one).norm() < 1e-3 * b_one.norm()


def test_a_bad_row_or_module_name_fails_before_any_folder_or_process(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, tiny_model_dir, data={"max_length": 3, "on_overflow": "error"})
    too_long = CliRunner().invoke(cli, ["train", str(config), "--nproc", "2"])
    assert too_long.exit_code == 1 and "max_length=3" in too_long.output
    typo = CliRunner().invoke(cli, ["train", str(config), "--nproc", "2", "--set", "data.max_length=64",
                                    "--set", "lora.target_modules=[qv_proj]"])
    assert typo.exit_code == 1 and "lora.target_modules: qv_proj names no module" in typo.output
    assert "Traceback" not in too_long.output + typo.output
    assert not (tmp_path / "runs").exists()


def test_fsdp_on_cpus_is_one_line_before_any_folder(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 1})
    result = lorakit(tmp_path, "train", str(config), "--nproc", "2", "--set", "launch.strategy=fsdp")
    assert result.returncode != 0
    assert "launch.strategy: fsdp needs GPUs" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_stops_both_processes_at_one_step_and_resume_finishes_the_run(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 300, "log_every": 1, "grad_accum": 1})
    # Its own process group, as a terminal's: Ctrl+C reaches the launcher and both training processes.
    started = subprocess.Popen([sys.executable, "-m", "lorakit", "train", str(config), "--nproc", "2"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = tmp_path / "runs" / "tiny-v001" / "trainer_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 5):
        assert started.poll() is None and time.monotonic() < deadline, started.communicate()[1][-3000:]
        time.sleep(0.1)
    os.killpg(started.pid, signal.SIGINT)
    _, err = started.communicate(timeout=120)
    assert started.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    run = tmp_path / "runs" / "tiny-v001"
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    stopped_at = log_of(run)[-1]["current_steps"]
    assert 5 <= stopped_at < 300 and (run / "resume_state.pt").is_file()

    resumed = lorakit(tmp_path, "train", "--resume", "tiny-v001")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert [(s["status"], s.get("reason")) for s in manifest["status_history"]] == [
        ("created", None), ("running", None), ("interrupted", "Ctrl+C"),
        ("running", f"resumed after step {stopped_at}"), ("completed", None)]
    assert [e["current_steps"] for e in log_of(run) if "loss" in e] == list(range(1, 301))


def test_two_processes_stop_early_together_with_metrics_computed_once(tmp_path, tiny_model_dir):
    # Nothing improves by 100: patience runs out after two evaluations, in both processes at the same step.
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25},
                         train={"epochs": 3, "micro_batch_size": 1, "grad_accum": 2, "eval_every": 2, "log_every": 1,
                                "eval_metrics": ["loss", "exact"], "keep": "best",
                                "early_stopping": {"metric": "loss", "patience": 2, "min_delta": 100}})
    done = lorakit(tmp_path, "train", str(config), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "tiny-v001"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["status_history"][-1]["reason"].startswith("stopped early at step 4: loss did not improve")
    evals = [e for e in log_of(run) if "eval_loss" in e]
    assert [e["current_steps"] for e in evals] == [0, 2, 4]  # each evaluation logged once
    assert all("eval_exact" in e for e in evals)  # generated by the main process, once
    assert [e["current_steps"] for e in log_of(run) if "loss" in e] == [1, 2, 3, 4]
