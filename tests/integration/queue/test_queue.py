"""lorakit queue against a real rclone WebDAV server: the whole round, kill -9 at every step, a full remote."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from lorakit import faults
from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.integration.queue.conftest import DATASETS, PASSWORD, remote_section, start_webdav

JOBS = (*DATASETS, "delta")


def queue(*args):
    return CliRunner().invoke(cli, ["queue", *[str(a) for a in args]])


def state(tmp_path):
    return json.loads((tmp_path / "work" / ".lorakit-queue.json").read_text())["jobs"]


def test_queue_trains_every_dataset_uploads_and_cleans_up(tmp_path, server, workspace):
    dry = queue(workspace, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "alpha [pending]: download srv:training/alpha/train.jsonl; train as alpha-v1; upload to " \
           "srv:output/alpha-v1; clean up" in dry.output
    assert "delta [pending]: download srv:training/delta.zip; unpack; train as delta-v1" in dry.output
    assert not (tmp_path / "outputs").exists()  # a dry run trains nothing

    began = time.monotonic()
    result = queue(workspace)
    assert result.exit_code == 0, result.output
    for name in JOBS:
        uploaded = server.root / "output" / f"{name}-v1"
        assert (uploaded / "adapter_model.safetensors").is_file()
        assert json.loads((uploaded / "manifest.json").read_text())["status"] == "completed"
        assert state(tmp_path)[name]["state"] == "cleaned"
        assert name in result.output
    assert (server.root / "training").is_dir() and not any((server.root / "training").iterdir())
    assert not (tmp_path / "work" / "alpha").exists() and not (tmp_path / "outputs" / "alpha").exists()
    took = sum(state(tmp_path)[n]["seconds"] for n in JOBS)
    assert 0 < took <= time.monotonic() - began  # each job's time counted once
    history = [h["state"] for h in state(tmp_path)["delta"]["history"]]
    assert history == ["downloaded", "unpacked", "training", "trained", "uploaded", "cleaned"]
    assert PASSWORD not in result.output
    again = queue(workspace)  # nothing left: nothing retrained, nothing uploaded twice
    assert again.exit_code == 0 and sorted(p.name for p in (server.root / "output").iterdir()) == \
        sorted(f"{n}-v1" for n in JOBS)


def test_test_mode_deletes_nothing_and_overlays_name_the_output(tmp_path, server, workspace):
    (tmp_path / "short.yaml").write_text("train: {max_steps: 1}\n")
    (tmp_path / "small.yaml").write_text("lora: {r: 4}\n")
    workspace.write_text(workspace.read_text().replace('suffix = "v1"', 'suffix = "v1"\noverlays = ["small.yaml"]'))
    result = queue(workspace, "--test", "--add", tmp_path / "short.yaml", "--only", "alpha")
    assert result.exit_code == 0, result.output
    out = server.root / "output" / "alpha-v1-small-short"  # the workspace's overlays, then --add
    assert (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["lora"]["r"] == 4 and config["train"]["max_steps"] == 1
    assert (server.root / "training" / "alpha" / "train.jsonl").is_file()
    assert (tmp_path / "work" / "alpha" / "train.jsonl").is_file()
    assert state(tmp_path)["alpha"]["state"] == "uploaded"
    assert "beta" not in state(tmp_path) or state(tmp_path)["beta"]["state"] == "pending"


def _remote_outputs(server):
    out = server.root / "output"
    return sorted(p.name for p in out.iterdir()) if out.is_dir() else []


def test_killed_at_every_transition_the_queue_still_finishes_and_loses_nothing(tmp_path, server, workspace):
    env = {**os.environ, **faults.arm("transition:1")}
    runs = 0
    killed_after = []
    while True:
        runs += 1
        assert runs < 40, "the queue does not converge"
        before = {n: j["state"] for n, j in state(tmp_path).items()} if (tmp_path / "work").is_dir() and \
            (tmp_path / "work" / ".lorakit-queue.json").is_file() else {}
        done = subprocess.run([sys.executable, "-m", "lorakit.cli.main", "queue", str(workspace)], cwd=tmp_path,
                              env=env, capture_output=True, text=True)
        after = {n: j["state"] for n, j in state(tmp_path).items()}
        moved = [f"{n}:{after[n]}" for n in after if before.get(n, "pending") != after[n]]
        # invariant after every kill: training data of a job is gone only if its result is safe remotely
        for name in JOBS:
            data_gone = not (server.root / "training" / name).exists() and \
                not (server.root / "training" / f"{name}.zip").exists()
            if data_gone:
                assert (server.root / "output" / f"{name}-v1" / "adapter_model.safetensors").is_file(), name
        assert all(n in {f"{j}-v1" for j in JOBS} for n in _remote_outputs(server))  # never another name
        if done.returncode == 0:
            break
        assert done.returncode == -9, done.stderr[-2000:]
        assert len(moved) == 1, moved  # exactly one transition per killed run
        killed_after.append(moved[0])
    assert len(killed_after) == 6 * len(JOBS)  # every transition of every job was a kill point
    assert {k.split(":")[1] for k in killed_after} == {"downloaded", "unpacked", "training", "trained", "uploaded",
                                                       "cleaned"}
    assert _remote_outputs(server) == sorted(f"{n}-v1" for n in JOBS)
    for name in JOBS:
        assert state(tmp_path)[name]["state"] == "cleaned"
        assert json.loads((server.root / "output" / f"{name}-v1" / "manifest.json").read_text())["status"] == \
            "completed"
    assert (server.root / "training").is_dir()


def test_a_read_only_output_remote_stops_the_queue_and_deletes_nothing(tmp_path, server, workspace):
    read_only = start_webdav(tmp_path / "ro-server", "--read-only")
    try:
        conf = tmp_path / "rclone.conf"
        conf.write_text(conf.read_text() + remote_section("full", read_only.port))
        workspace.write_text(workspace.read_text().replace('output = "srv:output"', 'output = "full:output"'))
        result = queue(workspace)
    finally:
        read_only.stop()
    assert result.exit_code == 1
    assert "the remote refused the write: out of quota, full or read-only" in result.output
    assert "deleted nothing" in result.output
    jobs = state(tmp_path)
    assert jobs["alpha"]["state"] == "trained" and all(jobs[n]["state"] == "pending" for n in JOBS[1:])
    assert (server.root / "training" / "alpha" / "train.jsonl").is_file()  # remote data kept
    assert (tmp_path / "work" / "alpha" / "train.jsonl").is_file()  # local data kept
    assert (Path(jobs["alpha"]["run_dir"]) / "adapter_model.safetensors").is_file()  # the result kept


def test_remote_problems_are_one_line_errors(tmp_path, server, workspace):
    conf = tmp_path / "rclone.conf"
    good = conf.read_text()
    conf.write_text(remote_section("srv", server.port, password="wrong"))
    wrong = queue(workspace)
    conf.write_text(good)
    workspace.write_text(workspace.read_text().replace('"srv:training"', '"nosuch:training"'))
    missing = queue(workspace)
    workspace.write_text(workspace.read_text().replace('"nosuch:training"', '"srv:training"'))
    server.stop()
    stopped = queue(workspace)
    for result, words in [(wrong, "authentication failed"), (missing, "no such remote in the rclone config"),
                          (stopped, "cannot reach the remote")]:
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: rclone ") and words in lines[0], result.output
        assert PASSWORD not in result.output and "wrong" not in result.output


def test_a_bad_dataset_fails_alone_with_its_reason(tmp_path, server, workspace):
    (server.root / "training" / "beta" / "train.jsonl").write_text('{"instruction": "x"}\nnot json\n')
    result = queue(workspace)
    assert result.exit_code == 1
    jobs = state(tmp_path)
    assert jobs["beta"]["seconds"] > 0
    assert jobs["beta"]["state"] == "failed" and "beta/train.jsonl:1: cannot tell the format" in jobs["beta"]["error"]
    assert all(jobs[n]["state"] == "cleaned" for n in JOBS if n != "beta")
    assert (server.root / "training" / "beta" / "train.jsonl").is_file()  # its data is kept for a fix
    summary = [line for line in result.output.splitlines() if line.startswith("beta")]
    assert summary and "failed" in summary[0]


def test_sigterm_stops_at_a_safe_point_and_a_rerun_resumes_the_training(tmp_path, server, workspace):
    import signal

    # the dataset's own lorakit.yaml: long enough to be stopped part-way (the stop comes at about step 5)
    (server.root / "training" / "alpha" / "lorakit.yaml").write_text("train: {max_steps: 100, log_every: 1}\n")
    proc = subprocess.Popen([sys.executable, "-m", "lorakit.cli.main", "queue", str(workspace), "--only", "alpha"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "outputs" / "alpha" / "alpha-v1-v001" / "trainer_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.2)  # polling a subprocess
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output[-3000:]
    assert "training stopped; run the queue again to resume it" in output
    assert state(tmp_path)["alpha"]["state"] == "training"
    run = tmp_path / "outputs" / "alpha" / "alpha-v1-v001"
    assert (run / "resume_state.pt").is_file()
    stopped_at = json.loads((run / "manifest.json").read_text())["metrics"]["train_steps"]
    assert 0 < stopped_at < 100

    again = queue(workspace, "--only", "alpha")
    assert again.exit_code == 0, again.output
    assert f"resuming {run} after step {stopped_at}" in again.output
    assert "kept" not in again.output  # the run it goes on with is not a stale one it declined to delete
    uploaded = json.loads((server.root / "output" / "alpha-v1" / "manifest.json").read_text())
    assert uploaded["status"] == "completed" and uploaded["metrics"]["train_steps"] == 100
    assert uploaded["status_history"][3]["reason"] == f"resumed after step {stopped_at}"


def test_a_dataset_folder_asking_for_dpo_is_trained_on_its_pairs_and_uploaded(tmp_path, server, workspace):
    from tests.unit.train.test_dpo_run import PAIRS

    prefs = server.root / "training" / "prefs"
    prefs.mkdir()
    write_jsonl(prefs / "train.jsonl", PAIRS)
    (prefs / "lorakit.yaml").write_text("train: {method: dpo}\ndpo: {beta: 0.2}\n")
    result = queue(workspace, "--only", "prefs")
    assert result.exit_code == 0, result.output
    uploaded = server.root / "output" / "prefs-v1"
    manifest = json.loads((uploaded / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["config"]["train"]["method"] == "dpo"
    assert manifest["config"]["dpo"]["beta"] == 0.2 and (uploaded / "reference_logps.json").is_file()
    steps = [json.loads(x) for x in (uploaded / "trainer_log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps and all("rewards/accuracies" in s for s in steps)
    assert state(tmp_path)["prefs"]["state"] == "cleaned" and not prefs.exists()  # deleted once verified


def test_plain_local_folders_as_remotes(tmp_path, workspace):
    """A NAS mount or any folder written as a path: the output folder does not exist yet and its parent is probed
    (it was probed as "/path/output:", which rclone could not find, so the queue stopped before training)."""
    mount = tmp_path / "nas"
    (mount / "training" / "alpha").mkdir(parents=True)
    write_jsonl(mount / "training" / "alpha" / "train.jsonl", ALPACA_ROWS)
    workspace.write_text(workspace.read_text().replace('"srv:training"', f'"{mount}/training"')
                         .replace('"srv:output"', f'"{mount}/output"'))
    result = queue(workspace)
    assert result.exit_code == 0, result.output
    assert json.loads((mount / "output" / "alpha-v1" / "manifest.json").read_text())["status"] == "completed"
    assert state(tmp_path)["alpha"]["state"] == "cleaned" and not (mount / "training" / "alpha").exists()
