"""A real rclone WebDAV server on 127.0.0.1 with a password, and a workspace of tiny datasets on it."""

import json
import shutil
import socket
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ALPACA_ROWS, write_jsonl

PASSWORD = "s3cret-Pa55"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    root: Path
    port: int
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_webdav(root: Path, *extra: str) -> Server:
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (apt-get install rclone; .ci/run does)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(["rclone", "serve", "webdav", str(root), "--addr", f"127.0.0.1:{port}", "--user", "u",
                             "--pass", PASSWORD, "--dir-cache-time", "1s", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return Server(root, port, proc)
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "rclone serve webdav did not start"
            time.sleep(0.1)  # polling the server's port


def wait_until_served(server: Server, config: Path, relative: str, present: bool = True) -> None:
    """Poll the WebDAV server until it lists ``relative`` (or no longer does): files written straight into its
    folder show after its directory cache (1 s) expires."""
    deadline = time.monotonic() + 15
    parent, _, name = relative.rstrip("/").rpartition("/")
    while True:
        done = subprocess.run(["rclone", "--config", str(config), "lsjson", f"srv:{parent}"], capture_output=True,
                              text=True)
        listed = done.returncode == 0 and any(e["Name"] == name for e in json.loads(done.stdout or "[]"))
        if listed == present:
            return
        assert time.monotonic() < deadline, f"the server never showed {relative} {'present' if present else 'gone'}"
        time.sleep(0.2)  # polling the server's directory cache


def remote_section(name: str, port: int, password: str = PASSWORD) -> str:
    obscured = subprocess.run(["rclone", "obscure", password], capture_output=True, text=True, check=True).stdout
    return (f"[{name}]\ntype = webdav\nurl = http://127.0.0.1:{port}/\nvendor = other\nuser = u\n"
            f"pass = {obscured.strip()}\n\n")


@pytest.fixture
def server(tmp_path):
    srv = start_webdav(tmp_path / "server")
    yield srv
    srv.stop()


DATASETS = ("alpha", "beta", "gamma")


def fill_training(root: Path) -> None:
    """training/ with three dataset folders and one zip (its files under one top folder)."""
    for i, name in enumerate(DATASETS):
        (root / "training" / name).mkdir(parents=True)
        write_jsonl(root / "training" / name / "train.jsonl", ALPACA_ROWS[i:] + ALPACA_ROWS[:i])
    staging = root.parent / "zip-staging"
    (staging / "delta").mkdir(parents=True)
    write_jsonl(staging / "delta" / "rows.jsonl", ALPACA_ROWS[::-1])
    with zipfile.ZipFile(root / "training" / "delta.zip", "w") as z:
        z.write(staging / "delta" / "rows.jsonl", "delta/rows.jsonl")


@pytest.fixture
def workspace(tmp_path, server, tiny_model_dir):
    """A workspace file training every dataset on the server with a tiny model; returns its path."""
    fill_training(server.root)
    (tmp_path / "rclone.conf").write_text(remote_section("srv", server.port))
    base = {"model": {"name_or_path": str(tiny_model_dir)},
            "data": {"train": "unused.jsonl", "max_length": 64},
            "train": {"max_steps": 2, "micro_batch_size": 2, "grad_accum": 1, "lr": 0.01, "log_every": 1}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    ws = tmp_path / "workspace.toml"
    ws.write_text('work_dir = "work"\noutput_dir = "outputs"\nconfig = "base.yaml"\nsuffix = "v1"\n\n'
                  '[remote]\ntraining = "srv:training"\noutput = "srv:output"\nconfig = "rclone.conf"\n')
    return ws


# A kill inside one rclone call (an upload or a deletion of many files) leaves part of its work done. The queue's
# code has no branch that does part of an rclone call and dies: a test kills it at the fault point just before
# the call (LORAKIT_FAULTS=before-upload or before-delete:remote-data) and then leaves, here, what rclone would
# have left had it been cut short.
CUT_SHORT = {"during-upload": "before-upload", "during-delete:remote-data": "before-delete:remote-data"}


def cut_short(point: str, work: Path, remote_root: Path) -> None:
    """After a kill at ``CUT_SHORT[point]``: half of the run's largest file uploaded to the target recorded in the
    state file (``during-upload``), or the first of the files recorded for deletion deleted
    (``during-delete:remote-data``). ``remote_root``: the folder the remote serves (training/ and output/)."""
    jobs = json.loads((work / ".lorakit-queue.json").read_text())["jobs"].values()
    if point == "during-upload":
        for job in (j for j in jobs if j.get("upload_to") and j.get("run_dir") and j["state"] == "trained"):
            run_dir = Path(job["run_dir"])
            largest = max((p for p in run_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
            target = remote_root / job["upload_to"].split(":", 1)[1] / largest.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    elif point == "during-delete:remote-data":
        for job in (j for j in jobs if len(j.get("deleting") or []) > 1):
            (remote_root / "training" / job["deleting"][0]).unlink(missing_ok=True)


def command_workspace(tmp_path: Path, server: Server, command: str, trainer_config: str | None = None) -> Path:
    """workspace.toml over the served remote (training/ in, output/ out) whose trainer is ``command``."""
    (tmp_path / "rclone.conf").write_text(remote_section("srv", server.port))
    ws = tmp_path / "workspace.toml"
    ws.write_text('work_dir = "work"\n[remote]\ntraining = "srv:training"\noutput = "srv:output"\n'
                  'config = "rclone.conf"\n[trainer]\nkind = "command"\n'
                  f'command = "{command}"\n' + (f'config = "{trainer_config}"\n' if trainer_config else ""))
    return ws
