"""What the queue trusts: only what lorakit made. A result belongs to its data by content; checks that gate a deletion
cannot be switched off by flags; a dataset folder's own config and paths stay inside it; names from outside never
reach a shell; an unreadable state file costs nothing. Against a real rclone WebDAV server (no hashes) and a local
remote (hashes)."""

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorakit import faults
from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.integration.queue.conftest import command_workspace, wait_until_served


def queue(*args, env=None):
    return CliRunner().invoke(cli, ["queue", *[str(a) for a in args]], env=env)


def state(tmp_path):
    return json.loads((tmp_path / "work" / ".lorakit-queue.json").read_text())["jobs"]


def content_of(files: dict[str, bytes]) -> str:
    """A dataset's identity as the manifest records it, computed here independently: sha256 over one
    'path<TAB>size<TAB>sha256' line per file, by path."""
    lines = "".join(f"{name}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n"
                    for name, data in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def rows(seed: int) -> bytes:
    """The test rows rotated by ``seed`` (they repeat every 4: seeds 0 and 4 give the same bytes)."""
    return "".join(json.dumps(r) + "\n" for r in ALPACA_ROWS[seed:] + ALPACA_ROWS[:seed]).encode()


def results(server) -> dict[str, dict]:
    out = server.root / "output"
    if not out.is_dir():
        return {}
    return {p.name: json.loads((p / "manifest.json").read_text()) for p in sorted(out.iterdir())}


# -- a result belongs to its data by content ---------------------------------------------------------------------

def test_new_files_under_a_trained_name_train_as_a_new_result_and_are_never_deleted_untrained(tmp_path, server,
                                                                                            workspace):
    workspace.write_text(workspace.read_text() + "[cleanup]\nlocal_output = false\n")
    first = queue(workspace, "--only", "alpha")
    assert first.exit_code == 0, first.output
    assert state(tmp_path)["alpha"]["state"] == "cleaned" and not (server.root / "training" / "alpha").exists()
    first_result = results(server)["alpha-v1"]

    # New files under the same name: a new content, never the old run's, and never deleted untrained.
    (server.root / "training" / "alpha").mkdir()
    (server.root / "training" / "alpha" / "more.jsonl").write_bytes(rows(5))
    wait_until_served(server, tmp_path / "rclone.conf", "training/alpha/more.jsonl")
    second = queue(workspace, "--only", "alpha")
    assert second.exit_code == 0, second.output
    assert "remove it from" not in second.output  # no advice to edit the state file
    found = results(server)
    assert found["alpha-v1"] == first_result  # the first result untouched
    assert found["alpha-v1-2"]["dataset"]["sha256"] == content_of({"more.jsonl": rows(5)})
    assert found["alpha-v1-2"]["dataset"]["name"] == "alpha"
    assert not (server.root / "training" / "alpha").exists()  # deleted only once its own result was verified
    assert state(tmp_path)["alpha-2"]["state"] == "cleaned"

    # The state file lost: the runs still in outputs/ were trained on other files; they are not this data's result.
    (tmp_path / "work" / ".lorakit-queue.json").unlink()
    (server.root / "training" / "alpha").mkdir()
    (server.root / "training" / "alpha" / "third.jsonl").write_bytes(rows(9))
    wait_until_served(server, tmp_path / "rclone.conf", "training/alpha/third.jsonl")
    third = queue(workspace, "--only", "alpha")
    assert third.exit_code == 0, third.output
    found = results(server)
    assert found["alpha-v1-3"]["dataset"]["sha256"] == content_of({"third.jsonl": rows(9)})
    assert {n: m["run_id"] for n, m in found.items() if n != "alpha-v1-3"} == {
        "alpha-v1": first_result["run_id"], "alpha-v1-2": found["alpha-v1-2"]["run_id"]}


def test_a_trained_dataset_whose_files_stay_is_not_trained_again_and_new_files_can_wait(tmp_path, server, workspace):
    workspace.write_text(workspace.read_text() + '[cleanup]\nremote_training = false\n[queue]\nnew_content = "wait"\n')
    assert queue(workspace, "--only", "beta").exit_code == 0
    again = queue(workspace, "--only", "beta")
    assert again.exit_code == 0 and sorted(results(server)) == ["beta-v1"]  # the same files: nothing retrained
    (server.root / "training" / "beta" / "more.jsonl").write_bytes(rows(3))
    wait_until_served(server, tmp_path / "rclone.conf", "training/beta/more.jsonl")
    waiting = queue(workspace, "--only", "beta")
    assert waiting.exit_code == 0 and sorted(results(server)) == ["beta-v1"]
    assert "its remote folder now holds other files, which wait" in waiting.output
    assert (server.root / "training" / "beta" / "more.jsonl").read_bytes() == rows(3)


def test_an_unreadable_state_file_is_kept_aside_and_costs_nothing(tmp_path, server, workspace):
    assert queue(workspace, "--test", "--only", "gamma").exit_code == 0
    path = tmp_path / "work" / ".lorakit-queue.json"
    path.write_text(path.read_text()[:40])  # cut mid-file
    result = queue(workspace, "--only", "gamma")
    assert result.exit_code == 1  # gamma's folder is there but the new state did not download it: left alone
    assert "is unreadable" in result.output and "Traceback" not in result.output
    (aside,) = (tmp_path / "work").glob(".lorakit-queue.json.unreadable-*")
    assert aside.read_text().startswith("{")
    assert (server.root / "training" / "gamma" / "train.jsonl").is_file()  # nothing deleted
    assert (tmp_path / "work" / "gamma" / "train.jsonl").is_file()


# -- verification cannot be switched off ------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["flags", "environment"])
def test_user_flags_cannot_make_a_check_pass(tmp_path, server, workspace, how):
    env = None
    if how == "flags":
        workspace.write_text(workspace.read_text().replace('config = "rclone.conf"\n', 'config = "rclone.conf"\n'
                                                           'flags = ["--exclude", "*.safetensors"]\n'))
    else:
        env = {"RCLONE_EXCLUDE": "*.safetensors"}
    result = queue(workspace, "--only", "alpha", env=env)
    assert result.exit_code == 1
    assert "lacks adapter_model.safetensors" in result.output and "deleted nothing" in result.output
    assert state(tmp_path)["alpha"]["state"] == "trained"  # never marked uploaded
    assert (server.root / "training" / "alpha" / "train.jsonl").is_file()
    assert (tmp_path / "work" / "alpha" / "train.jsonl").is_file()


def test_a_remote_file_edited_in_place_with_its_size_and_date_is_kept(tmp_path, server, workspace):
    """WebDAV keeps no hashes: a same-size edit with the old modification time is caught by downloading it again."""
    (server.root / "training" / "alpha" / "notes.jsonl").write_bytes(rows(1))
    assert queue(workspace, "--test", "--only", "alpha").exit_code == 0
    edited = server.root / "training" / "alpha" / "notes.jsonl"
    before = edited.stat()
    edited.write_bytes(rows(2))  # the same rows in another order: the same size
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert edited.stat().st_size == before.st_size
    result = queue(workspace, "--only", "alpha")
    assert result.exit_code == 0, result.output
    assert "alpha/notes.jsonl was edited in place (same size, other bytes) since it was downloaded" in result.output
    assert edited.read_bytes() == rows(2)  # the edit: it has no other copy
    assert (server.root / "training" / "alpha" / "train.jsonl").is_file()  # the dataset is kept whole
    again = queue(workspace, "--only", "alpha")  # and its content now trains as a new result, then goes
    assert again.exit_code == 0, again.output
    trained = results(server)["alpha-v1-2"]["dataset"]["sha256"]
    assert trained == content_of({"train.jsonl": rows(0), "notes.jsonl": rows(2)})
    assert not (server.root / "training" / "alpha").exists()


# -- a dataset's own config is untrusted --------------------------------------------------------------------------

@pytest.mark.parametrize(("own", "message"), [
    ("tracking: {copy_files: [SECRET]}", "tracking.copy_files: a dataset folder may set data.*, lora.*, train.*"),
    ("output: {dir: /tmp}", "output.dir: a dataset folder may set data.*"),
    ("launch: {nproc: 2}", "launch.nproc: a dataset folder may set data.*"),
    ("model: {name_or_path: MODEL}", "model.name_or_path: 'MODEL' names a local path"),
    ("data: {train: [SECRET]}", "data.train: SECRET is outside the dataset folder"),
    ("data: {train: [../../secret.jsonl]}", "is outside the dataset folder"),
    ("data: {train: 'dataset_info.json#rows'}", "is outside the dataset folder"),
    ("train: {sample_prompts: SECRET}", "train.sample_prompts: SECRET is outside the dataset folder"),
])
def test_a_dataset_folders_own_config_may_describe_its_data_and_nothing_else(tmp_path, server, workspace,
                                                                              tiny_model_dir, own, message):
    secret = write_jsonl(tmp_path / "secret.jsonl", ALPACA_ROWS)
    text = own.replace("SECRET", str(secret)).replace("MODEL", str(tiny_model_dir))
    (server.root / "training" / "alpha" / "lorakit.yaml").write_text(text + "\n")
    (server.root / "training" / "alpha" / "dataset_info.json").write_text(
        json.dumps({"rows": {"file_name": str(secret)}}))
    goes_on = own.startswith("tracking")  # once is enough to see the queue go on to the next dataset
    result = queue(workspace, "--only", "alpha", *(("--only", "beta") if goes_on else ()))
    assert result.exit_code == 1 and "Traceback" not in result.output
    jobs = state(tmp_path)
    error = jobs["alpha"]["error"].replace(str(secret), "SECRET").replace(str(tiny_model_dir), "MODEL")
    assert message in error and "\n" not in jobs["alpha"]["error"]
    assert jobs["alpha"]["state"] == "failed"
    assert sorted(results(server)) == (["beta-v1"] if goes_on else [])
    if goes_on:
        assert jobs["beta"]["state"] == "cleaned"
    assert (server.root / "training" / "alpha" / "train.jsonl").is_file()  # nothing of alpha deleted


def test_a_dataset_may_set_its_training_and_point_inside_its_folder(tmp_path, server, workspace):
    (server.root / "training" / "alpha" / "prompts.txt").write_text("say hello\n")
    (server.root / "training" / "alpha" / "lorakit.yaml").write_text(
        "lora: {r: 4}\ntrain: {max_steps: 1, sample_prompts: prompts.txt}\ndata: {train: [train.jsonl]}\n")
    result = queue(workspace, "--only", "alpha")
    assert result.exit_code == 0, result.output
    config = results(server)["alpha-v1"]["config"]
    assert config["lora"]["r"] == 4 and config["train"]["max_steps"] == 1


def test_a_link_out_of_a_dataset_folder_fails_that_dataset(tmp_path, server, workspace):
    secret = write_jsonl(tmp_path / "secret.jsonl", ALPACA_ROWS)
    mine = tmp_path / "work" / "mine"
    mine.mkdir(parents=True)
    (mine / "rows.jsonl").symlink_to(secret)
    result = queue(workspace, "--only", "mine", "--only", "beta")
    assert result.exit_code == 1
    jobs = state(tmp_path)
    assert jobs["mine"]["state"] == "failed" and f"is outside the dataset folder (a link to {secret})" in \
        jobs["mine"]["error"]
    assert jobs["beta"]["state"] == "cleaned"


# -- names from outside never reach a shell -----------------------------------------------------------------------

def test_remote_folder_names_never_reach_a_shell_and_cleaned_names_that_collide_stay_apart(tmp_path, server):
    (tmp_path / "train.py").write_text(
        "import pathlib, sys\nout = pathlib.Path(sys.argv[2])\n"
        "(out / 'lora.safetensors').write_bytes(b'weights of ' + sys.argv[1].encode())\n")
    names = ["x\"';touch PWNED;#", "a b", "a_b"]
    for name in names:
        (server.root / "training" / name).mkdir(parents=True)
        (server.root / "training" / name / "1.png").write_bytes(name.encode())
    ws = command_workspace(tmp_path, server, f"{{python}} {tmp_path}/train.py {{dataset}} {{output_dir}}")
    result = queue(ws)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
    found = results(server)
    assert sorted(found) == ["a_b-v1", "a_b-v1-2", "x___touch_PWNED__-v1"]
    assert sorted(m["dataset"]["name"] for m in found.values()) == sorted(names)  # as found, recorded
    for manifest in found.values():  # each result holds what its own dataset trained
        name = manifest["dataset"]["name"]
        assert manifest["dataset"]["sha256"] == content_of({"1.png": name.encode()})
    assert sorted(state(tmp_path)) == ["a_b", "a_b-2", "x___touch_PWNED__"]


# -- the rest of the list -------------------------------------------------------------------------------------

def test_skip_trash_never_empties_the_trash_and_the_old_key_says_why(tmp_path, server, workspace, monkeypatch):
    shim = tmp_path / "bin" / "rclone"
    shim.parent.mkdir()
    shim.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/rclone-calls.txt\nexec /usr/bin/rclone \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    text = workspace.read_text()
    workspace.write_text(text.replace('config = "rclone.conf"\n', 'config = "rclone.conf"\nskip_trash = true\n'))
    result = queue(workspace, "--only", "alpha")
    assert result.exit_code == 0, result.output
    calls = (tmp_path / "rclone-calls.txt").read_text().splitlines()
    assert any(c.startswith("--config") and " delete " in f" {c} " for c in calls)
    assert not any(" cleanup " in f" {c} " for c in calls)  # never the whole remote's trash
    workspace.write_text(text.replace('config = "rclone.conf"\n', 'config = "rclone.conf"\n'
                                      'empty_trash_after_upload = true\n'))
    refused = queue(workspace)
    assert refused.exit_code == 2 and "empty_trash_after_upload was removed: it ran rclone cleanup, which empties " \
                                      "the whole trash of the remote" in refused.output


def test_skip_trash_picks_the_backends_own_flag(tmp_path):
    from lorakit.queue.keep import Keeper
    from lorakit.remote.rclone import Rclone

    conf = tmp_path / "rclone.conf"
    conf.write_text("[gd]\ntype = drive\n\n[dav]\ntype = webdav\nurl = http://127.0.0.1:9/\n")
    keeper = Keeper(Rclone(conf), ("*.safetensors",), skip_trash=True)
    assert keeper._hard_delete("gd:training") == ("--drive-use-trash=false",)
    assert keeper._hard_delete("dav:training") == ()
    assert Keeper(Rclone(conf), ("*.safetensors",))._hard_delete("gd:training") == ()


def test_a_retried_external_job_keeps_the_sample_images_of_its_failed_attempt(tmp_path, server):
    (tmp_path / "train.py").write_text(
        "import pathlib, sys\nout = pathlib.Path(sys.argv[1])\n(out / 'sample').mkdir(exist_ok=True)\n"
        "(out / 'sample' / 'step-5.png').write_bytes(b'png')\n"
        f"if not pathlib.Path({str(tmp_path / 'ok')!r}).exists():\n    sys.exit(1)\n"
        "(out / 'lora.safetensors').write_bytes(b'w')\n")
    (server.root / "training" / "cats").mkdir(parents=True)
    (server.root / "training" / "cats" / "1.png").write_bytes(b"png")
    ws = command_workspace(tmp_path, server, f"{{python}} {tmp_path}/train.py {{output_dir}}")
    assert queue(ws).exit_code == 1  # the first attempt fails after writing a sample image
    (tmp_path / "ok").write_text("")
    retried = queue(ws)
    assert retried.exit_code == 0, retried.output
    first = tmp_path / "outputs" / "cats" / "cats-v1-v001"
    assert (first / "sample" / "step-5.png").is_file()  # kept, as lorakit runs clean keeps images
    assert "kept" in retried.output and "images" in retried.output


def test_a_lorakit_job_records_its_dataset_by_content_in_the_uploaded_manifest(tmp_path, server, workspace):
    result = queue(workspace, "--only", "delta")
    assert result.exit_code == 0, result.output
    data = (tmp_path / "zip-staging" / "delta" / "rows.jsonl").read_bytes()  # what the zip holds (conftest)
    manifest = results(server)["delta-v1"]
    assert manifest["dataset"]["sha256"] == content_of({"rows.jsonl": data})  # the archive's content, unpacked
    assert manifest["dataset"]["name"] == "delta"


def test_a_dataset_removed_from_the_remote_before_its_download_fails_alone(tmp_path, server, workspace):
    assert queue(workspace, "--only", "beta", "--test").exit_code == 0  # alpha is listed, not yet fetched
    assert state(tmp_path)["alpha"]["state"] == "pending"
    subprocess.run(["rm", "-r", str(server.root / "training" / "alpha")], check=True)
    wait_until_served(server, tmp_path / "rclone.conf", "training/alpha", present=False)
    result = queue(workspace, "--only", "alpha", "--only", "gamma")
    assert result.exit_code == 1 and "queue stopped" not in result.output
    jobs = state(tmp_path)
    assert jobs["alpha"]["state"] == "failed" and "is gone from the remote" in jobs["alpha"]["error"]
    assert jobs["gamma"]["state"] == "cleaned"  # the queue went on


def test_a_local_copy_edited_before_training_never_lets_its_remote_original_go(tmp_path, server, workspace):
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    killed = subprocess.run([sys.executable, "-m", "lorakit.cli.main", "queue", str(workspace), "--only", "alpha"],
                            cwd=tmp_path, env={**env, **faults.arm("transition:2")}, capture_output=True, text=True,
                            timeout=300)  # killed once alpha is downloaded and unpacked, before it trains
    assert killed.returncode == -9 and state(tmp_path)["alpha"]["state"] == "unpacked"
    local = tmp_path / "work" / "alpha" / "train.jsonl"
    local.write_bytes(rows(1))  # someone edits the local copy: the run trains on that, not on the remote's
    first = queue(workspace, "--only", "alpha")
    assert first.exit_code == 0, first.output
    assert "kept the remote dataset" in first.output
    assert (server.root / "training" / "alpha" / "train.jsonl").read_bytes() == rows(0)  # the original, kept
    assert results(server)["alpha-v1"]["dataset"]["sha256"] == content_of({"train.jsonl": rows(1)})
    second = queue(workspace, "--only", "alpha")  # the original then trains as a result of its own, and goes
    assert second.exit_code == 0, second.output
    assert results(server)["alpha-v1-2"]["dataset"]["sha256"] == content_of({"train.jsonl": rows(0)})
    assert not (server.root / "training" / "alpha").exists()
