"""lorakit runs list / show / diff / clean / note on real run folders."""

import json
import os
import shutil
from datetime import datetime

from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.unit.cli.test_train import invoke, make_config
from tests.unit.runs.test_provenance import git, repo  # noqa: F401  (the fixture)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_list_show_and_diff_a_pair_of_runs(tmp_path, tiny_model_dir, repo):  # noqa: F811
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 3}, tracking={"repos": {"trainer": str(repo)}})
    assert invoke("train", config).exit_code == 0
    (repo / "train.py").write_text("print('v2')\n")
    git(repo, "-c", "user.email=a@b.c", "-c", "user.name=a", "commit", "-q", "-am", "third")
    write_jsonl(tmp_path / "train.jsonl", ALPACA_ROWS[::-1])  # same file, new content
    assert invoke("train", config, "--set", "lora.r=8", "--set", "train.lr=0.005").exit_code == 0

    listed = json.loads(run("runs", "list", "--json").output)
    assert [r["name"] for r in listed] == ["tiny-v001", "tiny-v002"]
    assert all(r["status"] == "completed" and r["steps"] == "3/3" and r["size_bytes"] > 0 for r in listed)
    assert listed[0]["data"] == "train.jsonl" and listed[0]["base_model"] == str(tiny_model_dir.resolve())
    table = run("runs", "list").output
    assert "tiny-v001" in table and "completed" in table and "KiB" in table
    assert run("runs", "list", "--status", "failed").output.startswith("no runs in runs/ with status failed")

    shown = json.loads(run("runs", "show", "tiny", "--json").output)  # a bare name: its latest version
    assert shown["name"] == "tiny-v002"
    summary = run("runs", "show", "tiny-v001").output  # the run page's summary, not hundreds of JSON lines
    assert summary.startswith("tiny-v001  completed\n") and len(summary.splitlines()) < 60
    digest = json.loads(run("runs", "show", "tiny-v001", "--json").output)["data_files"]
    assert f"train.jsonl  sha256 {next(iter(digest.values()))[:12]}" in summary
    assert "steps       3/3" in summary and "adapter_model.safetensors" in summary and "lora.r = " in summary

    diff = run("runs", "diff", "tiny-v001", "tiny-v002")
    assert diff.exit_code == 0, diff.output
    out = diff.output
    assert "config: 2 differ" in out and "lora.r" in out and "train.lr" in out and "tracking" not in out
    assert "data (sha256): 1 differ" in out and "train.jsonl" in out
    assert "code (commit): 1 differ" in out and "trainer" in out
    assert "base model: same" in out and "metrics:" in out and "train_loss" in out


def test_clean_removes_only_failed_runs_without_adapter_or_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 2})
    assert invoke("train", config).exit_code == 0  # v001 completed
    # two runs that fail once their folder exists, their loss blown up (a bad row or module name: no folder)
    diverging = ["--set", "train.lr=1e30", "--set", "train.max_grad_norm=0"]
    assert run("train", config, *diverging).exit_code == 1
    assert run("train", config, *diverging).exit_code == 1
    runs = tmp_path / "runs"
    (runs / "tiny-v003" / "checkpoints" / "checkpoint-1").mkdir(parents=True)  # a failed run that saved one
    shutil.copytree(runs / "tiny-v001", runs / "tiny-v004")
    manifest = json.loads((runs / "tiny-v004" / "manifest.json").read_text())
    (runs / "tiny-v004" / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    (runs / "tiny-v005").mkdir()  # a Slurm job cancelled before it trained anything
    (runs / "tiny-v005" / "manifest.json").write_text(json.dumps({**manifest, "status": "cancelled"}))
    (runs / "tiny-v006").mkdir()  # cancelled before it trained, but someone wrote why: not lorakit's to delete
    (runs / "tiny-v006" / "manifest.json").write_text(json.dumps({**manifest, "status": "cancelled"}))
    assert run("runs", "note", runs / "tiny-v006", "wrong data: the v2 export is the one to use").exit_code == 0
    shutil.copytree(runs / "tiny-v002", runs / "tiny-v007")  # failed, and someone wrote down why, an hour later
    ended = json.loads((runs / "tiny-v007" / "manifest.json").read_text())["status_history"][-1]["at"]
    (runs / "tiny-v007" / "why.md").write_text("the learning rate was 1e30")
    later = datetime.fromisoformat(ended).timestamp() + 3600
    os.utime(runs / "tiny-v007" / "why.md", (later, later))

    monkeypatch.setenv("LORAKIT_NO_CLEAN", "1")
    refused = run("runs", "clean")
    assert refused.exit_code == 1 and "LORAKIT_NO_CLEAN=1" in refused.output
    monkeypatch.delenv("LORAKIT_NO_CLEAN")

    dry = run("runs", "clean", "--dry-run")
    assert "tiny-v002: would remove: failed, no model file, no checkpoint" in dry.output
    assert (runs / "tiny-v002").is_dir()
    cleaned = run("runs", "clean").output
    assert "tiny-v001: kept: completed" in cleaned
    assert "tiny-v002: removed: failed" in cleaned
    assert "tiny-v003: kept: failed but holds a checkpoint" in cleaned
    assert "tiny-v004: kept: interrupted but holds a model file (adapter_model.safetensors)" in cleaned
    assert "tiny-v005: removed: cancelled" in cleaned
    assert "tiny-v006: kept: cancelled but holds 1 note(s) written with lorakit runs note" in cleaned
    assert "tiny-v007: kept: failed but holds a file written after the run ended (why.md)" in cleaned
    assert sorted(p.name for p in runs.iterdir()) == ["tiny-v001", "tiny-v003", "tiny-v004", "tiny-v006", "tiny-v007"]


def test_list_says_how_a_run_ended_where_its_status_hides_it(tmp_path, tiny_model_dir):
    assert invoke("train", make_config(tmp_path, tiny_model_dir, train={"max_steps": 1})).exit_code == 0
    runs = tmp_path / "runs"
    manifest = json.loads((runs / "tiny-v001" / "manifest.json").read_text())
    endings = {"tiny-v002": ("completed", "pruned", "pruned at step 4"),
               "tiny-v003": ("failed", "out-of-memory", "out of memory at step 3"),
               "tiny-v004": ("interrupted", "stopped", "SIGTERM")}  # interrupted says it already
    for name, (status, kind, reason) in endings.items():
        (runs / name).mkdir()
        history = [*manifest["status_history"], {"status": status, "at": "2026-12-07T15:00:00+00:00",
                                                 "kind": kind, "reason": reason}]
        (runs / name / "manifest.json").write_text(json.dumps({**manifest, "status": status,
                                                               "status_history": history}))
    lines = {line.split()[0]: line for line in run("runs", "list").output.splitlines()[1:]}
    assert lines["tiny-v001"].split()[1] == "completed"
    assert "completed (pruned)" in lines["tiny-v002"] and "failed (out-of-memory)" in lines["tiny-v003"]
    assert lines["tiny-v004"].split()[1] == "interrupted" and "(" not in lines["tiny-v004"]
    listed = {r["name"]: r for r in json.loads(run("runs", "list", "--json").output)}
    assert (listed["tiny-v002"]["status"], listed["tiny-v002"]["ended_as"]) == ("completed", "pruned")
    completed = run("runs", "list", "--status", "completed", "--json").output
    assert sorted(r["name"] for r in json.loads(completed)) == ["tiny-v001", "tiny-v002"]


def test_an_external_runs_step_count_comes_from_its_trainers_log_when_its_config_names_none(tmp_path,
                                                                                            tiny_model_dir):
    assert invoke("train", make_config(tmp_path, tiny_model_dir, train={"max_steps": 1})).exit_code == 0
    runs = tmp_path / "runs"
    manifest = json.loads((runs / "tiny-v001" / "manifest.json").read_text())
    manifest.pop("total_steps")  # an external trainer without trainer.steps_key
    for name, status, metrics in (("lf-v001", "completed", {"train_steps": 30}), ("lf-v002", "running", {})):
        (runs / name).mkdir()
        (runs / name / "manifest.json").write_text(json.dumps({**manifest, "status": status, "metrics": metrics}))
        (runs / name / "trainer_log.jsonl").write_text(  # LLaMA-Factory's own log, a line of it not numbers
            '{"current_steps": 5, "total_steps": 30, "loss": 2.1}\n{"current_steps": "ten", "total_steps": []}\n'
            '{"current_steps": 10, "total_steps": 30, "loss": 1.9}\n')
    listed = {r["name"]: r["steps"] for r in json.loads(run("runs", "list", "--json").output)}
    assert listed == {"tiny-v001": "1/1", "lf-v001": "30/30", "lf-v002": "10/30"}


def test_note_goes_to_manifest_and_model_card(tmp_path, tiny_model_dir):
    assert invoke("train", make_config(tmp_path, tiny_model_dir, train={"max_steps": 1})).exit_code == 0
    assert run("runs", "note", "tiny-v001", "r=16 beat r=8 on eval").exit_code == 0
    assert run("runs", "note", "runs/tiny-v001", "second thought").exit_code == 0
    notes = json.loads((tmp_path / "runs" / "tiny-v001" / "manifest.json").read_text())["notes"]
    assert [n["text"] for n in notes] == ["r=16 beat r=8 on eval", "second thought"]
    card = (tmp_path / "runs" / "tiny-v001" / "README.md").read_text()
    assert "## Notes" in card and "r=16 beat r=8 on eval" in card and "second thought" in card
    assert run("runs", "note", "tiny-v009", "x").output.startswith("error: no run 'tiny-v009'")


def test_runs_deeper_than_the_runs_folder_are_pointed_to(tmp_path, monkeypatch):
    # an imported LLaMA-Factory config writes its runs to output.dir saves/<model>/lora
    monkeypatch.chdir(tmp_path)
    holder = tmp_path / "saves" / "qwen3-4b" / "lora"
    for name in ("sft-v001", "sft-v002", "sft-v002/checkpoints/inner-v001"):  # nothing inside a run is a holder
        (holder / name).mkdir(parents=True)
        (holder / name / "manifest.json").write_text("{}")
    expected = "run folders are in saves/qwen3-4b/lora: give --dir"
    assert run("runs", "list").output.strip() == f"no runs in runs/; {expected}"  # runs/ does not exist
    assert run("runs", "list", "--dir", "saves").output.strip() == f"no runs in saves/; {expected}"
    assert run("runs", "list", "--runs-dir", "saves").output.strip() == f"no runs in saves/; {expected}"  # eval's
    assert run("status").output.strip() == f"no submitted runs in runs/; {expected}"
    shown = run("runs", "show", "sft")
    assert shown.exit_code == 1 and "Traceback" not in shown.output
    assert shown.output.strip() == ("error: no run 'sft': not a run folder, and nothing of that name in runs/; "
                                    "found saves/qwen3-4b/lora/sft-v002: give its path")
    assert "lorakit runs list shows what there is" in run("runs", "show", "other").output
    assert run("runs", "list", "--dir", "saves/qwen3-4b/lora", "--status", "failed").output.strip() == (
        "no runs in saves/qwen3-4b/lora/ with status failed")  # runs there: no pointer elsewhere
