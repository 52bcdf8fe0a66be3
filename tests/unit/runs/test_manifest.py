import json

from lorakit.runs.manifest import Manifest


def test_status_changes_are_saved_with_timestamps(tmp_path):
    manifest = Manifest.create(tmp_path, name="r")
    manifest.set_status("running")
    manifest.set_status("failed", "loss diverged at step 3")
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
