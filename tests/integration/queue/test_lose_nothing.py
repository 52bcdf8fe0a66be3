"""The queue loses nothing: deletions only against a result verified at that moment, no result overwritten,
kills at every point inside a stage, name clashes failing alone. Against a real rclone WebDAV server (no
hashes: bytes are compared) and a local remote (hashes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from lorakit import faults
from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.integration.queue.conftest import CUT_SHORT, command_workspace, cut_short

JOBS = ("alpha", "beta", "delta", "gamma")


def queue(*args):
    return CliRunner().invoke(cli, ["queue", *[str(a) for a in args]])


def queue_process(tmp_path, workspace, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if kill_at:
        env.update(faults.arm(CUT_SHORT.get(kill_at, kill_at)))
    return subprocess.run([sys.executable, "-m", "lorakit.cli.main", "queue", str(workspace)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)


def state(tmp_path):
    return json.loads((tmp_path / "work" / ".lorakit-queue.json").read_text())["jobs"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.is_dir() else {}


def results(server) -> dict[str, dict]:
    """Every folder under output/: its files, and the run id of its manifest (None: no manifest yet)."""
    out = {}
    for folder in sorted((server.root / "output").iterdir()) if (server.root / "output").is_dir() else []:
        files = snapshot(folder)
        manifest = json.loads(files["manifest.json"]) if "manifest.json" in files else {}
        out[folder.name] = {"files": files, "run_id": manifest.get("run_id"), "status": manifest.get("status")}
    return out


def foreign_result(folder: Path, adapter: bytes) -> dict[str, bytes]:
    """Another run's result, already on the remote under the name this queue would use."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"run_id": "f" * 32, "name": folder.name, "status": "completed"}))
    (folder / "adapter_model.safetensors").write_bytes(adapter)
    return snapshot(folder)


# -- kills inside the stages ------------------------------------------------------------------------------------

KILL_POINTS = [  # (where the queue dies, the job it is working on then)
    ("during-upload", "alpha"),  # half of the adapter on the remote, no manifest yet
    ("before-delete:remote-data", "alpha"),  # verified, nothing deleted yet
    ("during-delete:remote-data", "alpha"),  # one of its three remote files deleted
    ("before-delete:local-data", "alpha"),
    ("delete:local-data:2", "alpha"),  # one of its three local files deleted, killed before the second
    ("before-delete:local-run", "alpha"),
    ("during-upload", "beta"),  # its name is taken by another run: beta-v1-2, recorded before the upload
    ("before-delete:download", "delta"),  # the archive unpacked, not yet deleted
]


def check_nothing_lost(tmp_path, server, originals, foreign, final=False):
    """Each dataset exists whole somewhere until its result is verified on the remote; each result exists once,
    under a name no other run uses; another run's result is untouched."""
    found = results(server)
    assert found["beta-v1"]["files"] == foreign, "another run's result was changed"
    jobs = state(tmp_path)
    owners: dict[str, list[str]] = {}
    for name, result in found.items():
        if result["run_id"] is not None:
            owners.setdefault(result["run_id"], []).append(name)
        else:  # a partial upload: only where a job recorded it would upload before it began
            assert any(j.get("upload_to", "").endswith(f"/{name}") for j in jobs.values()), name
    assert all(len(names) == 1 for names in owners.values()), owners  # no result twice
    for job in JOBS:
        remote = {k: v for k, v in originals.items() if k.split("/")[0] in (job, f"{job}.zip")}
        on_remote = all((server.root / "training" / k).is_file() and (server.root / "training" / k).read_bytes() == v
                        for k, v in remote.items())
        local = tmp_path / "work" / job
        downloaded = (tmp_path / "work" / ".downloads" / f"{job}.zip")
        on_disk = (downloaded.is_file() or (local.is_dir() and all(
            (local / k.split("/", 1)[1]).is_file() for k in remote if "/" in k)))
        if on_remote or on_disk:
            continue
        # The data is gone: its result must be on the remote, whole, with the adapter.
        run_dir = Path(jobs[job]["run_dir"])
        held = [n for n, r in found.items() if r["status"] == "completed" and r["run_id"] != "f" * 32
                and json.loads(r["files"]["manifest.json"])["name"].startswith(f"{job}-v1")]
        assert len(held) == 1, (job, held)
        if run_dir.is_dir():
            assert found[held[0]]["files"] == snapshot(run_dir)
        assert found[held[0]]["files"]["adapter_model.safetensors"]
    if final:
        assert sorted(found) == ["alpha-v1", "beta-v1", "beta-v1-2", "delta-v1", "gamma-v1"]
        assert all(jobs[j]["state"] == "cleaned" for j in JOBS)
        assert not any((server.root / "training").iterdir())
        assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


def test_killed_inside_upload_and_clean_up_the_queue_finishes_and_loses_nothing(tmp_path, server, workspace):
    (server.root / "training" / "alpha" / "more.jsonl").write_text((server.root / "training" / "alpha" /
                                                                     "train.jsonl").read_text())
    (server.root / "training" / "alpha" / "notes.md").write_text("where these rows came from\n")
    foreign = foreign_result(server.root / "output" / "beta-v1", b"another run's adapter")
    originals = snapshot(server.root / "training")
    for point, job in KILL_POINTS:
        done = queue_process(tmp_path, workspace, kill_at=point)
        assert done.returncode == -9, (point, done.stderr[-3000:])
        cut_short(point, tmp_path / "work", server.root)
        assert state(tmp_path)[job]["state"] in ("trained", "uploaded", "unpacked", "downloaded"), point
        check_nothing_lost(tmp_path, server, originals, foreign)
    partial = results(server)
    assert state(tmp_path)["beta"]["upload_to"] == "srv:output/beta-v1-2"  # recorded before the first byte
    done = queue_process(tmp_path, workspace)
    assert done.returncode == 0, done.stderr[-3000:]
    check_nothing_lost(tmp_path, server, originals, foreign, final=True)
    assert "beta-v1-2" in partial  # the retry finished the partial upload in place, under the recorded name
    assert "srv:output/beta-v1 holds another run: uploaded as beta-v1-2" in done.stdout
    # ... and kept beside the state, for the dashboard's queue page once this terminal is gone
    from lorakit.queue.notices import read_notices

    assert any("uploaded as beta-v1-2" in n["message"] for n in read_notices(tmp_path / "work"))


# -- the scenarios that lost data before --------------------------------------------------------------------


def test_without_an_output_remote_nothing_is_deleted_and_turning_clean_up_on_is_an_error(tmp_path, server,
                                                                                          workspace):
    workspace.write_text(workspace.read_text().replace('output = "srv:output"\n', ""))
    originals = snapshot(server.root / "training")
    result = queue(workspace, "--only", "alpha", "--only", "delta")
    assert result.exit_code == 0, result.output
    assert "no remote.output: results stay in" in result.output and "nothing is deleted" in result.output
    assert snapshot(server.root / "training") == originals  # the remote data, all of it
    assert (tmp_path / "work" / "alpha" / "train.jsonl").is_file() and (tmp_path / "work" / "delta").is_dir()
    for name in ("alpha", "delta"):
        assert (Path(state(tmp_path)[name]["run_dir"]) / "adapter_model.safetensors").is_file()

    turned_on = workspace.read_text() + "[cleanup]\nlocal_data = true\n"
    workspace.write_text(turned_on)
    refused = queue(workspace)
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [
        f"error: invalid workspace {workspace}: cleanup.local_data = true needs remote.output: without an uploaded, "
        "verified result the data and the run would be the only copies; set remote.output or remove it"]


def test_a_folder_put_into_work_dir_by_hand_is_never_deleted(tmp_path, tiny_model_dir, server, workspace):
    (tmp_path / "work" / "mine").mkdir(parents=True)
    mine = write_jsonl(tmp_path / "work" / "mine" / "rows.jsonl", ALPACA_ROWS)
    before = mine.read_bytes()
    result = queue(workspace, "--only", "mine")
    assert result.exit_code == 0, result.output
    assert state(tmp_path)["mine"]["state"] == "cleaned"
    assert (server.root / "output" / "mine-v1" / "adapter_model.safetensors").is_file()
    assert mine.read_bytes() == before  # the only copy of that data

    alone = tmp_path / "alone.toml"  # no [remote] at all
    alone.write_text('work_dir = "work"\noutput_dir = "local-outputs"\nconfig = "base.yaml"\n')
    result = queue(alone, "--only", "mine")
    assert result.exit_code == 0, result.output
    assert mine.read_bytes() == before


def test_a_stale_uploaded_state_uploads_again_before_deleting_anything(tmp_path, server, workspace):
    first = queue(workspace, "--test", "--only", "alpha", "--only", "beta")
    assert first.exit_code == 0, first.output
    jobs = state(tmp_path)
    assert jobs["alpha"]["state"] == jobs["beta"]["state"] == "uploaded"
    adapters = {n: (Path(jobs[n]["run_dir"]) / "adapter_model.safetensors").read_bytes() for n in ("alpha", "beta")}
    # The result is gone from the remote, or changed there without its size changing (WebDAV has no hashes).
    subprocess.run(["rm", "-r", str(server.root / "output" / "alpha-v1")], check=True)
    spoiled = server.root / "output" / "beta-v1" / "adapter_model.safetensors"
    spoiled.write_bytes(bytes(len(spoiled.read_bytes())))

    second = queue(workspace, "--only", "alpha", "--only", "beta")
    assert second.exit_code == 0, second.output
    for name in ("alpha", "beta"):
        uploaded = server.root / "output" / f"{name}-v1" / "adapter_model.safetensors"
        assert uploaded.read_bytes() == adapters[name]  # uploaded again, and whole, before the data went
        assert state(tmp_path)[name]["state"] == "cleaned"
        assert not (server.root / "training" / name).exists()


def test_a_trainer_that_exits_0_without_a_model_fails_and_keeps_the_data(tmp_path, server):
    (tmp_path / "nothing.py").write_text("print('all done')\n")
    (tmp_path / "t.toml").write_text('[general]\noutput_name = "{output_name}"\n')
    (server.root / "training" / "cats").mkdir(parents=True)
    (server.root / "training" / "cats" / "1.png").write_bytes(b"png")
    ws = command_workspace(tmp_path, server, f"{{python}} {tmp_path}/nothing.py", trainer_config="t.toml")
    result = queue(ws)
    assert result.exit_code == 1
    job = state(tmp_path)["cats"]
    assert job["state"] == "failed" and "produced no model file" in job["error"]
    assert (server.root / "training" / "cats" / "1.png").is_file() and (tmp_path / "work" / "cats" / "1.png").is_file()
    assert not (server.root / "output").exists() or not any((server.root / "output").iterdir())
    manifest = json.loads(next((tmp_path / "outputs" / "cats").glob("*/manifest.json")).read_text())
    assert manifest["status"] == "failed" and "produced no model file" in manifest["status_history"][-1]["reason"]


def test_an_earlier_result_of_the_same_name_is_never_overwritten_on_webdav(tmp_path, server, workspace):
    foreign = foreign_result(server.root / "output" / "alpha-v1", b"last week's adapter")
    result = queue(workspace, "--only", "alpha")
    assert result.exit_code == 0, result.output
    assert snapshot(server.root / "output" / "alpha-v1") == foreign
    assert (server.root / "output" / "alpha-v1-2" / "adapter_model.safetensors").stat().st_size > 1000
    assert state(tmp_path)["alpha"]["remote_output"] == "srv:output/alpha-v1-2"
    assert "srv:output/alpha-v1 holds another run: uploaded as alpha-v1-2" in result.output
    assert not (server.root / "training" / "alpha").exists()  # verified under its own name, then cleaned


def test_an_earlier_result_of_the_same_name_is_never_overwritten_on_a_remote_with_hashes(tmp_path, server,
                                                                                         workspace):
    store = tmp_path / "store"
    foreign = foreign_result(store / "output" / "alpha-v1", b"last week's adapter")
    (store / "output" / "alpha-v1-2").mkdir()
    (store / "output" / "alpha-v1-2" / "notes.txt").write_text("someone's files, no manifest\n")
    conf = tmp_path / "rclone.conf"
    conf.write_text(conf.read_text() + "[hashed]\ntype = local\n")
    workspace.write_text(workspace.read_text().replace('output = "srv:output"', f'output = "hashed:{store}/output"'))
    result = queue(workspace, "--only", "alpha")
    assert result.exit_code == 0, result.output
    assert snapshot(store / "output" / "alpha-v1") == foreign
    assert (store / "output" / "alpha-v1-2" / "notes.txt").read_text() == "someone's files, no manifest\n"
    assert json.loads((store / "output" / "alpha-v1-3" / "manifest.json").read_text())["status"] == "completed"
    assert state(tmp_path)["alpha"]["remote_output"] == f"hashed:{store}/output/alpha-v1-3"


def test_two_remote_entries_of_one_name_fail_both_alone_and_nothing_is_touched(tmp_path, server, workspace):
    (server.root / "training" / "alpha.zip").write_bytes((server.root / "training" / "delta.zip").read_bytes())
    (server.root / "training" / "epsilon.zip").write_bytes((server.root / "training" / "delta.zip").read_bytes())
    (server.root / "training" / "epsilon.tar.gz").write_bytes(b"not really a tarball")
    mine = tmp_path / "work" / "beta" / "mine.txt"  # put there by hand, beside a remote dataset called beta
    mine.parent.mkdir(parents=True)
    mine.write_text("my own notes\n")
    originals = snapshot(server.root / "training")
    result = queue(workspace)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    jobs = state(tmp_path)
    assert "holds alpha/ and alpha.zip, all named 'alpha'" in jobs["alpha"]["error"]
    assert "holds epsilon.tar.gz and epsilon.zip, all named 'epsilon'" in jobs["epsilon"]["error"]
    assert "exists already but was not downloaded by the queue" in jobs["beta"]["error"]
    assert all(jobs[n]["state"] == "failed" for n in ("alpha", "beta", "epsilon"))
    assert jobs["delta"]["state"] == jobs["gamma"]["state"] == "cleaned"  # the rest of the queue went on
    left = snapshot(server.root / "training")
    assert left == {k: v for k, v in originals.items() if not k.startswith(("delta", "gamma"))}
    assert mine.read_text() == "my own notes\n" and sorted(p.name for p in mine.parent.iterdir()) == ["mine.txt"]
