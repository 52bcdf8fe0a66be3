import json

import pytest

from lorakit.outcome import Kind, Outcome
from lorakit.runs.folder import RunFolder
from lorakit.runs.manifest import Manifest, outcome_of


def test_status_changes_are_saved_with_timestamps(tmp_path):
    manifest = Manifest.create(tmp_path, name="r")
    manifest.set_status(Outcome(Kind.RUNNING))
    manifest.set_status(Outcome(Kind.FAILED, "loss diverged at step 3"))
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["status"] == "failed"
    assert [s["status"] for s in on_disk["status_history"]] == ["created", "running", "failed"]
    assert on_disk["status_history"][-1]["reason"] == "loss diverged at step 3"
    assert all("at" in s for s in on_disk["status_history"])
    assert Manifest.load(tmp_path).data == on_disk


def test_writes_leave_no_temporary_files(tmp_path):
    manifest = Manifest.create(tmp_path, name="r")
    for i in range(5):
        manifest.update(step=i)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_an_outcome_is_read_back_by_its_kind_whatever_its_sentence_says(tmp_path):
    run = RunFolder.create(tmp_path, "r")
    run.end(Outcome(Kind.PRUNED, "the pruner stopped this trial (reworded)", {"step": 40}), card=False)
    again = RunFolder.open(run.path)
    assert again.status == "completed"  # pruned runs are complete: their adapter is a result
    assert again.outcome == Outcome(Kind.PRUNED, "the pruner stopped this trial (reworded)", {"step": 40})


@pytest.mark.parametrize(("entry", "kind"), [
    ({"status": "completed", "reason": "pruned at step 40"}, Kind.PRUNED),
    ({"status": "completed", "reason": "stopped early at step 8: eval_loss did not improve"}, Kind.EARLY_STOPPED),
    ({"status": "completed"}, Kind.COMPLETED),
    ({"status": "interrupted", "reason": "SIGTERM"}, Kind.STOPPED),
    ({"status": "failed", "reason": "out of memory at step 3 after trying: nothing"}, Kind.OUT_OF_MEMORY),
    ({"status": "failed", "reason": "loss is nan"}, Kind.FAILED),
    ({"status": "cancelled", "reason": "scancel of Slurm job 7"}, Kind.CANCELLED),
    ({"status": "submitted", "reason": "Slurm job 7"}, Kind.SUBMITTED),
])
def test_manifests_written_before_typed_outcomes_still_read(entry, kind):
    old = {"status": entry["status"], "status_history": [{"status": "created", "at": "t0"}, {**entry, "at": "t1"}]}
    outcome = outcome_of(old)
    assert outcome.kind is kind and outcome.status == entry["status"]
    assert outcome.reason == entry.get("reason", "")
