"""The queue's parts that need no server: the workspace's paths, the flags a check may take, the names of things from
outside, the state file, and the rules for a dataset folder's own config."""

import json

import pytest

from lorakit.errors import DataError
from lorakit.queue.state import Job, QueueState
from lorakit.queue.trust import check_dataset_config, check_inside
from lorakit.queue.workspace import load_workspace
from lorakit.remote.rclone import checks_environment, connection_flags
from lorakit.runs.naming import safe_name


def test_a_local_remote_folder_is_relative_to_the_workspace_file_and_a_named_remote_is_left_alone(tmp_path,
                                                                                                   monkeypatch):
    """Every path absolute, even from a workspace named relative: the state file records them, and the next run of
    the queue may start in another folder."""
    (tmp_path / "ws").mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ws" / "ws.toml").write_text('work_dir = "work"\nconfig = "base.yaml"\n[remote]\ntraining = "nas/in"\n'
                                             'output = "gdrive:out/lorakit"\nconfig = "rclone.conf"\n')
    ws = load_workspace("ws/ws.toml")
    assert ws.remote.training == str(tmp_path / "ws" / "nas" / "in")  # as work_dir is, whatever the cwd
    assert ws.remote.output == "gdrive:out/lorakit" and ws.work_dir == str(tmp_path / "ws" / "work")


def test_checks_take_only_the_connection_flags_of_the_users():
    flags = ("--exclude", "*.safetensors", "--timeout", "5s", "--bwlimit=1M", "--size-only", "--no-check-certificate",
             "--max-size", "10", "--filter", "- *.pt", "--contimeout", "3s")
    assert connection_flags(flags) == ("--timeout", "5s", "--bwlimit=1M", "--no-check-certificate", "--contimeout",
                                       "3s")
    env = checks_environment({"RCLONE_EXCLUDE": "*.safetensors", "RCLONE_SIZE_ONLY": "true", "RCLONE_TIMEOUT": "5s",
                              "RCLONE_CONFIG": "/c.conf", "RCLONE_CONFIG_SRV_TYPE": "webdav", "HOME": "/root"})
    assert env == {"RCLONE_TIMEOUT": "5s", "RCLONE_CONFIG": "/c.conf", "RCLONE_CONFIG_SRV_TYPE": "webdav",
                   "HOME": "/root"}


@pytest.mark.parametrize(("name", "cleaned"), [
    ("cats", "cats"), ("my cats", "my_cats"), ("x\"';touch PWNED;#", "x___touch_PWNED__"), ("..", "_."),
    (".hidden", "_hidden"), ("-rf", "_rf"), ("", "_"), ("katzen-ä.v2", "katzen-_.v2"), ("a/b", "a_b")])
def test_names_from_outside_keep_letters_digits_dot_underscore_and_dash(name, cleaned):
    assert safe_name(name) == cleaned


def test_an_older_state_file_reads_with_its_names_as_keys_and_an_unreadable_one_is_kept_aside(tmp_path):
    (tmp_path / ".lorakit-queue.json").write_text(json.dumps(
        {"version": 1, "jobs": {"cats": {"name": "cats", "source": "folder", "state": "trained"}}}))
    state = QueueState.load(tmp_path)
    assert state.jobs["cats"].key == state.jobs["cats"].folder == "cats"
    state.jobs["cats-2"] = Job("cats", "folder", key="cats-2", generation=2)
    state.save()
    again = QueueState.load(tmp_path)
    assert [j.key for j in again.of_dataset("cats")] == ["cats", "cats-2"]
    (tmp_path / ".lorakit-queue.json").write_text('{"version": 2, "jobs": {"cats": {"name": ')
    assert QueueState.load(tmp_path).jobs == {}
    (aside,) = tmp_path.glob(".lorakit-queue.json.unreadable-*")
    assert aside.read_text().startswith('{"version": 2')
    assert not (tmp_path / ".lorakit-queue.json").exists()  # moved aside, never deleted


def test_a_dataset_config_may_set_its_data_and_training_only(tmp_path):
    own = tmp_path / "lorakit.yaml"
    own.write_text("data: {max_length: 64}\nlora: {r: 4}\ntrain: {lr: 0.001, method: dpo}\noutput: {name: x}\n"
                   "model: {name_or_path: HuggingFaceTB/SmolLM2-135M}\ndpo: {beta: 0.3}\n")
    assert check_dataset_config(own)["lora"] == {"r": 4} and check_dataset_config(own)["dpo"] == {"beta": 0.3}
    for text, key in [("tracking: {repos: {a: /x}}", "tracking.repos.a"), ("output: {dir: /x}", "output.dir"),
                      ("trainer: {command: rm}", "trainer.command"), ("model: {dtype: float32}", "model.dtype")]:
        own.write_text(text + "\n")
        with pytest.raises(DataError, match=rf"lorakit.yaml: {key}: a dataset folder may set data\.\*"):
            check_dataset_config(own)
    own.write_text(f"model: {{name_or_path: {tmp_path}}}\n")
    with pytest.raises(DataError, match="names a local path"):
        check_dataset_config(own)


def test_paths_must_stay_inside_the_dataset_folder_after_links(tmp_path):
    folder = tmp_path / "cats"
    folder.mkdir()
    (folder / "ok.jsonl").write_text("{}\n")
    (tmp_path / "secret.jsonl").write_text("{}\n")
    (folder / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    check_inside(folder, "data.train", [str(folder / "ok.jsonl")], "lorakit.yaml")
    for path in (str(tmp_path / "secret.jsonl"), str(folder / ".." / "secret.jsonl"), str(folder / "link.jsonl")):
        with pytest.raises(DataError, match="is outside the dataset folder"):
            check_inside(folder, "data.train", [path], "lorakit.yaml")


def test_an_unfinished_run_is_discarded_only_once_its_process_is_gone(tmp_path):
    import socket
    import subprocess
    import sys

    from lorakit.queue.keep import Keeper
    from lorakit.runs.process import this_process

    keeper = Keeper(rclone=None, model_patterns=("*.safetensors",))  # discarding a local run asks no remote

    def run_folder(name: str, process: dict):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"status": "running", "process": process}))
        (folder / "trainer_log.jsonl").write_text("")  # nothing worth keeping: no model file, no resume state
        return folder

    live = run_folder("live-v1", this_process())  # a trainer a killed queue left behind, still saving
    elsewhere = run_folder("elsewhere-v1", {**this_process(), "host": socket.gethostname() + "-other"})
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = run_folder("dead-v1", {"host": socket.gethostname(), "pid": ended.pid, "started": None})
    assert keeper.discard_unfinished_run(live) is False and live.is_dir()
    assert keeper.discard_unfinished_run(elsewhere) is False and elsewhere.is_dir()
    assert keeper.discard_unfinished_run(dead) is True and not dead.exists()


def test_a_notice_said_on_every_run_is_read_once_with_its_count(tmp_path):
    from lorakit.queue.notices import NOTICES_FILE, read_notices

    said = [("t0", "a"), ("t1", "b"), ("t2", "a"), ("t3", "c"), ("t4", "a")]
    (tmp_path / NOTICES_FILE).write_text("".join(json.dumps({"at": at, "level": "warning", "message": m}) + "\n"
                                                 for at, m in said) + '{"at": "t5", "mess')  # a torn last line
    notices = read_notices(tmp_path)
    assert [(n["message"], n["at"], n["times"], n["since"]) for n in notices] == [
        ("b", "t1", "1", "t1"), ("c", "t3", "1", "t3"), ("a", "t4", "3", "t0")]
