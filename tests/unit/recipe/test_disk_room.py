"""A full disk: a run that cannot be saved is refused before its first step, and one that fills the disk as it
goes ends in one line, marked failed, never in a traceback; so does any path the system refuses."""

import errno
import json
import re

import click
import pytest
from click.testing import CliRunner

from lorakit.cli.main import LorakitGroup, cli
from lorakit.config.schema import TrainSection
from lorakit.disk import is_disk_full, size_text
from lorakit.recipe import disk_room, session
from tests.unit.cli.test_train import make_config


def test_a_full_disk_is_recognised_in_each_library_s_words(tmp_path, monkeypatch):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(Exception("No space left on device (os error 28)"))  # tokenizers' and safetensors' Rust
    assert is_disk_full(OSError("Not enough free space to write 56623104 bytes after offset 1982432"))  # numpy
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("saving failed") from e
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    # torch's writer says only "unexpected pos": full when the disk it wrote to has (almost) no room left
    torch_words = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr("lorakit.disk.free_bytes", lambda path: 0)
    assert is_disk_full(torch_words, tmp_path) and not is_disk_full(torch_words)
    monkeypatch.setattr("lorakit.disk.free_bytes", lambda path: 10 << 30)
    assert not is_disk_full(torch_words, tmp_path)
    assert [size_text(n) for n in (512, 1536, 5 << 20, 3 << 30)] == ["512 B", "1.5 KiB", "5.0 MiB", "3.00 GiB"]


def test_checkpoints_still_to_write_follow_the_checkpoint_rule():
    # saved at every save_every-th step but the last, at most save_total_limit kept (as test_train's
    # test_checkpoints_only_when_asked_and_pruned_to_the_limit sees them on disk)
    count = disk_room._checkpoints_to_write
    assert count(TrainSection(save_every=2), 7, 0) == 3  # 2, 4, 6
    assert count(TrainSection(save_every=2), 6, 0) == 2  # 2, 4 (6 is the final adapter)
    assert count(TrainSection(save_every=2, save_total_limit=2), 7, 0) == 2
    assert count(TrainSection(save_every=2), 7, 4) == 1  # resumed after step 4: only 6 is still to come
    assert count(TrainSection(), 7, 0) == 0


def test_a_run_the_disk_cannot_hold_is_refused_before_its_first_step(tmp_path, tiny_model_dir, monkeypatch):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 4})
    estimates = []
    check = disk_room.check_room
    monkeypatch.setattr(session, "check_room", lambda run_dir, writes: (estimates.append(writes),
                                                                        check(run_dir, writes)))
    assert CliRunner().invoke(cli, ["train", str(config)]).exit_code == 0
    run = tmp_path / "runs" / "tiny-v001"
    written = sum((run / name).stat().st_size for name in ("adapter_model.safetensors", *disk_room.TOKENIZER_FILES)
                  if (run / name).is_file())
    assert 0 < estimates[0].total <= written  # a floor: a run refused could not have finished

    monkeypatch.setattr(disk_room, "free_bytes", lambda path: estimates[0].total - 1)
    refused = CliRunner().invoke(cli, ["train", str(config)])
    assert refused.exit_code == 28 and "Traceback" not in refused.output
    line = refused.output.strip().splitlines()[-1]
    assert line.startswith(f"error: not enough disk space for this run in {tmp_path / 'runs'}")
    assert "set output.dir to a disk with room" in line and "train.save_total_limit" not in line  # no checkpoints
    run = tmp_path / "runs" / "tiny-v002"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "not enough disk space" in manifest["status_history"][-1]["reason"]
    assert manifest["status_history"][-1]["kind"] == "disk-full"  # what a queue decides by, not the sentence
    assert not (run / "adapter_model.safetensors").exists()
    assert not (run / "trainer_log.jsonl").exists()  # not one step trained


def test_a_disk_that_fills_during_the_run_ends_it_in_one_line(tmp_path, tiny_model_dir, monkeypatch):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 2})

    def disk_fills(tokenizer, folder):  # as tokenizers' save_pretrained reports it
        raise Exception("No space left on device (os error 28)")

    monkeypatch.setattr("lorakit.recipe.finish.save_tokenizer", disk_fills)
    result = CliRunner().invoke(cli, ["train", str(config)])
    assert result.exit_code == 28 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: no space left on the disk of {tmp_path / 'runs' / 'tiny-v001'}")
    assert last.endswith("then train again (or set output.dir to a disk with room)")  # no resume state to go on from
    manifest = json.loads((tmp_path / "runs" / "tiny-v001" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "no space left" in manifest["status_history"][-1]["reason"]
    assert manifest["status_history"][-1]["kind"] == "disk-full"

    # the manifest cannot record it either: the disk's error is still the one said, and a warning says why the
    # manifest was not updated
    from lorakit.runs import manifest as manifest_module

    real_write, full = manifest_module.write_json_atomic, []

    def fills_then_refuses(tokenizer, folder):
        full.append(True)
        disk_fills(tokenizer, folder)

    def manifest_write(path, data):
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr("lorakit.recipe.finish.save_tokenizer", fills_then_refuses)
    monkeypatch.setattr(manifest_module, "write_json_atomic", manifest_write)
    result = CliRunner().invoke(cli, ["train", str(config)])
    assert result.exit_code == 28 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"error: no space left on the disk of {tmp_path / 'runs' / 'tiny-v002'}")
    assert "could not record the failure in" in lines[-2]
    assert json.loads((tmp_path / "runs" / "tiny-v002" / "manifest.json").read_text())["status"] == "running"


def test_a_resumable_run_that_fills_the_disk_is_continued_once_there_is_room(tmp_path, tiny_model_dir, monkeypatch):
    from lorakit.recipe import finish

    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 4, "resumable": True, "resume_every": 2})
    saved = finish.save_tokenizer

    def disk_fills(tokenizer, folder):
        raise Exception("No space left on device (os error 28)")

    monkeypatch.setattr(finish, "save_tokenizer", disk_fills)
    result = CliRunner().invoke(cli, ["train", str(config)])
    assert result.exit_code == 28
    assert result.output.strip().splitlines()[-1].endswith("then continue it: lorakit train --resume runs/tiny-v001")
    monkeypatch.setattr(finish, "save_tokenizer", saved)  # room again
    resumed = CliRunner().invoke(cli, ["train", "--resume", "runs/tiny-v001"])
    assert resumed.exit_code == 0, resumed.output
    manifest = json.loads((tmp_path / "runs" / "tiny-v001" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["metrics"]["train_steps"] == 4
    assert (tmp_path / "runs" / "tiny-v001" / "tokenizer.json").is_file()


def test_any_command_that_finds_the_disk_full_says_so_in_one_line():
    @click.group(cls=LorakitGroup)
    def group() -> None:
        pass

    @group.command()
    def write() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.gguf")

    @group.command()
    def other() -> None:
        raise OSError(errno.EACCES, "Permission denied", "/data/out.gguf")

    @group.command()
    def refused() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/sys/.out.jsonl.x1")

    @group.command()
    def bug() -> None:
        raise OSError("a bug of ours, naming no path")

    said = CliRunner().invoke(group, ["refused"])
    assert said.exit_code == 1 and said.output == "error: /sys/.out.jsonl.x1: Permission denied\n"
    assert isinstance(CliRunner().invoke(group, ["bug"]).exception, OSError)  # a bug keeps its traceback
    full = CliRunner().invoke(group, ["write"])
    assert full.exit_code == 28  # ENOSPC: a parent (the queue) tells a full disk from a failed run
    assert full.output.startswith("error: no space left on device writing /data/out.gguf")
    assert CliRunner().invoke(group, ["other"]).output.startswith("error: /data/out.gguf: Permission denied")


def test_an_export_that_finds_the_disk_full_leaves_nothing_half_written_and_names_the_disk(tmp_path):
    from lorakit.errors import DiskFullError
    from lorakit.infer.export.gguf_export import write_atomically

    def numpy_runs_out(path):  # as numpy's tofile reports it from inside the GGUF writer
        path.write_bytes(b"GGUF" + bytes(100))
        raise OSError("Not enough free space to write 56623104 bytes after offset 1982432")

    target = tmp_path / "gguf" / "run-f16.gguf"
    with pytest.raises(DiskFullError, match=re.escape(f"no space left on the disk of {target.parent} writing run-f16")):
        write_atomically(target, False, numpy_runs_out)
    assert list(target.parent.iterdir()) == []  # no partial file left

    def permission(path):
        raise PermissionError(13, "Permission denied")

    with pytest.raises(PermissionError):  # not a full disk: raised as it was
        write_atomically(target, False, permission)
