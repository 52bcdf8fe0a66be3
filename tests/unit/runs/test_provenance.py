"""What the manifest records about code, environment and machine."""

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from lorakit.redaction import REDACTED
from lorakit.runs.provenance import environment, git_state, hardware, package_versions
from tests.unit.cli.test_train import invoke, make_config


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "external"
    path.mkdir()
    git(path, "init", "-q")
    git(path, "-c", "user.email=a@b.c", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "first")
    (path / "train.py").write_text("print('v1')\n")
    git(path, "add", "train.py")
    git(path, "-c", "user.email=a@b.c", "-c", "user.name=a", "commit", "-q", "-m", "second")
    return path


def test_secrets_are_redacted_and_unrelated_variables_left_out():
    env = {"HF_TOKEN": "hf_abc", "HF_HOME": "/data/hf", "CUDA_VISIBLE_DEVICES": "0,1", "HOME": "/root",
           "RCLONE_CONFIG": "/secret/rclone.conf", "RCLONE_CONFIG_MYS3_SECRET_ACCESS_KEY": "xyz",
           "MLFLOW_TRACKING_PASSWORD": "pw", "LORAKIT_CACHE": "/cache", "AWS_SECRET_ACCESS_KEY": "aws",
           "WANDB_API_KEY": "k", "RCLONE_TRANSFERS": "8"}
    recorded = environment(env)
    assert recorded == {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/data/hf", "HF_TOKEN": REDACTED,
                        "LORAKIT_CACHE": "/cache", "MLFLOW_TRACKING_PASSWORD": REDACTED,
                        "RCLONE_CONFIG": REDACTED, "RCLONE_CONFIG_MYS3_SECRET_ACCESS_KEY": REDACTED,
                        "RCLONE_TRANSFERS": "8"}
    assert not any(secret in json.dumps(recorded) for secret in ("hf_abc", "xyz", "pw", "aws", "rclone.conf"))


def test_git_state_sees_commits_and_uncommitted_changes(repo, tmp_path):
    clean = git_state(repo)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert clean["commit"] == head and clean["dirty"] is False
    (repo / "train.py").write_text("print('v2')\n")
    dirty = git_state(repo)
    assert dirty["commit"] == head and dirty["dirty"] is True and dirty["changed_files"] == 1
    (tmp_path / "plain").mkdir()
    assert "not a git repository" in git_state(tmp_path / "plain")["error"]
    assert git_state(tmp_path / "nowhere")["error"] == "no such folder"


def test_hardware_and_versions():
    info = hardware()
    assert info["cpu"] and info["cpu_count"] >= 1 and info["ram_gib"] > 0
    assert {"python", "lorakit", "torch", "transformers", "peft", "accelerate"} <= set(package_versions())


def test_a_run_records_named_repos_and_copies_tracked_files(tmp_path, tiny_model_dir, repo):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    (repo / "train.py").write_text("print('edited')\n")  # dirty
    (tmp_path / "oom.yaml").write_text("train: {gradient_checkpointing: true}\n")
    (tmp_path / "small.yaml").write_text("lora: {r: 4}\n")
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 1, "oom": {"overlay": "oom.yaml"}},
                         tracking={"repos": {"sd-scripts": "external"}, "copy_files": ["prompts.txt"]})
    result = invoke("train", config, "--add", tmp_path / "small.yaml", "--set", "train.lr=0.001")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny-small-v001"
    manifest = json.loads((run / "manifest.json").read_text())
    hashed = {Path(f).name: digest for f, digest in manifest["config_files"].items()}
    for name in ("config.yaml", "small.yaml", "oom.yaml"):  # the config, the overlay, the OOM overlay
        assert hashed[name] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert manifest["overrides"] == ["train.lr=0.001"] and "--set" in manifest["command_line"]
    assert manifest["code"]["sd-scripts"]["dirty"] is True
    assert manifest["code"]["sd-scripts"]["path"] == "external"  # relative to the config file
    assert {"lorakit", "workdir"} <= set(manifest["code"])
    copied = manifest["copied_files"]["prompts.txt"]
    assert (run / copied["copy"]).read_text() == "a cat\n"
    assert copied["sha256"] == hashlib.sha256(b"a cat\n").hexdigest()
    assert "environment" in manifest and "cpu" in manifest["hardware"]


def test_a_missing_tracked_file_fails_before_the_run_folder_exists(tmp_path, tiny_model_dir):
    result = invoke("train", make_config(tmp_path, tiny_model_dir, tracking={"copy_files": ["gone.txt"]}))
    assert result.exit_code == 2
    assert "tracking.copy_files: file not found: gone.txt" in result.output
    assert not (tmp_path / "runs").exists()
