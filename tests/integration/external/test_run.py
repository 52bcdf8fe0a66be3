"""lorakit run: external trainers (stand-ins shaped like sd-scripts and LLaMA-Factory, and one that really runs out
of CPU memory) as tracked runs, with their own config formats, provenance, OOM ladder, outputs and run commands."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorakit.cli.main import cli

STANDINS = Path(__file__).parent / "standins"


def lorakit(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def sd_scripts(tmp_path):
    """A git checkout holding the sd-scripts stand-in; its commit is what the manifest must record."""
    repo = tmp_path / "sd-scripts"
    repo.mkdir()
    (repo / "train_network.py").write_text((STANDINS / "train_network.py").read_text())
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=a@b.c", "-c", "user.name=a", "commit", "-q", "-m", "stand-in")
    return repo


@pytest.fixture
def project(tmp_path, sd_scripts):
    """A trainer file for sd-scripts with a dataset of three captioned images, sample prompts and overlays."""
    cats = tmp_path / "data" / "cats"
    cats.mkdir(parents=True)
    for i in range(3):
        (cats / f"{i}.png").write_bytes(bytes([i]) * (100 + i))
        (cats / f"{i}.txt").write_text(f"a photo of cat number {i}\n")
    (tmp_path / "sample-prompts.txt").write_text("a cat on a mat --n blurry\na cat in a hat\n")
    (tmp_path / "sdxl-lora.toml").write_text(
        'pretrained_model_name_or_path = "sd_xl_base_1.0.safetensors"\ntrain_data_dir = "{dataset}"\n'
        'output_dir = "{output_dir}"\noutput_name = "{output_name}"\nlogging_dir = "{output_dir}/logs"\n'
        'max_train_steps = 10\nsave_every_n_steps = 5\nnetwork_dim = 16\nnetwork_alpha = 8\n'
        f'sample_prompts = "{tmp_path}/sample-prompts.txt"\n')
    (tmp_path / "lowmem.toml").write_text("network_dim = 8\n")
    (tmp_path / "outofmemory.toml").write_text("lowmem = true\n")
    (tmp_path / "trainer.toml").write_text(
        'command = "{python} {sd_scripts}/train_network.py --config_file {config}"\nconfig = "sdxl-lora.toml"\n'
        'name = "{dataset}-{variant}-v{version}s{steps}"\nsteps_key = "max_train_steps"\n'
        'oom_overlays = ["outofmemory.toml"]\ncopy_files = ["sample-prompts.txt"]\n'
        f'[repos]\nsd_scripts = "{sd_scripts}"\n')
    return tmp_path


def manifest_of(run):
    return json.loads((run / "manifest.json").read_text())


def test_an_sd_scripts_run_is_tracked_named_and_described(project, sd_scripts, monkeypatch):
    monkeypatch.chdir(project)
    result = lorakit("-v", "run", "trainer.toml", "--dataset", "data/cats", "--add", "lowmem.toml")
    assert result.exit_code == 0, result.output
    run = project / "runs" / "cats-lowmem-v1s10"
    m = manifest_of(run)
    assert [s["status"] for s in m["status_history"]] == ["created", "running", "completed"]
    assert m["code"]["sd_scripts"]["commit"] == git(sd_scripts, "rev-parse", "HEAD") and not m["code"]["sd_scripts"][
        "dirty"]
    python = m["trainer_python"]  # asked of the trainer's own interpreter
    assert python["executable"] == sys.executable and python["packages"]["torch"] == m["versions"]["torch"]
    assert "lorakit" in m["versions"]
    # The config in its own format, the overlay merged, placeholders pointing into the run folder.
    rendered = (run / "config.toml").read_text()
    assert "network_dim = 8" in rendered and f'output_dir = "{run.resolve()}"' in rendered
    assert m["config"]["network_dim"] == 8 and len(m["config_sha256"]) == 64
    assert set(m["config_files"]) == {str(project / f) for f in ("sdxl-lora.toml", "outofmemory.toml", "lowmem.toml")}
    # The dataset: every file, images and captions.
    assert (m["dataset"]["files"], m["dataset"]["bytes"]) == (6, 303 + 3 * len("a photo of cat number 0\n"))
    assert len((run / "dataset_files.tsv").read_text().splitlines()) == 7
    assert m["copied_files"][str(project / "sample-prompts.txt")]["copy"] == "files/sample-prompts.txt"
    # What the trainer produced.
    assert m["models"] == ["cats-lowmem-v1s10-000005.safetensors", "cats-lowmem-v1s10.safetensors"]
    assert {o["path"] for o in m["outputs"]} >= {"cats-lowmem-v1s10.safetensors", "sample/"
                                                  "cats-lowmem-v1s10_000010_01_20261129120000_42.png"}
    meta = m["model_metadata"]["cats-lowmem-v1s10.safetensors"]
    assert meta["ss_network_dim"] == "8" and meta["modelspec.architecture"].endswith("/lora") and "other" not in meta
    curve = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]
    assert [c["current_steps"] for c in curve] == list(range(1, 11)) and curve[-1]["total_steps"] == 10
    assert m["metrics"]["train_steps"] == 10 and (run / "training_loss.png").is_file()
    assert m["samples"] == ["sample/cats-lowmem-v1s10_000010_00_20261129120000_42.png",
                            "sample/cats-lowmem-v1s10_000010_01_20261129120000_42.png"]
    card = (run / "README.md").read_text()
    assert "![cats-lowmem-v1s10_000010_00_20261129120000_42.png](sample/" in card and "ss_network_dim=8" in card
    assert "DEBUG=1" in (run / "trainer.log").read_text()  # lorakit -v reaches the trainer
    again = lorakit("run", "trainer.toml", "--dataset", "data/cats", "--add", "lowmem.toml")
    assert again.exit_code == 0 and (project / "runs" / "cats-lowmem-v2s10").is_dir()


def test_out_of_memory_steps_down_the_overlays_and_records_why(project, monkeypatch):
    monkeypatch.chdir(project)
    for kind, marker in (("cuda_oom", "CUDA out of memory"), ("sigkill", "killed by SIGKILL")):
        result = lorakit("run", "trainer.toml", "--dataset", "data/cats", "--set", f"standin_fail={kind}",
                         "--name", kind)
        assert result.exit_code == 0, result.output
        m = manifest_of(project / "runs" / f"{kind}-v001")
        assert [(a["change"], a["returncode"]) for a in m["attempts"]] == [
            ("as configured", 1 if kind == "cuda_oom" else -9), ("out-of-memory overlay outofmemory.toml", 0)]
        assert marker in m["attempts"][0]["error"] and m["config"]["lowmem"] is True
    # No rung left: the reason is the exception line, not the progress bar drawn after it.
    (project / "trainer.toml").write_text((project / "trainer.toml").read_text().replace(
        'oom_overlays = ["outofmemory.toml"]', "oom_overlays = []"))
    failed = lorakit("run", "trainer.toml", "--dataset", "data/cats", "--set", "standin_fail=cuda_oom",
                     "--name", "stuck", env={"LORAKIT_NO_CLEAN": "1"})  # keep the failed run to look at
    assert failed.exit_code == 1 and "out of memory after 1 attempt(s)" in failed.output
    m = manifest_of(project / "runs" / "stuck-v001")
    assert m["status"] == "failed" and m["status_history"][-1]["reason"].startswith(
        "out of memory after 1 attempt(s): torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")


def test_a_real_cpu_out_of_memory_is_recognised_and_retried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.toml").write_text('batch_size = 2048\noutput_dir = "{output_dir}"\n')  # 8 GiB under a 1 GiB cap
    (tmp_path / "small.toml").write_text("batch_size = 16\n")
    (tmp_path / "t.yaml").write_text(f"command: '{{python}} {STANDINS}/cpu_oom.py {{config}}'\nconfig: big.toml\n"
                                     "oom_overlays: [small.toml]\n")
    result = lorakit("run", "t.yaml", "--name", "real")
    assert result.exit_code == 0, result.output
    attempts = manifest_of(tmp_path / "runs" / "real-v001")["attempts"]
    assert attempts[0]["error"] == "out of memory (DefaultCPUAllocator: can't allocate memory)"
    assert attempts[1]["returncode"] == 0


def test_llamafactory_style_yaml_and_json_configs_keep_their_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for suffix, text in ((".yaml", "lora_target: all\nmax_steps: 4\nresume_from_checkpoint: null\n"
                                   "output_dir: '{output_dir}'\n"),
                         (".json", '{"lora_target": "all", "max_steps": 4, "resume_from_checkpoint": null, '
                                   '"output_dir": "{output_dir}"}')):
        (tmp_path / f"sft{suffix}").write_text(text)
        (tmp_path / f"lf{suffix}.yaml").write_text(
            f"command: '{{python}} {STANDINS}/llamafactory_cli.py train {{config}}'\nconfig: sft{suffix}\n"
            "steps_key: max_steps\nname: 'sft-s{steps}'\n")
        result = lorakit("run", f"lf{suffix}.yaml", "--set", "learning_rate=0.0002")
        assert result.exit_code == 0, result.output
    yaml_run, json_run = tmp_path / "runs" / "sft-s4-v001", tmp_path / "runs" / "sft-s4-v002"
    assert "resume_from_checkpoint: null" in (yaml_run / "config.yaml").read_text()  # YAML keeps its null
    assert json.loads((json_run / "config.json").read_text())["resume_from_checkpoint"] is None
    for run in (yaml_run, json_run):
        m = manifest_of(run)
        assert m["status"] == "completed" and m["config"]["learning_rate"] == 0.0002
        assert m["metrics"]["train_loss"] == pytest.approx(1.75) and m["card"] == "CARD.md"  # the trainer's own
        assert m["metrics"]["train_loss_last"] == pytest.approx(1.6)  # the curve's last step
        assert m["metrics"]["eval_loss"] == 1.55 and "note" not in m["metrics"]  # the numbers of all_results.json
        assert (run / "README.md").read_text().startswith("---\nlibrary_name: peft")  # the trainer's card, kept
        assert "sft-s4" in (run / "CARD.md").read_text()


def test_a_toml_template_leaves_out_a_null(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("output_dir: '{output_dir}'\nresume: null\nnested: {keep: 1, drop: null}\n")
    (tmp_path / "t.toml").write_text('command = "{python} -c \\"print(1)\\""\nconfig = "base.yaml"\n')
    plan = lorakit("run", "t.toml", "--dry-run")
    assert plan.exit_code == 0 and "resume: null" in plan.output  # YAML in, YAML out
    (tmp_path / "base.toml").write_text('output_dir = "{output_dir}"\n')
    (tmp_path / "t.toml").write_text('command = "{python} -c \\"print(1)\\""\nconfig = "base.toml"\n')
    plan = lorakit("run", "t.toml", "--dry-run", "--set", "resume=null", "--set", "keep=1")
    assert plan.exit_code == 0, plan.output
    assert "keep = 1" in plan.output and "resume" not in plan.output


def test_a_command_line_as_it_stands_and_a_failure_with_its_exit_code(tmp_path, sd_scripts, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("a cat\n")
    script = tmp_path / "train.py"
    script.write_text("import pathlib, sys\npathlib.Path(sys.argv[1], 'lora.safetensors').write_bytes(b'w')\n"
                      "print('{not a placeholder}')\n")
    result = lorakit("run", "--name", "quick", "--repo", f"sd={sd_scripts}", "--copy", "prompts.txt", "--",
                     sys.executable, "train.py", "{output_dir}")
    assert result.exit_code == 0, result.output
    m = manifest_of(tmp_path / "runs" / "quick-v001")
    assert m["command"][1:] == ["train.py", str((tmp_path / "runs" / "quick-v001").resolve())]
    assert m["code"]["sd"]["commit"] == git(sd_scripts, "rev-parse", "HEAD") and m["status"] == "completed"
    assert "{not a placeholder}" in (tmp_path / "runs" / "quick-v001" / "trainer.log").read_text()

    script.write_text("import sys\nprint('loading 3 images')\nsys.exit(3)\n")
    failed = lorakit("run", "--name", "broken", "--", sys.executable, "train.py")
    assert failed.exit_code == 3  # the trainer's own
    assert "python" in failed.output and "exited with 3: loading 3 images" in failed.output
    assert not (tmp_path / "runs" / "broken-v001").exists()  # it wrote nothing: the folder went
    kept = lorakit("run", "--name", "broken", "--", sys.executable, "train.py", env={"LORAKIT_NO_CLEAN": "1"})
    assert kept.exit_code == 3 and manifest_of(tmp_path / "runs" / "broken-v001")["status"] == "failed"


def test_ctrl_c_reaches_the_trainers_whole_process_group(project, monkeypatch):
    (project / "wait.toml").write_text((project / "trainer.toml").read_text() + "")
    proc = subprocess.Popen([sys.executable, "-m", "lorakit", "run", "trainer.toml", "--dataset", "data/cats",
                             "--set", "standin_fail=wait", "--name", "waiting"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = project / "runs" / "waiting-v001"
    deadline = time.monotonic() + 60
    while not (run / "launcher-ready").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-2000:]
        time.sleep(0.1)  # polling a subprocess (ready once its worker's handler is in place)
    os.kill(proc.pid, signal.SIGINT)  # lorakit alone, as a terminal's Ctrl+C would reach it
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output[-2000:]
    assert (run / "worker-got").read_text() == "SIGINT"  # the launcher's worker got it too
    m = manifest_of(run)
    assert m["status"] == "interrupted" and m["status_history"][-1]["reason"] == "Ctrl+C"
    assert "Traceback" not in output


def test_run_commands_work_on_external_runs_and_clean_keeps_what_they_made(project, monkeypatch):
    monkeypatch.chdir(project)
    assert lorakit("run", "trainer.toml", "--dataset", "data/cats", "--name", "one").exit_code == 0
    assert lorakit("run", "trainer.toml", "--dataset", "data/cats", "--name", "two", "--set",
                   "network_dim=4").exit_code == 0
    # A failed run that left an intermediate LoRA and samples, and one that left nothing.
    for name, files in (("crashed-v001", ["crashed-000002.safetensors", "sample/crashed_000002_00_x_1.png"]),
                        ("empty-v001", [])):
        folder = project / "outputs" / "cats" / name
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"name": name, "status": "failed", "trainer": "command",
                                                          "status_history": [{"status": "failed", "at": "x"}],
                                                          "config": {"output_name": "crashed"}}))
        for f in files:
            (folder / f).parent.mkdir(exist_ok=True)
            (folder / f).write_bytes(b"data")
    listed = lorakit("runs", "list", "--dir", "outputs", "--json")
    assert listed.exit_code == 0, listed.output
    assert {r["name"] for r in json.loads(listed.output)} == {"crashed-v001", "empty-v001"}
    both = json.loads(lorakit("runs", "list", "--json").output)
    assert {r["name"]: r["base_model"] for r in both} == {"one-v001": "sd_xl_base_1.0.safetensors",
                                                          "two-v001": "sd_xl_base_1.0.safetensors"}
    diff = lorakit("runs", "diff", "one-v001", "two-v001")
    assert diff.exit_code == 0 and "network_dim" in diff.output
    assert lorakit("runs", "lineage", "one-v001").exit_code == 0
    assert lorakit("runs", "show", "one-v001").exit_code == 0
    note = lorakit("runs", "note", "one-v001", "sharper than two")
    assert note.exit_code == 0 and "sharper than two" in (project / "runs" / "one-v001" / "README.md").read_text()
    clean = lorakit("runs", "clean", "--dir", "outputs", "--dry-run")
    assert clean.exit_code == 0
    assert "crashed-v001" in clean.output and "holds a model file" in clean.output
    assert "would remove" in next(line for line in clean.output.splitlines() if "empty-v001" in line)


def test_a_dataset_name_never_reaches_a_shell_and_names_the_run_cleaned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weird = tmp_path / "x\"';touch PWNED;#"
    weird.mkdir()
    (weird / "1.png").write_bytes(b"png")
    (tmp_path / "train.py").write_text(
        "import os, pathlib, sys\nout = pathlib.Path(sys.argv[2])\n"
        "(out / 'seen.txt').write_text(sys.argv[1] + '\\n' + os.environ['LORAKIT_DATASET'])\n"
        "(out / 'lora.safetensors').write_bytes(b'w')\n")
    (tmp_path / "shell.toml").write_text(
        'command = "bash -c \\"cd {dataset} && python3 train.py {output_dir}\\""\nname = "{dataset}"\n')
    refused = lorakit("run", "shell.toml", "--dataset", str(weird))
    assert refused.exit_code in (1, 2) and len(refused.output.strip().splitlines()) == 1
    assert "{dataset} is inside a script" in refused.output and '"$LORAKIT_DATASET"' in refused.output
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "runs").exists()

    # The fix the message gives: the value from the environment, or as an argument of its own ($1).
    script = 'cd "$LORAKIT_DATASET" && python3 ../train.py "$1" "$LORAKIT_OUTPUT_DIR"'
    (tmp_path / "env.toml").write_text(f"command = '''bash -c '{script}' _ {{dataset}}'''\nname = \"{{dataset}}\"\n")
    plain = lorakit("run", "env.toml", "--dataset", str(weird))
    assert plain.exit_code == 0, plain.output
    assert not (tmp_path / "PWNED").exists()
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name == "x___touch_PWNED__-v001"  # letters, digits, . _ - kept; the rest _
    assert (run / "seen.txt").read_text() == f"{weird}\n{weird}"  # one argument, and the variable: the same
    assert manifest_of(run)["dataset"]["name"] == weird.name  # the original name, recorded


def test_a_trainer_config_with_a_secret_is_kept_redacted_and_the_trainer_reads_the_whole_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    token = "hf_Trainer-Token-8"
    (tmp_path / "sft.yaml").write_text(f"output_dir: '{{output_dir}}'\nhf_hub_token: {token}\n"
                                       "report_to: https://ops:Url-Pw-9@mlflow.example/\n")
    (tmp_path / "train.py").write_text(
        "import pathlib, sys, yaml\nconfig = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())\n"
        "out = pathlib.Path(config['output_dir'])\n"
        f"(out / 'got.txt').write_text(str(config['hf_hub_token'] == {token!r}))\n"
        "(out / 'lora.safetensors').write_bytes(b'w')\nprint('hf_hub_token:', config['hf_hub_token'])\n")
    (tmp_path / "trainer.yaml").write_text('command: "{python} train.py {config}"\nconfig: sft.yaml\nname: sft\n')
    result = lorakit("run", "trainer.yaml")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "sft-v001"
    assert (run / "got.txt").read_text() == "True"  # the trainer had its token
    kept = (run / "config.yaml").read_text()
    assert "hf_hub_token: <redacted>" in kept and "https://<redacted>@mlflow.example/" in kept
    assert "hf_hub_token: <redacted>" in (run / "trainer.log").read_text()  # what it printed, redacted too
    leaks = [p for p in run.rglob("*") if p.is_file() and (token.encode() in p.read_bytes()
                                                            or b"Url-Pw-9" in p.read_bytes())]
    assert leaks == [] and token not in result.output
