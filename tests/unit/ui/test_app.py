"""The dashboard's pages over fabricated run folders (no browser): what it lists, what it refuses, what it survives."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="lorakit[ui] is not installed")
from starlette.testclient import TestClient

from lorakit.outcome import Kind, Outcome
from lorakit.runs.folder import RunFolder
from lorakit.ui.app import create_app
from lorakit.ui.catalog import item_id


def fake_run(root: Path, name: str, status: Kind = Kind.COMPLETED, steps: int = 3, **fields) -> Path:
    """A run folder as lorakit writes one, without training: manifest, log lines, a sample file."""
    run = RunFolder.create(root, name, config={"model": {"name_or_path": "tiny"}, "lora": {"r": fields.pop("r", 8)},
                                               "train": {"lr": 0.01}},
                           data_files={"train.jsonl": "ab" * 32}, base_model={"name": fields.pop("model", "tiny")},
                           total_steps=steps, **fields)
    run.start()
    log = run.trainer_log.path
    log.write_text("".join(json.dumps({"current_steps": s, "total_steps": steps, "loss": 2.0 / s}) + "\n"
                           for s in range(1, steps + 1)) +
                   json.dumps({"current_steps": steps, "total_steps": steps, "eval_loss": 1.5}) + "\n")
    (run.path / "samples").mkdir()
    for step in (1, steps):
        (run.path / "samples" / f"step-{step:06d}.jsonl").write_text(
            json.dumps({"prompt": "x^2", "output": f"answer at step {step}"}) + "\n")
    if status is not Kind.RUNNING:
        run.end(Outcome(status, "" if status is Kind.COMPLETED else f"{status.value} for the test"), card=False,
                metrics={"train_steps": steps, "train_loss": 2.0 / steps, "eval_loss": 1.5})
    return run.path


def client(*paths: Path, token: str | None = None) -> TestClient:
    return TestClient(create_app(list(paths), token))


def test_the_runs_page_lists_both_layouts_with_status_reason_and_losses(tmp_path):
    fake_run(tmp_path / "runs", "alpha")
    fake_run(tmp_path / "runs", "beta", Kind.OUT_OF_MEMORY)
    fake_run(tmp_path / "outputs" / "cats", "cats-v1", Kind.COMPLETED)  # the queue's layout
    page = client(tmp_path / "runs", tmp_path / "outputs").get("/").text
    for name in ("alpha-v001", "beta-v001", "cats-v1-v001"):
        assert f">{name}</a>" in page
    assert "out-of-memory for the test" in page and 'data-status="failed"' in page
    assert 'data-train_loss="0.6666666666666666"' in page


def test_a_corrupt_manifest_is_one_unreadable_row_and_its_page_says_why(tmp_path):
    good = fake_run(tmp_path / "runs", "good")
    broken = tmp_path / "runs" / "broken-v001"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"name": "broken-v001", "status": ')  # killed mid-write
    app = client(tmp_path / "runs")
    listing = app.get("/")
    assert listing.status_code == 200 and "good-v001" in listing.text
    assert "manifest.json unreadable" in listing.text
    page = app.get(f"/run/{item_id(broken)}")
    assert page.status_code == 200 and "manifest.json unreadable" in page.text
    assert app.get(f"/run/{item_id(good)}").status_code == 200


def test_the_log_api_gives_the_whole_history_for_a_page_opened_mid_run(tmp_path):
    run = fake_run(tmp_path / "runs", "live", Kind.RUNNING, steps=5)
    log = client(tmp_path / "runs").get(f"/api/run/{item_id(run)}/log").json()
    assert [e["current_steps"] for e in log["train"]] == [1, 2, 3, 4, 5]
    assert log["eval"][0]["eval_loss"] == 1.5 and log["status"] == "running"
    assert log["offset"] == (run / "trainer_log.jsonl").stat().st_size


def test_beyond_loopback_every_request_needs_the_token(tmp_path):
    run = fake_run(tmp_path / "runs", "secret")
    app = client(tmp_path / "runs", token="s3cret")
    for path in ("/", f"/run/{item_id(run)}", f"/api/run/{item_id(run)}/log", f"/api/run/{item_id(run)}/events",
                 "/static/app.js"):
        assert app.get(path).status_code == 401, path
    assert app.get("/?token=wrong").status_code == 401
    opened = app.get("/?token=s3cret")
    assert opened.status_code == 200 and "secret-v001" in opened.text
    assert app.get(f"/api/run/{item_id(run)}/log").status_code == 200  # the cookie the first page set


def test_actions_come_only_from_the_dashboards_own_pages(tmp_path):
    run = fake_run(tmp_path / "runs", "noted")
    app = client(tmp_path / "runs")
    forged = app.post(f"/api/run/{item_id(run)}/note", json={"text": "from another site"})
    assert forged.status_code == 403
    said = app.post(f"/api/run/{item_id(run)}/note", json={"text": "lr 1e-3 was better"}, headers={"X-Lorakit": "1"})
    assert said.json()["ok"], said.text
    assert json.loads((run / "manifest.json").read_text())["notes"][-1]["text"] == "lr 1e-3 was better"
    refused = app.post(f"/api/run/{item_id(run)}/stop", headers={"X-Lorakit": "1"})
    assert refused.status_code == 409 and "not training" in refused.json()["message"]


def test_compare_shows_only_the_config_keys_that_differ(tmp_path):
    a = fake_run(tmp_path / "runs", "a", r=8)
    b = fake_run(tmp_path / "runs", "b", r=16)
    page = client(tmp_path / "runs").get(f"/compare?run={item_id(a)}&run={item_id(b)}").text
    differing = page.split('id="config-diff"')[1].split("</table>")[0]
    assert "lora.r" in differing and "train.lr" not in differing and "model.name_or_path" not in differing
    for run, answer in ((a, "x^3"), (b, "x^2")):  # lorakit eval's predictions, as it writes them
        (run / "eval").mkdir()
        (run / "eval" / "dev.jsonl").write_text(json.dumps({"reference": "x^2", run.name: answer}) + "\n")
    page = client(tmp_path / "runs").get(f"/compare?run={item_id(a)}&run={item_id(b)}").text
    predictions = page.split("Predictions on dev")[1]
    assert "x^3" in predictions and '<tr class="differs">' in predictions


def test_the_dashboard_writes_nothing_when_looked_at(tmp_path):
    fake_run(tmp_path / "runs", "a")
    broken = tmp_path / "runs" / "broken-v001"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    app = client(tmp_path / "runs")
    for path in ["/", *(f"/run/{item_id(r)}" for r in (tmp_path / "runs").iterdir())]:
        app.get(path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_a_thousand_runs_are_listed_in_under_a_second(tmp_path):
    root = tmp_path / "runs"
    template = fake_run(root, "template")
    for i in range(999):  # copies of one real run folder: what is timed is reading, not making them
        copy = root / f"run{i:04d}-v001"
        copy.mkdir()
        for f in template.iterdir():
            if f.is_file():
                (copy / f.name).write_bytes(f.read_bytes())
    app = client(root)
    app.get("/")  # the first request pays for imports and template compilation
    times = []
    for _ in range(3):  # the best of three: what the listing costs, not what a busy machine adds to it
        began = time.perf_counter()
        page = app.get("/")
        times.append(time.perf_counter() - began)
    assert page.text.count("<tr data-status") == 1000
    print(f"1,000 runs listed in {min(times):.3f} s (best of 3; {max(times):.3f} s at worst)")
    # The bound. Measured 0.19 s on an idle 2-core machine; one run at 1.05 s when CI, a quickstart
    # and other tests shared those 2 cores, hence the best of three.
    assert min(times) < 1.0


def test_the_run_page_shows_samples_side_by_side_and_a_failed_runs_log_tail(tmp_path):
    run = fake_run(tmp_path / "runs", "broke", Kind.FAILED, steps=4)
    (run / "trainer.log").write_text("loading\nstep 1\nTraceback (most recent call last):\nRuntimeError: boom\n")
    (run / "val_answers").mkdir()
    for step, answer in ((0, "x"), (4, "x^2")):
        (run / "val_answers" / f"step-{step:06d}.jsonl").write_text(
            json.dumps({"prompt": "$x^2$", "reference": "x^2", "output": answer}) + "\n")
    page = client(tmp_path / "runs").get(f"/run/{item_id(run)}").text
    answers = page.split('id="answers"')[1].split("</table>")[0]
    assert "step 0</th>" in answers and "step 4</th>" in answers
    assert '<td class="differs"><pre>x</pre>' in answers and '<td class="same"><pre>x^2</pre>' in answers
    assert "failed for the test" in page  # the one-line reason
    assert "step 1</th>" in page and "step 4</th>" in page
    assert "answer at step 1" in page and "answer at step 4" in page
    assert "RuntimeError: boom" in page.split("Log tail")[1]


def test_a_corrupt_queue_state_or_sweep_journal_is_shown_as_unreadable(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / ".lorakit-queue.json").write_text('{"jobs": {"cats": ')
    workspace = tmp_path / "ws.toml"
    workspace.write_text('work_dir = "work"\noutput_dir = "outputs"\n')
    sweep = tmp_path / "sweeps" / "lr"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text('{"name": "lr"')
    app = client(workspace, tmp_path / "sweeps")
    queue_page = app.get(f"/queue/{item_id(workspace)}")
    assert queue_page.status_code == 200 and ".lorakit-queue.json unreadable" in queue_page.text
    sweep_page = app.get(f"/sweep/{item_id(sweep)}")
    assert sweep_page.status_code == 200 and "unreadable" in sweep_page.text
    assert (tmp_path / "work" / ".lorakit-queue.json").read_text() == '{"jobs": {"cats": '  # left as it was


def test_lineage_names_the_parent_the_resumes_the_sweep_and_the_exports(tmp_path):
    run = fake_run(tmp_path / "runs", "child", parent={"name": "typst-v001", "path": "runs/typst-v001"},
                   resumes=[{"from_step": 40}], sweep={"name": "lr", "trial": 3})
    (run / "gguf").mkdir()
    (run / "gguf" / "child-v001-q4_k_m.gguf").write_bytes(b"GGUF")
    page = client(tmp_path / "runs").get(f"/run/{item_id(run)}").text
    for line in ("continued from typst-v001", "resumed after step 40", "sweep lr#3",
                 "exported gguf/child-v001-q4_k_m.gguf"):
        assert line in page, line
