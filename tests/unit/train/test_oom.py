"""Out-of-memory recovery, made deterministic by the LORAKIT_FAULTS=oom-tokens:N fault."""

import json

import pytest
import torch

from lorakit.faults import ENV as FAULTS
from lorakit.train.oom import is_out_of_memory
from tests.unit.cli.test_train import invoke, make_config

UNPACKED = {"micro_batch_size": 4, "grad_accum": 1, "epochs": 2, "log_every": 1}


def run(tmp_path, model_dir, name, **train):
    result = invoke("train", make_config(tmp_path, model_dir, train={**UNPACKED, **train}, output={"name": name}))
    folder = tmp_path / "runs" / f"{name}-v001"
    log = [json.loads(line) for line in (folder / "trainer_log.jsonl").read_text().splitlines()]
    return result, json.loads((folder / "manifest.json").read_text()), [r for r in log if "loss" in r]


def test_recovery_resumes_mid_run_with_the_same_effective_batch_and_losses(tmp_path, tiny_model_dir, monkeypatch):
    reference, _, expected = run(tmp_path, tiny_model_dir, "reference", micro_batch_size=1, grad_accum=4)
    assert reference.exit_code == 0, reference.output
    monkeypatch.setenv(FAULTS, "oom-tokens:60")  # some micro-batches of 4 examples fit, others do not
    result, manifest, steps = run(tmp_path, tiny_model_dir, "squeezed")
    assert result.exit_code == 0, result.output

    attempts = manifest["attempts"]
    assert len(attempts) >= 2 and attempts[1]["change"] == "micro_batch_size 4 -> 2, grad_accum 1 -> 2"
    assert attempts[1]["resumed_after_step"] > 0  # continued, not restarted from zero
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert all("peak_memory_gib" in a and "step_reached" in a for a in attempts)
    assert "out of memory at step" in result.output and "resuming after step" in result.output
    # Every step exactly once, each with the loss of a run that used small micro-batches throughout.
    assert [r["current_steps"] for r in steps] == [r["current_steps"] for r in expected]
    for got, want in zip(steps, expected, strict=True):
        # re-cut micro-batches sum the same tokens in another order, and AdamW carries that rounding into
        # later steps' weights; 1e-4 of a loss of ~2-5 is well below any real difference (a lost example)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4), got["current_steps"]
    assert steps[-1]["trained_tokens"] == expected[-1]["trained_tokens"]


def test_giving_up_names_what_was_tried_and_what_to_try_next(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(FAULTS, "oom-tokens:1")  # not even one example fits
    result = invoke("train", make_config(tmp_path, tiny_model_dir, train=UNPACKED))
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: out of memory at step 1 after trying: micro_batch_size 4 -> 2")
    assert "micro_batch_size 2 -> 1" in message and "gradient checkpointing on" in message
    assert "loss_chunk_tokens 256 -> 64" in message and "lower lora.r" in message
    assert "max_length" not in message.split("Next:")[0]  # shortening the data was not allowed
    manifest = json.loads((tmp_path / "runs" / "tiny-v001" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and len(manifest["attempts"]) >= 5


def test_the_ladder_is_configurable(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(FAULTS, "oom-tokens:1")
    result = invoke("train", make_config(tmp_path, tiny_model_dir,
                                         train={**UNPACKED, "oom": {"ladder": ["checkpointing"]}}))
    assert result.exit_code == 1
    assert "after trying: gradient checkpointing on. Next:" in result.output


def test_allow_shorter_halves_max_length_last(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(FAULTS, "oom-tokens:1")
    result = invoke("train", make_config(tmp_path, tiny_model_dir, data={"max_length": 128},
                                         train={**UNPACKED, "oom": {"ladder": ["loss_chunk", "max_length"],
                                                                    "allow_shorter": True}}))
    assert "after trying: loss_chunk_tokens 256 -> 64; loss_chunk_tokens 64 -> 32; max_length 128 -> 64." \
        in result.output


def test_an_unknown_ladder_step_is_a_config_error(tmp_path, tiny_model_dir):
    result = invoke("train", make_config(tmp_path, tiny_model_dir, train={"oom": {"ladder": ["smaller_batch"]}}))
    assert result.exit_code == 2
    assert "train.oom.ladder" in result.output


@pytest.mark.parametrize(("error", "expected"), [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"), True),
    (MemoryError(), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_recognised_on_cpu_and_gpu(error, expected):
    assert is_out_of_memory(error) is expected


def test_the_users_overlay_is_the_first_step_down(tmp_path, tiny_model_dir, monkeypatch):
    _, _, expected = run(tmp_path, tiny_model_dir, "reference", micro_batch_size=1, grad_accum=4)
    (tmp_path / "outofmemory.yaml").write_text(
        "train:\n  micro_batch_size: 1\n  grad_accum: 4\n  gradient_checkpointing: true\n")
    monkeypatch.setenv(FAULTS, "oom-tokens:60")
    result, manifest, steps = run(tmp_path, tiny_model_dir, "overlaid", oom={"overlay": "outofmemory.yaml"})
    assert result.exit_code == 0, result.output
    change = manifest["attempts"][1]["change"]
    assert change.startswith("outofmemory.yaml: train.micro_batch_size 4 -> 1, train.grad_accum 1 -> 4")
    assert "gradient_checkpointing False -> True" in change
    assert len(manifest["attempts"]) == 2  # micro-batches of one example fit: no further step down
    for got, want in zip(steps, expected, strict=True):
        # re-cut micro-batches sum the same tokens in another order, and AdamW carries that rounding into
        # later steps' weights; 1e-4 of a loss of ~2-5 is well below any real difference (a lost example)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4), got["current_steps"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "config file not found"),
    ("train:\n  micro_batch_size: [\n", "invalid YAML"),
    ("lora:\n  r: 4\n", "lora.r cannot change during a run"),
    ("train:\n  micro_batch_size: 1\n", "micro_batch_size x grad_accum goes from 4 to 1"),
    ("train:\n  micro_batch_size: 0\n  grad_accum: 1\n", "train.micro_batch_size"),
])
def test_a_bad_overlay_fails_before_training(tmp_path, tiny_model_dir, content, message):
    if content is not None:
        (tmp_path / "outofmemory.yaml").write_text(content)
    result = invoke("train", make_config(tmp_path, tiny_model_dir,
                                         train={**UNPACKED, "oom": {"overlay": "outofmemory.yaml"}}))
    assert result.exit_code == 2
    assert message in result.output
    assert "training for" not in result.output
