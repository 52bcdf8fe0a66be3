"""A run whose training process dies without a word (kill -9, the OOM killer) is shown crashed, and a run still
training is never resumed by a second process."""

import json
import signal
import subprocess
import sys
import time

from click.testing import CliRunner

from lorakit.cli.main import cli
from lorakit.runs.catalog import RESUME_FILE
from tests.unit.cli.test_train import make_config


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_killed_run_shows_crashed_and_a_live_one_is_never_resumed_twice(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 100_000, "log_every": 1, "resumable": True,
                                                          "resume_every": 1})
    proc = subprocess.Popen([sys.executable, "-m", "lorakit.cli.main", "train", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = tmp_path / "runs" / "tiny-v001"
    try:
        deadline = time.monotonic() + 120
        while not ((folder / "trainer_log.jsonl").is_file() and (folder / "trainer_log.jsonl").read_text().count(
                "\n") >= 3 and (folder / RESUME_FILE).is_file()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.2)  # polling a subprocess, not waiting for time to pass in the code under test
        logged = max(json.loads(line)["current_steps"] for line in (folder / "trainer_log.jsonl").open())
        listed = json.loads(run("runs", "list", "--json").output)  # the steps so far, from the log: it trains on
        assert listed[0]["status"] == "running" and int(listed[0]["steps"].split("/")[0]) >= logged >= 1
        before = (folder / "manifest.json").read_text()

        second = run("train", "--resume", "tiny-v001")  # would write over the live run's adapter and state
        assert second.exit_code == 1
        assert f"tiny-v001 is training now (process {proc.pid} on this machine); stop it first" in second.output
        assert json.loads((folder / "manifest.json").read_text())["process"] == json.loads(before)["process"]
        assert "resumes" not in json.loads((folder / "manifest.json").read_text())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)

    listed = json.loads(run("runs", "list", "--json").output)
    assert listed[0]["status"] == "crashed"  # shown so; the manifest itself is left as the process left it
    assert json.loads((folder / "manifest.json").read_text())["status"] == "running"
    shown = run("runs", "show", "tiny-v001").output.splitlines()[0]
    assert shown == (f"tiny-v001  crashed (its training process {proc.pid} is gone without a word, killed or out "
                     "of memory; lorakit train --resume runs/tiny-v001 continues it from its resume state)")
    stop = run("runs", "stop", "tiny-v001")
    assert stop.exit_code == 1 and "is gone" in stop.output
    assert run("runs", "clean").output.strip() == "tiny-v001: kept: crashed" and folder.is_dir()


def test_a_process_is_alive_by_its_pid_and_start_time_and_unknown_elsewhere():
    import os
    import socket

    from lorakit.runs.process import process_alive, this_process

    me = this_process()
    assert process_alive(me) is True
    assert process_alive({**me, "started": "1"}) is False  # the same number, a different (later) process
    assert process_alive({**me, "host": socket.gethostname() + "-other"}) is None  # another machine cannot tell
    assert process_alive({**me, "started": None}) is True  # recorded without /proc: the pid alone
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert process_alive({"host": socket.gethostname(), "pid": gone.pid, "started": None}) is False
    assert process_alive({"host": socket.gethostname(), "pid": os.getpid()}) is True
