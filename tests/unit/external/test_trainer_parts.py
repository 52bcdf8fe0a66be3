"""The parts of an external run that need no trainer: rendering, OOM signs, failure lines, names, interpreters."""

import json
import sys

import pytest
import yaml

from lorakit.errors import ConfigError, LaunchError
from lorakit.external.facts import find_python
from lorakit.external.oom import out_of_memory
from lorakit.external.render import dump_config, render_command, render_config, resolve_program
from lorakit.external.trainer import load_trainer_file
from lorakit.proc import Finished
from lorakit.queue.workspace import load_workspace
from lorakit.runs.fingerprint import fingerprint_dataset
from lorakit.runs.naming import allocate_pattern_dir

CONFIG = {"output_dir": "/runs/x", "resume": None, "net": {"dim": 8, "drop": None}, "tags": ["a", None]}


@pytest.mark.parametrize(("fmt", "load"), [("toml", None), ("yaml", yaml.safe_load), ("json", json.loads)])
def test_each_format_writes_a_null_as_it_can(fmt, load):
    text = dump_config(CONFIG, fmt)
    if fmt == "toml":  # TOML has no null: the key is left out, which its readers take as unset
        import tomllib

        assert tomllib.loads(text) == {"output_dir": "/runs/x", "net": {"dim": 8}, "tags": ["a"]}
    else:
        assert load(text) == CONFIG


def test_overlays_and_sets_merge_in_order_and_placeholders_fill_every_string(tmp_path):
    (tmp_path / "base.toml").write_text('out = "{output_dir}/{output_name}"\n[net]\ndim = 16\nalpha = 8\n')
    (tmp_path / "low.yaml").write_text("net: {dim: 8}\n")
    config = render_config(tmp_path / "base.toml", [tmp_path / "low.yaml"], ["net.alpha=4", "new.key=[1, 2]"],
                           {"output_dir": "/r", "output_name": "cats"})
    assert config == {"out": "/r/cats", "net": {"dim": 8, "alpha": 4}, "new": {"key": [1, 2]}}


def test_an_out_of_memory_rung_goes_on_top_of_set_values(tmp_path):
    from lorakit.external.run import TrainerJob, plan_run
    from lorakit.external.trainer import TrainerSection

    (tmp_path / "base.toml").write_text("train_batch_size = 4\ngradient_accumulation_steps = 1\n")
    (tmp_path / "oom.toml").write_text("train_batch_size = 2\ngradient_accumulation_steps = 4\n")
    trainer = TrainerSection(kind="command", command="true {config}", config=str(tmp_path / "base.toml"),
                             oom_overlays=[str(tmp_path / "oom.toml")], cwd=str(tmp_path))
    job = TrainerJob(trainer, tmp_path / "runs", overrides=("train_batch_size=8",))
    (_, first), (_, rungs) = plan_run(job).attempts
    assert render_config(tmp_path / "base.toml", [], job.overrides, {}, first)["train_batch_size"] == 8
    stepped = render_config(tmp_path / "base.toml", [], job.overrides, {}, rungs)
    # The rung as written (2 x 4), not the --set batch with the rung's accumulation (8 x 4: no memory saved).
    assert (stepped["train_batch_size"], stepped["gradient_accumulation_steps"]) == (2, 4)


def test_a_command_template_fills_each_value_as_one_argument():
    values = {"config": "/runs/my cats/config.toml", "python": "/usr/bin/python3"}
    assert render_command("{python} train.py --config_file {config}", values) == [
        "/usr/bin/python3", "train.py", "--config_file", "/runs/my cats/config.toml"]
    with pytest.raises(ConfigError, match=r"unknown placeholder \{confg\}"):
        render_command("{python} train.py {confg}", values)
    # As it stands (lorakit run -- ...): other braces stay as typed.
    assert render_command("python -c 'print({1: 2})' {config}", values, strict=False)[-1] == values["config"]
    # Quoted in the template or not, a value is one argument, quotes and all (no shell ever parses it).
    assert render_command('{python} t.py --out "{config}"', {**values, "config": "a 'b\" c"}) == [
        "/usr/bin/python3", "t.py", "--out", "a 'b\" c"]


@pytest.mark.parametrize("template", ['bash -c "cd {config} && python t.py"', "sh -ec 'train {config}'",
                                      "python3 -c 'print(\"{config}\")'", "ssh gpu-box train {config}",
                                      "env X=1 bash --login -c 'train {config}'"])
def test_a_placeholder_inside_code_is_refused_with_the_fix(template):
    with pytest.raises(ConfigError, match=r"\{config\} is inside a script .* write \"\$LORAKIT_CONFIG\" there"):
        render_command(template, {"config": "/c", "python": "py"})
    # Given as an argument of its own after the script, it is data again.
    assert render_command("sh -c 'train \"$1\"' sh {config}", {"config": "/c;x"})[-1] == "/c;x"


def test_a_relative_program_is_found_in_the_trainers_folder(tmp_path):
    script = tmp_path / "scripts" / "train.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    with pytest.raises(LaunchError, match="not executable"):
        resolve_program(["scripts/train.sh"], tmp_path)
    script.chmod(0o755)
    assert resolve_program(["scripts/train.sh", "-x"], tmp_path) == [str(script), "-x"]
    with pytest.raises(LaunchError, match="'no-such-trainer' is not on PATH"):
        resolve_program(["no-such-trainer"], tmp_path)


@pytest.mark.parametrize(("code", "line", "sign"), [
    (1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "CUDA out of memory"),
    (1, "RuntimeError: [enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you "
        "tried to allocate 34359738368 bytes. Error code 12 (Cannot allocate memory)",
     "DefaultCPUAllocator: can't allocate memory"),
    (1, "RuntimeError: HIP out of memory. Tried to allocate 20.00 MiB", "HIP out of memory"),
    (1, "RuntimeError: MPS backend out of memory (MPS allocated: 17.00 GB)", "MPS backend out of memory"),
    (-9, "steps:  10%|#         | 1/10", "killed by SIGKILL"),
    (137, "Killed", "killed by SIGKILL"),
    (1, "ValueError: no images", None),
    (0, "CUDA out of memory (recovered)", None),
])
def test_out_of_memory_is_recognised_from_the_output_or_the_kill(code, line, sign):
    found = out_of_memory(Finished(code, ["loading", line]))
    assert (found is None) == (sign is None) and (sign is None or sign in found)
    assert out_of_memory(Finished(1, ["NCCL error: unhandled system error"]), ["unhandled system error"])


def test_the_failure_line_is_the_exception_never_a_progress_bar():
    tail = ["Traceback (most recent call last):", '  File "x.py", line 3, in <module>',
            "torch.OutOfMemoryError: CUDA out of memory.", "steps:  10%|#         | 1/10 [00:01<00:09,  1.00it/s]"]
    assert Finished(1, tail).error_line() == "torch.OutOfMemoryError: CUDA out of memory."
    assert Finished(2, ["epoch 1", "error: data/x.jsonl:3: malformed JSON"]).error_line() == \
        "data/x.jsonl:3: malformed JSON"
    assert Finished(3, ["loading 3 images", " 50%|#####     | 1/2"]).error_line() == "loading 3 images"


def test_a_name_with_a_version_inside_takes_the_next_free_number(tmp_path):
    for existing in ("cats-lowmem-v1s1600", "cats-lowmem-v7s800", "cats-v2s1600", "cats-lowmem-v3s1600-old"):
        (tmp_path / existing).mkdir()
    assert allocate_pattern_dir(tmp_path, "cats-lowmem-v{version}s1600").name == "cats-lowmem-v2s1600"
    assert allocate_pattern_dir(tmp_path, "cats-lowmem-v{version}s1600").name == "cats-lowmem-v3s1600"


def test_the_trainers_interpreter_is_found_from_its_command(tmp_path):
    cli = tmp_path / "llamafactory-cli"
    cli.write_text("#!/opt/lf/bin/python3.11\nimport sys\n")
    env_cli = tmp_path / "accelerate"
    env_cli.write_text("#!/usr/bin/env python3\n")
    assert find_python([str(cli), "train"], None) == "/opt/lf/bin/python3.11"
    assert find_python([str(env_cli)], None).endswith("python3")
    assert find_python([sys.executable, "x.py"], None) == sys.executable
    assert find_python(["/bin/sh", "x.sh"], None) is None
    assert find_python(["/bin/sh"], "/opt/lf/bin/python") == "/opt/lf/bin/python"


def test_a_dataset_fingerprint_covers_every_file(tmp_path):
    data = tmp_path / "cats"
    (data / "sub").mkdir(parents=True)
    (data / "1.png").write_bytes(b"\x89PNG1")
    (data / "1.txt").write_text("a cat")
    (data / "sub" / "2.png").write_bytes(b"\x89PNG22")
    first = fingerprint_dataset(data, tmp_path / "list.tsv")
    assert (first["files"], first["bytes"]) == (3, 5 + 5 + 6)
    rows = [line.split("\t") for line in (tmp_path / "list.tsv").read_text().splitlines()[1:]]
    assert [(name, int(size)) for name, size, _ in rows] == [("1.png", 5), ("1.txt", 5), ("sub/2.png", 6)]
    (data / "1.txt").write_text("a dog")  # a caption changed: the fingerprint changes
    assert fingerprint_dataset(data, tmp_path / "list.tsv")["sha256"] != first["sha256"]


def test_a_workspace_can_name_a_trainer_file(tmp_path):
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "trainer.toml").write_text('command = "{python} train.py {config}"\nconfig = "base.toml"\n')
    (tmp_path / "ws.toml").write_text('work_dir = "work"\ntrainer = "sd/trainer.toml"\n')
    ws = load_workspace(tmp_path / "ws.toml")
    assert ws.trainer.kind == "command" and ws.trainer.config == str(tmp_path / "sd" / "base.toml")
    assert ws.trainer.cwd == str(tmp_path / "sd")  # its command runs where the trainer file is
    assert load_trainer_file(tmp_path / "sd" / "trainer.toml") == ws.trainer
