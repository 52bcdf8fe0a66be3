"""trainer.kind = command: an external trainer (sd-scripts style) run per dataset, with OOM retry."""

import json
import subprocess

from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.integration.queue.conftest import command_workspace, remote_section

TRAIN_SCRIPT = '''
import argparse, pathlib, sys, tomllib
parser = argparse.ArgumentParser()
parser.add_argument("--config_file")
config = tomllib.loads(pathlib.Path(parser.parse_args().config_file).read_text())
general = config["general"]
images = sorted(pathlib.Path(general["train_data_dir"]).glob("*.png"))
if config.get("network_dim", 0) > 8 and not config.get("lowmem"):
    print("steps:   0%|          | 0/10")
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
out = pathlib.Path(general["output_dir"]) / (general["output_name"] + ".safetensors")
out.write_bytes(b"weights for %d images" % len(images))
print(f"saved {out.name} from {len(images)} images")
'''


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def queue_with_trainer(tmp_path, server, script):
    """``lorakit queue`` over two image datasets, a and b, with ``script`` as the trainer."""
    (tmp_path / "trainer.py").write_text(script)
    (tmp_path / "t.toml").write_text('[general]\noutput_name = "{output_name}"\n')
    for name in ("a", "b"):
        (server.root / "training" / name).mkdir(parents=True)
        (server.root / "training" / name / "x.png").write_bytes(b"png")
    ws = command_workspace(tmp_path, server, f"{{python}} {tmp_path}/trainer.py", trainer_config="t.toml")
    return CliRunner().invoke(cli, ["queue", str(ws)])


def test_an_external_trainer_runs_per_dataset_and_retries_out_of_memory(tmp_path, server):
    scripts = tmp_path / "sd-scripts"
    scripts.mkdir()
    (scripts / "train_network.py").write_text(TRAIN_SCRIPT)
    git(scripts, "init", "-q")
    git(scripts, "add", ".")
    git(scripts, "-c", "user.email=a@b.c", "-c", "user.name=a", "commit", "-q", "-m", "trainer")
    commit = subprocess.run(["git", "-C", str(scripts), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    for name, images in [("my cats", 3), ("dogs", 2)]:
        folder = server.root / "training" / name
        folder.mkdir(parents=True)
        for i in range(images):
            (folder / f"{i}.png").write_bytes(b"png")
    (tmp_path / "rclone.conf").write_text(remote_section("srv", server.port))
    (tmp_path / "sdxl.toml").write_text('network_dim = 4\n[general]\ntrain_data_dir = "{dataset}"\n'
                                        'output_dir = "{output_dir}"\noutput_name = "{output_name}"\n')
    (tmp_path / "big.toml").write_text("network_dim = 32\n")
    (tmp_path / "lowmem.toml").write_text("lowmem = true\n")
    ws = tmp_path / "workspace.toml"
    ws.write_text('work_dir = "work"\noutput_dir = "outputs"\nsuffix = "v1"\n'
                  '[remote]\ntraining = "srv:training"\noutput = "srv:output"\nconfig = "rclone.conf"\n'
                  '[trainer]\nkind = "command"\ncommand = "{python} {sd_scripts}/train_network.py --config_file '
                  '{config}"\nconfig = "sdxl.toml"\noom_overlay = "lowmem.toml"\n'
                  '[trainer.repos]\nsd_scripts = "sd-scripts"\n')

    plain = CliRunner().invoke(cli, ["queue", str(ws), "--only", "my cats"])
    assert plain.exit_code == 0, plain.output
    out = server.root / "output" / "my_cats-v1"  # a name from outside: letters, digits, . _ - kept
    assert (out / "my_cats-v1.safetensors").read_bytes() == b"weights for 3 images"
    assert "saved my_cats-v1.safetensors from 3 images" in (out / "trainer.log").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["code"]["sd_scripts"]["commit"] == commit and manifest["status"] == "completed"
    assert manifest["config"]["general"]["train_data_dir"].endswith("work/my_cats")
    assert manifest["dataset"]["name"] == "my cats" and manifest["dataset"]["files"] == 3  # as found, by content
    assert [a["change"] for a in manifest["attempts"]] == ["as configured"]

    big = CliRunner().invoke(cli, ["queue", str(ws), "--only", "dogs", "--add", str(tmp_path / "big.toml")])
    assert big.exit_code == 0, big.output
    out = server.root / "output" / "dogs-v1-big"
    assert (out / "dogs-v1-big.safetensors").read_bytes() == b"weights for 2 images"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(a["change"], a.get("error")) for a in manifest["attempts"]] == [
        ("as configured", "out of memory (CUDA out of memory)"), ("out-of-memory overlay lowmem.toml", None)]
    assert "CUDA out of memory" in (out / "trainer.log").read_text()
    assert not (server.root / "training" / "dogs").exists()  # cleaned after the verified upload


def test_an_external_trainer_that_keeps_running_out_of_memory_fails_the_job_and_the_queue_goes_on(tmp_path, server):
    result = queue_with_trainer(tmp_path, server, "import sys\nprint('CUDA out of memory', file=sys.stderr)\n"
                                                  "sys.exit(1)\n")
    assert result.exit_code == 1
    state = json.loads((tmp_path / "work" / ".lorakit-queue.json").read_text())["jobs"]
    assert [state[n]["state"] for n in ("a", "b")] == ["failed", "failed"]  # the queue went on to b
    assert state["a"]["error"].startswith("out of memory after 1 attempt(s)")
    assert state["a"]["failed_in"] == "training"
    assert (server.root / "training" / "a" / "x.png").is_file()  # nothing deleted for a failed job


def test_an_external_trainer_that_finds_its_disk_full_stops_the_queue_and_keeps_the_job(tmp_path, server):
    # the words of Python's OSError and of Rust's io::Error (safetensors, tokenizers) when a write finds no room
    result = queue_with_trainer(tmp_path, server, "import sys\nprint('saving checkpoint')\n"
                                "print('OSError: [Errno 28] No space left on device', file=sys.stderr)\n"
                                "print('wandb: finished', file=sys.stderr)\nsys.exit(1)\n")
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("queue stopped: a: python exited with 1: a disk it writes to is full: "
                           "OSError: [Errno 28] No space left on device; free space there"), last
    state = json.loads((tmp_path / "work" / ".lorakit-queue.json").read_text())["jobs"]
    assert state["a"]["state"] == "training"  # not failed: the next queue run trains it again
    assert "b" not in state or state["b"]["state"] != "failed"  # b was not tried on the same full disk
    run = next((tmp_path / "outputs" / "a").glob("a-*"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["status"], manifest["status_history"][-1]["kind"]) == ("failed", "disk-full")
    assert (server.root / "training" / "a" / "x.png").is_file()
