"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against `lorakit ui`'s app served by
uvicorn on 127.0.0.1. Screenshots of the pages go to docs/screenshots/ (LORAKIT_SCREENSHOTS=0 skips them)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("starlette", reason="lorakit[ui] is not installed")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")]

from lorakit.outcome import Kind  # noqa: E402
from lorakit.ui.app import create_app  # noqa: E402
from lorakit.ui.catalog import item_id  # noqa: E402
from tests.conftest import ALPACA_ROWS, write_jsonl  # noqa: E402
from tests.unit.ui.test_app import fake_run  # noqa: E402

SHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
# Chromium as root on a machine with no network (../shared/design/INFRA-NOTES.md): no sandbox, no background calls.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """The app on uvicorn in a thread, as `lorakit ui` serves it."""

    def __init__(self, paths: list[Path], token: str | None = None) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(paths, token), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def shoot(page, name: str) -> None:
    if os.environ.get("LORAKIT_SCREENSHOTS", "1") != "0":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def visible_runs(page) -> list[str]:
    return page.eval_on_selector_all("#runs tbody tr", "rows => rows.filter(r => r.style.display !== 'none')"
                                                       ".map(r => r.dataset.name)")


def test_the_runs_list_filters_and_sorts(page, tmp_path):
    fake_run(tmp_path / "runs", "gemma-typst", model="gemma-3-270m")
    fake_run(tmp_path / "runs", "smol-typst", model="smollm2-135m")
    fake_run(tmp_path / "runs", "smol-oom", Kind.OUT_OF_MEMORY, model="smollm2-135m")
    broken = tmp_path / "runs" / "broken-v001"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"status": ')
    with Dashboard([tmp_path / "runs"]) as url:
        page.goto(url)
        assert sorted(visible_runs(page)) == ["broken-v001", "gemma-typst-v001", "smol-oom-v001", "smol-typst-v001"]
        assert "manifest.json unreadable" in page.inner_text("#runs")
        page.fill("#search", "typst")
        assert sorted(visible_runs(page)) == ["gemma-typst-v001", "smol-typst-v001"]
        page.fill("#search", "")
        page.select_option("#status", "failed")
        assert visible_runs(page) == ["smol-oom-v001"]
        page.select_option("#status", "")
        page.select_option("#model", "smollm2-135m")
        assert sorted(visible_runs(page)) == ["smol-oom-v001", "smol-typst-v001"]
        page.select_option("#model", "")
        page.click("th[data-key=name]")
        assert visible_runs(page) == sorted(visible_runs(page))
        shoot(page, "runs")


def test_compare_in_the_browser_shows_only_the_keys_that_differ(page, tmp_path):
    a = fake_run(tmp_path / "runs", "rank8", r=8)
    b = fake_run(tmp_path / "runs", "rank16", r=16)
    with Dashboard([tmp_path / "runs"]) as url:
        page.goto(url)
        page.check(f".tick[value='{item_id(a)}']")
        page.check(f".tick[value='{item_id(b)}']")
        page.click("text=compare ticked")
        page.wait_for_selector("#config-diff")
        keys = page.eval_on_selector_all("#config-diff th", "cells => cells.map(c => c.textContent)")
        assert keys == ["lora.r"]
        page.wait_for_selector("#cmp-loss .uplot")
        shoot(page, "compare")


def training(tmp_path: Path, model_dir: Path, steps: int) -> subprocess.Popen:
    write_jsonl(tmp_path / "train.jsonl", ALPACA_ROWS)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": "train.jsonl", "val_size": 0.25, "max_length": 64},
        "train": {"max_steps": steps, "micro_batch_size": 2, "grad_accum": 1, "lr": 0.01, "log_every": 1,
                  "eval_every": 25, "resumable": True, "resume_every": 25},
        "output": {"name": "live"}}))
    return subprocess.Popen([sys.executable, "-m", "lorakit", "train", "config.yaml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(run: Path) -> str:
    try:
        return json.loads((run / "manifest.json").read_text())["status"]
    except (OSError, ValueError):
        return ""


def test_a_live_run_grows_survives_a_reload_and_stops_from_the_page(page, tmp_path, tiny_model_dir):
    child = training(tmp_path, tiny_model_dir, steps=100_000)  # far more than it will run: the page stops it
    run = tmp_path / "runs" / "live-v001"
    try:
        wait_for(lambda: status_of(run) == "running" and (run / "trainer_log.jsonl").is_file(), 120, "training")
        with Dashboard([tmp_path / "runs"]) as url:
            page.goto(f"{url}/run/{item_id(run)}")
            points = lambda: int(page.get_attribute("#charts", "data-points") or 0)  # noqa: E731
            first = wait_for(points, 20, "the first points")
            # Live: new trainer_log.jsonl lines reach the open page without a reload (within ~1 s of being written).
            grown = wait_for(lambda: points() >= first + 20 and points(), 30, "the curve to grow")
            lines_now = len((run / "trainer_log.jsonl").read_text().splitlines())
            assert grown >= lines_now - 40  # the page is at most a few lines behind the file
            page.reload()
            # The whole history so far, not just what came after the reload.
            wait_for(lambda: points() >= grown, 20, "the whole history after the reload")
            assert page.inner_text("#status") == "running"
            shoot(page, "run")
            page.click("#stop")
            wait_for(lambda: child.poll() is not None, 60, "the training process to stop")
            wait_for(lambda: page.inner_text("#status") == "interrupted", 10, "the page to show interrupted")
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "interrupted" and manifest["status_history"][-1]["reason"] == "Ctrl+C"
        assert (run / "resume_state.pt").is_file() and (run / "adapter_model.safetensors").is_file()
    finally:
        if child.poll() is None:
            child.kill()
    stopped_at = manifest["metrics"]["train_steps"]
    # `lorakit train --resume` continues it; stopped again, this time by `lorakit runs stop` (the same code).
    resumed = subprocess.Popen([sys.executable, "-m", "lorakit", "train", "--resume", str(run)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any((h.get("reason") or "").startswith("resumed after step")
                             for h in json.loads((run / "manifest.json").read_text())["status_history"]), 120,
                 "the resume")
        said = subprocess.run([sys.executable, "-m", "lorakit", "runs", "stop", str(run)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert said.returncode == 0, said.stdout + said.stderr
        wait_for(lambda: resumed.poll() is not None, 60, "the resumed run to stop")
    finally:
        if resumed.poll() is None:
            resumed.kill()
    history = json.loads((run / "manifest.json").read_text())["status_history"]
    resumed_after = [h["reason"] for h in history if (h.get("reason") or "").startswith("resumed after step")]
    assert resumed_after and int(resumed_after[0].rsplit(" ", 1)[1]) <= stopped_at
    assert history[-1]["status"] == "interrupted"


def test_a_run_killed_without_a_word_turns_crashed_on_the_open_page(page, tmp_path, tiny_model_dir):
    child = training(tmp_path, tiny_model_dir, steps=100_000)
    run = tmp_path / "runs" / "live-v001"
    try:
        wait_for(lambda: status_of(run) == "running" and (run / "trainer_log.jsonl").is_file(), 120, "training")
        with Dashboard([tmp_path / "runs"]) as url:
            page.goto(f"{url}/run/{item_id(run)}")
            wait_for(lambda: page.inner_text("#status") == "running", 20, "the page to show running")
            child.kill()  # SIGKILL: the process writes nothing more, its manifest still says running
            child.wait(timeout=60)
            wait_for(lambda: page.inner_text("#status") == "crashed", 10, "the page to show crashed, unreloaded")
            assert page.is_disabled("#stop")
            page.goto(url)
            assert page.get_attribute("tr[data-name='live-v001']", "data-status") == "crashed"
    finally:
        if child.poll() is None:
            child.kill()
    assert status_of(run) == "running"  # shown crashed; the manifest is as the process left it


def test_sweep_and_queue_pages_render_from_what_is_on_disk(page, tmp_path):
    run = fake_run(tmp_path / "outputs" / "cats", "cats-v1")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".lorakit-queue.json").write_text(json.dumps({"jobs": {
        "cats": {"name": "cats", "source": "folder", "state": "cleaned", "run_dir": str(run),
                 "remote_output": "srv:output/cats-v1", "history": [{"state": "downloaded", "at": "t1"}]},
        "dogs": {"name": "dogs", "source": "folder", "state": "failed", "error": "the trainer produced no model file"},
    }}))
    junk = {"level": "warning", "message": "queue: 'notes.txt' is neither a dataset folder nor an archive; left alone"}
    (work / ".lorakit-queue-notices.jsonl").write_text("".join(json.dumps(n) + "\n" for n in (
        {"at": "t0", **junk}, {"at": "t1", **junk},
        {"at": "t2", "level": "warning", "message": "kept work/dogs: it holds 1 file(s) the queue did not download"},
        {"at": "t3", **junk})))
    workspace = tmp_path / "ws.toml"
    workspace.write_text('work_dir = "work"\noutput_dir = "outputs"\n')
    with Dashboard([workspace]) as url:
        page.goto(f"{url}/queue/{item_id(workspace)}")
        text = page.inner_text("#queue")
        assert "cleaned" in text and "srv:output/cats-v1" in text and "the trainer produced no model file" in text
        notices = page.inner_text("#notices").splitlines()
        assert len(notices) == 2 and "kept work/dogs: it holds 1 file(s)" in notices[0]
        assert notices[1].endswith("left alone (3 times since t0)")  # said on every run: one line, newest place
        page.click("text=cats-v1-v001")
        assert page.inner_text("h1").startswith("cats-v1-v001")
        page.goto(f"{url}/queue/{item_id(workspace)}")
        shoot(page, "queue")


def test_a_new_log_line_reaches_an_open_page_within_two_seconds(page, tmp_path):
    run = fake_run(tmp_path / "runs", "latency", Kind.RUNNING, steps=3)
    log = run / "trainer_log.jsonl"
    with Dashboard([tmp_path / "runs"]) as url:
        page.goto(f"{url}/run/{item_id(run)}")
        page.wait_for_function("document.getElementById('charts').dataset.points == '4'")
        delays = []
        for step in range(4, 9):
            with log.open("a") as f:
                f.write(json.dumps({"current_steps": step, "total_steps": 8, "loss": 1.0 / step}) + "\n")
            began = time.perf_counter()
            page.wait_for_function(f"document.getElementById('charts').dataset.points == '{step + 1}'", timeout=5000)
            delays.append(time.perf_counter() - began)
    print(f"new trainer_log.jsonl line to the open page: {max(delays):.2f} s at most, {sum(delays) / 5:.2f} s mean")
    assert max(delays) < 2.0  # the bound; the server looks every 0.5 s and the page redraws after 0.1 s


def test_the_sweep_page_lists_trials_with_the_best_marked(page, tmp_path, tiny_model_dir):
    write_jsonl(tmp_path / "train.jsonl", ALPACA_ROWS)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train": "train.jsonl", "val_size": 0.25, "max_length": 64},
        "train": {"max_steps": 3, "micro_batch_size": 2, "grad_accum": 1, "eval_every": 1, "log_every": 1}}))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"train.lr": [0.001, 0.03], "sampler": "grid",
                                                         "pruner": "none"}))
    done = subprocess.run([sys.executable, "-m", "lorakit", "sweep", "config.yaml", "--space", "space.yaml",
                           "--name", "lr"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    journal = tmp_path / "sweeps" / "lr" / "journal.log"
    before = journal.read_bytes()
    with Dashboard([tmp_path / "runs", tmp_path / "sweeps"]) as url:
        page.goto(f"{url}/sweep/{item_id(tmp_path / 'sweeps' / 'lr')}")
        rows = page.eval_on_selector_all("#trials tr", "rows => rows.map(r => r.className + '|' + r.innerText)")
        assert len(rows) == 3 and sum(r.startswith("best|") for r in rows) == 1, rows
        assert all("train.lr=" in r for r in rows[1:]) and all("complete" in r for r in rows[1:])
        page.wait_for_selector("#trial-curves .uplot")
        shoot(page, "sweep")
        best_run = page.inner_text("#trials tr.best a")
        page.click("#trials tr.best a")
        assert page.inner_text("h1").startswith(best_run)
    assert journal.read_bytes() == before  # the dashboard read a copy of the journal
