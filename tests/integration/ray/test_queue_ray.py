"""[queue] executor = "ray" on a real local Ray cluster of two worker nodes, against a real rclone WebDAV server."""

import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.integration.queue.conftest import PASSWORD, command_workspace, remote_section
from tests.integration.ray.conftest import JOB_RESOURCE, needs_ray

pytestmark = needs_ray
TWO = ("alpha", "beta")


def two_datasets(root: Path) -> None:
    """The served training/ folder with exactly two datasets (the fixture's others removed)."""
    shutil.rmtree(root / "training" / "gamma")
    (root / "training" / "delta.zip").unlink()


def ray_workspace(tmp_path, server, tiny_model_dir, cluster, max_steps=2, resources=None) -> Path:
    (tmp_path / "rclone.conf").write_text(remote_section("srv", server.port))
    base = {"model": {"name_or_path": str(tiny_model_dir)}, "data": {"train": "unused.jsonl", "max_length": 64},
            "train": {"max_steps": max_steps, "micro_batch_size": 2, "grad_accum": 1, "lr": 0.01, "log_every": 1,
                      "resume_every": 10}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    wanted = {JOB_RESOURCE: 1, **(resources or {})}
    ws = tmp_path / "workspace.toml"
    ws.write_text('work_dir = "work"\noutput_dir = "outputs"\nconfig = "base.yaml"\nsuffix = "v1"\n\n'
                  '[remote]\ntraining = "srv:training"\noutput = "srv:output"\nconfig = "rclone.conf"\n\n'
                  f'[queue]\nexecutor = "ray"\n\n[queue.ray]\naddress = "{cluster.address}"\n'
                  f'scratch = "{tmp_path / "scratch"}"\n'
                  f'resources = {{ {", ".join(f"{k} = {v}" for k, v in wanted.items())} }}\n')
    return ws


def run_queue(cluster, tmp_path, ws, timeout=600):
    return cluster.run([sys.executable, "-m", "lorakit", "queue", str(ws)], cwd=tmp_path, timeout=timeout)


def state(tmp_path):
    return json.loads((tmp_path / "work" / ".lorakit-queue.json").read_text())["jobs"]


def training_interval(job) -> tuple[datetime, datetime]:
    at = {h["state"]: datetime.fromisoformat(h["at"]) for h in job["history"]}
    return at["training"], at["trained"]


def assert_each_result_once(server, names):
    assert sorted(p.name for p in (server.root / "output").iterdir()) == sorted(f"{n}-v1" for n in names)
    for name in names:
        uploaded = server.root / "output" / f"{name}-v1"
        assert (uploaded / "adapter_model.safetensors").is_file()
        assert json.loads((uploaded / "manifest.json").read_text())["status"] == "completed"
    assert not [p for p in (server.root / "training").rglob("*") if p.is_file()]  # every dataset deleted once


def test_two_datasets_train_at_once_on_two_workers(tmp_path, ns_server, tiny_model_dir, ray_cluster):
    two_datasets(ns_server.root)
    ws = ray_workspace(tmp_path, ns_server, tiny_model_dir, ray_cluster, max_steps=300)
    began = time.monotonic()
    done = run_queue(ray_cluster, tmp_path, ws)
    both = time.monotonic() - began
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = state(tmp_path)
    nodes = {name: jobs[name]["node"] for name in TWO}
    assert {"lorakit_node_a" in n for n in nodes.values()} == {True, False}, nodes  # one on each worker
    first, second = (training_interval(jobs[n]) for n in TWO)
    assert first[0] < second[1] and second[0] < first[1]  # they trained at the same time
    for name in TWO:
        assert jobs[name]["state"] == "cleaned" and jobs[name]["result_files"]["adapter_model.safetensors"]
        assert f"{name}: running on node" in done.stdout + done.stderr  # the driver's output says where
    assert_each_result_once(ns_server, TWO)
    assert not [p for p in (tmp_path / "scratch").rglob("*") if p.is_file() and "files" not in p.parts]
    assert PASSWORD not in done.stdout + done.stderr

    # The same two datasets again under other names, on one worker only: the figure for the closing note.
    for i, name in enumerate(("one_a", "one_b")):
        (ns_server.root / "training" / name).mkdir(parents=True)
        write_jsonl(ns_server.root / "training" / name / "train.jsonl", ALPACA_ROWS[i:] + ALPACA_ROWS[:i])
    time.sleep(1.5)  # the server's directory cache (1 s) expires, so its listing shows the new folders
    alone = tmp_path / "alone"
    alone.mkdir()
    ws = ray_workspace(alone, ns_server, tiny_model_dir, ray_cluster, max_steps=300, resources={"lorakit_node_a": 1})
    began = time.monotonic()
    done = run_queue(ray_cluster, alone, ws)
    one = time.monotonic() - began
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert all("lorakit_node_a" in job["node"] for job in state(alone).values())
    print(f"\ntwo datasets of 300 steps: {both:.1f} s on two workers, {one:.1f} s on one")


def test_a_worker_killed_mid_training_its_job_finishes_on_the_other(tmp_path, ns_server, tiny_model_dir,
                                                                       ray_cluster):
    two_datasets(ns_server.root)
    ws = ray_workspace(tmp_path, ns_server, tiny_model_dir, ray_cluster, max_steps=400)
    node_b = ray_cluster.node_id("b")[:12]
    with (tmp_path / "driver.log").open("w") as out, (tmp_path / "driver.err").open("w") as err:
        driver = ray_cluster.popen([sys.executable, "-m", "lorakit", "queue", str(ws)], cwd=tmp_path, stdout=out,
                                   stderr=err)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "scratch" / node_b).glob("*/outputs/*/*/trainer_log.jsonl")):
        assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "driver.err").read_text()[-3000:]
        time.sleep(0.2)  # polling node b's scratch for a training that has logged a step
    on_b = next((tmp_path / "scratch" / node_b).iterdir()).name
    killed = time.monotonic()
    ray_cluster.kill("b")
    try:
        assert driver.wait(timeout=600) == 0, (tmp_path / "driver.err").read_text()[-3000:]
        after = time.monotonic() - killed
        jobs = state(tmp_path)
        assert all(job["state"] == "cleaned" for job in jobs.values())
        assert "lorakit_node_a" in jobs[on_b]["node"]  # finished on the other worker
        assert_each_result_once(ns_server, TWO)  # no second name, no dataset left or deleted twice
        claim = (ns_server.root / "output" / f"{on_b}-v1" / "queue-claim.txt").read_text().strip()
        assert claim == jobs[on_b]["claim"]
        spans = {n: (lambda t: (t[1] - t[0]).total_seconds())(training_interval(jobs[n])) for n in TWO}
        print(f"\nkilled node b during {on_b}'s training; the queue ended {after:.1f} s later; sent to trained: "
              + ", ".join(f"{n} {spans[n]:.1f} s" for n in TWO))
    finally:
        ray_cluster.start_node("b")  # the next test has both workers again


def test_test_mode_on_ray_deletes_nothing_and_a_later_run_cleans_up(tmp_path, ns_server, tiny_model_dir,
                                                                      ray_cluster):
    two_datasets(ns_server.root)
    ws = ray_workspace(tmp_path, ns_server, tiny_model_dir, ray_cluster)
    done = ray_cluster.run([sys.executable, "-m", "lorakit", "queue", str(ws), "--test"], cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert all(job["state"] == "uploaded" for job in state(tmp_path).values())
    assert len(list((ns_server.root / "training").rglob("*.jsonl"))) == 2  # the remote datasets stay
    assert len(list((tmp_path / "scratch").glob("*/*/outputs/*/*/adapter_model.safetensors"))) == 2  # and the nodes'
    done = run_queue(ray_cluster, tmp_path, ws)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert all(job["state"] == "cleaned" for job in state(tmp_path).values())
    assert_each_result_once(ns_server, TWO)  # checked against the nodes' records, then the datasets deleted


def test_an_external_trainer_runs_on_a_node_by_the_same_job_code(tmp_path, ns_server, ray_cluster):
    two_datasets(ns_server.root)
    (tmp_path / "train.py").write_text(
        "import pathlib, sys\nout = pathlib.Path(sys.argv[1])\ndata = pathlib.Path(sys.argv[2])\n"
        "rows = sum(1 for p in data.rglob('*.jsonl') for _ in p.open())\n"
        "(out / 'lora.safetensors').write_bytes(b'w' * rows)\n")
    ws = command_workspace(tmp_path, ns_server, f"{{python}} {tmp_path}/train.py {{output_dir}} {{dataset}}")
    ws.write_text(ws.read_text().replace("[trainer]", f'[queue]\nexecutor = "ray"\n[queue.ray]\naddress = '
                                          f'"{ray_cluster.address}"\nscratch = "{tmp_path / "scratch"}"\n'
                                          f'resources = {{ {JOB_RESOURCE} = 1 }}\n\n[trainer]'))
    done = run_queue(ray_cluster, tmp_path, ws)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in TWO:
        uploaded = ns_server.root / "output" / f"{name}-v1"
        assert (uploaded / "lora.safetensors").read_bytes() == b"w" * len(ALPACA_ROWS)  # trained on its dataset
        assert json.loads((uploaded / "manifest.json").read_text())["status"] == "completed"
        assert state(tmp_path)[name]["state"] == "cleaned" and state(tmp_path)[name]["node"]
    assert not [p for p in (ns_server.root / "training").rglob("*") if p.is_file()]


def test_an_unreachable_cluster_is_one_line(tmp_path, tiny_model_dir):
    from tests.integration.ray.conftest import free_port

    port = free_port()  # nothing listens there
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(tiny_model_dir)}}))
    (tmp_path / "rclone.conf").write_text("[srv]\ntype = local\n")
    ws = tmp_path / "workspace.toml"
    ws.write_text('work_dir = "work"\nconfig = "base.yaml"\n[remote]\ntraining = "srv:' + str(tmp_path / "in") +
                  '"\noutput = "srv:' + str(tmp_path / "out") + '"\nconfig = "rclone.conf"\n'
                  f'[queue]\nexecutor = "ray"\n[queue.ray]\naddress = "127.0.0.1:{port}"\n')
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(cli, ["queue", str(ws)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in lines[0], result.output
    assert "Traceback" not in result.output
