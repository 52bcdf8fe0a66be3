"""The checks behind the ray executor's deletions, against a real rclone (local remote): a result made on another
node is verified on the remote against the node's record of it (sizes and sha256 of the bytes there now), and a
job's claim keeps its upload target its own across retries."""

import json
import shutil

import pytest

from lorakit.queue.keep import CLAIM_FILE, Keeper, NotVerified
from lorakit.queue.on_node import result_record
from lorakit.remote.rclone import Rclone

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")
CONTENT = "c" * 64


@pytest.fixture
def keeper(tmp_path):
    conf = tmp_path / "rclone.conf"
    conf.write_text("[loc]\ntype = local\n")
    return Keeper(Rclone(conf), ("adapter_model.safetensors",))


def uploaded(tmp_path, run_id="run-1", content=CONTENT):
    """A run folder, its record, and its copy on the remote (loc:<tmp>/out/r)."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "adapter_model.safetensors").write_bytes(b"weights-1")
    (run / "manifest.json").write_text(json.dumps({"run_id": run_id, "dataset": {"sha256": content}}))
    record = result_record(run)
    shutil.copytree(run, tmp_path / "out" / "r")
    return record, f"loc:{tmp_path}/out/r"


def test_a_recorded_result_verifies_only_while_the_remote_holds_it_byte_for_byte(tmp_path, keeper):
    record, remote = uploaded(tmp_path)
    keeper.verify_recorded(record, remote, CONTENT)
    with pytest.raises(NotVerified, match="not trained on the data as downloaded"):
        keeper.verify_recorded(record, remote, "d" * 64)
    (tmp_path / "out" / "r" / "adapter_model.safetensors").write_bytes(b"weights-2")  # same size, other bytes
    with pytest.raises(NotVerified, match=r"adapter_model\.safetensors is not the file uploaded"):
        keeper.verify_recorded(record, remote, CONTENT)
    (tmp_path / "out" / "r" / "adapter_model.safetensors").unlink()
    with pytest.raises(NotVerified, match=r"lacks adapter_model\.safetensors"):
        keeper.verify_recorded(record, remote, CONTENT)
    with pytest.raises(NotVerified, match="never uploaded"):
        keeper.verify_recorded(record, None, CONTENT)


def test_remote_data_stays_when_the_recorded_result_does_not_verify(tmp_path, keeper):
    record, remote = uploaded(tmp_path)
    data = tmp_path / "training" / "alpha"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("{}\n")
    listed = {f.path: f for f in keeper.rclone.list_files(f"loc:{tmp_path}/training")}
    fingerprints = {"alpha/train.jsonl": {"size": listed["alpha/train.jsonl"].size,
                                          "hashes": listed["alpha/train.jsonl"].hashes}}
    (tmp_path / "out" / "r" / "manifest.json").write_text("{}")  # the result is not what was uploaded any more
    with pytest.raises(NotVerified):
        keeper.delete_remote_data(f"loc:{tmp_path}/training", ["alpha/train.jsonl"], fingerprints,
                                  lambda: keeper.verify_recorded(record, remote, CONTENT), lambda files: [])
    assert (data / "train.jsonl").is_file()


def test_a_claim_keeps_a_half_uploaded_target_the_jobs_own(tmp_path, keeper):
    _, remote = uploaded(tmp_path, run_id="run-of-a-dead-node")
    output = remote.rsplit("/", 1)[0]
    # Another run's manifest there, no claim: someone else's folder, so the result goes beside it.
    assert keeper.result_target(output, "r", "run-2", recorded=None, claim="job-claim") == f"{output}/r-2"
    (tmp_path / "out" / "r" / CLAIM_FILE).write_text("job-claim\n")
    # The same folder with this job's claim: an earlier attempt of this job, uploaded to again, never renamed.
    assert keeper.result_target(output, "r", "run-2", recorded=f"{output}/r", claim="job-claim") == f"{output}/r"
    assert keeper.result_target(output, "r", "run-2", recorded=None, claim="another-job") == f"{output}/r-2"
