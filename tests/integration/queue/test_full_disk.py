"""A full local disk under an unattended queue, made real: the queue runs in a mount namespace of its own where its
work or output folder is a small tmpfs (``unshare --mount``), against the real rclone WebDAV server. Every later
dataset would need the same disk, so the queue stops at once, says which disk in one line, deletes nothing, and a
run with room finishes the job."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.integration.queue.test_queue import queue, state


def _can_mount_a_tmpfs(tmp_path) -> bool:
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"',
                            str(tmp_path)], capture_output=True)
    return probe.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    if not _can_mount_a_tmpfs(tmp_path):
        pytest.skip("needs unshare --mount and a tmpfs mount (root, or user namespaces)")

    def queue_on(folder: str, size: str, *args: str) -> subprocess.CompletedProcess:
        """``lorakit queue`` with ``folder`` (relative to the test folder) a tmpfs of ``size``, gone afterwards."""
        (tmp_path / folder).mkdir(exist_ok=True)
        mount_then_run = 'mount -t tmpfs -o size="$0" tmpfs "$1" && shift && exec "$@"'  # $0 size, $1 folder
        return subprocess.run(["unshare", "--mount", "sh", "-c", mount_then_run, size, str(tmp_path / folder),
                               sys.executable, "-m", "lorakit.cli.main", "queue", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    return queue_on


def test_a_dataset_larger_than_the_work_disk_stops_the_queue_and_deletes_nothing(tmp_path, server, workspace,
                                                                                  small_disk):
    huge = server.root / "training" / "huge"
    huge.mkdir()
    write_jsonl(huge / "train.jsonl", ALPACA_ROWS * 4000)  # about 1 MB, on a 256 KiB work disk
    done = small_disk("work", "256k", str(workspace), "--only", "huge")
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("queue stopped: rclone copy")
    assert f"no space left on the disk of {tmp_path / 'work' / 'huge'}" in last
    assert "the queue stopped and deleted nothing" in last and "Traceback" not in done.stderr
    assert (huge / "train.jsonl").is_file()  # the remote data is kept

    again = queue(workspace, "--only", "huge")  # the same work folder, on a disk with room
    assert again.exit_code == 0, again.output
    assert json.loads((server.root / "output" / "huge-v1" / "manifest.json").read_text())["status"] == "completed"


def test_an_archive_that_unpacks_larger_than_the_work_disk_stops_the_queue(tmp_path, server, workspace, small_disk):
    import zipfile

    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, ALPACA_ROWS * 4000)  # about 1 MB of repeated rows: a zip of a few KiB
    with zipfile.ZipFile(server.root / "training" / "big.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(rows, "big/rows.jsonl")
    assert (server.root / "training" / "big.zip").stat().st_size < 64 << 10
    done = small_disk("work", "256k", str(workspace), "--only", "big")
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("queue stopped: ") and f"no room to unpack it on the disk of {tmp_path / 'work'}" in last
    assert "the queue stopped and deleted nothing" in last and "Traceback" not in done.stderr
    assert (server.root / "training" / "big.zip").is_file()


def test_an_output_disk_too_small_for_the_run_stops_the_queue_before_training(tmp_path, server, workspace,
                                                                             small_disk):
    # the tiny model's adapter is 64 KiB and its tokenizer 4 KiB: 32 KiB cannot hold the run
    done = small_disk("outputs", "32k", str(workspace), "--only", "alpha")
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("queue stopped: alpha: not enough disk space for this run in") and "free space there" in last
    assert "set the workspace's output_dir to a disk with room" in last  # not output.dir: the queue sets that
    assert "the queue stopped and deleted nothing" in last and "Traceback" not in done.stderr
    assert state(tmp_path)["alpha"]["state"] == "training"  # not failed: the next run trains it
    assert (server.root / "training" / "alpha" / "train.jsonl").is_file()
    assert (tmp_path / "work" / "alpha" / "train.jsonl").is_file()

    again = queue(workspace, "--only", "alpha")
    assert again.exit_code == 0, again.output
    assert json.loads((server.root / "output" / "alpha-v1" / "manifest.json").read_text())["status"] == "completed"
