"""What lorakit writes is readable as the umask allows: a temporary file is private (mkstemp's 0600), and so is
every file safetensors writes (from 0.8, safetensors issue #782); renamed into place, a run's adapter would stay
unreadable to a teammate, or to a vLLM server under its own user, that can read everything else."""

import os
import stat

import pytest

from tests.unit.cli.test_train import invoke, make_config


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_a_run_its_checkpoints_and_its_merged_export_are_readable_by_others(tmp_path, tiny_model_dir, umask_022):
    config = make_config(tmp_path, tiny_model_dir,
                         train={"max_steps": 4, "save_every": 2, "eval_every": 2, "keep": "both"})
    assert invoke("train", config).exit_code == 0
    run = tmp_path / "runs" / "tiny-v001"
    written = [run / "adapter_model.safetensors", run / "last" / "adapter_model.safetensors",
               *run.glob("checkpoints/checkpoint-*/adapter_model.safetensors"), run / "manifest.json",
               run / "all_results.json", run / "trainer_log.jsonl"]
    assert len(written) == 6 and all(p.is_file() for p in written)  # one checkpoint: step 2 of 4
    assert {p.name: oct(mode(p)) for p in written if mode(p) != 0o644} == {}

    assert invoke("export", run, "--merge", "--out", tmp_path / "merged").exit_code == 0
    assert mode(tmp_path / "merged") == 0o755
    assert {p.name: oct(mode(p)) for p in (tmp_path / "merged").iterdir() if mode(p) != 0o644} == {}


def test_an_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path, umask_022):
    from lorakit.atomic import write_text_atomic

    write_text_atomic(tmp_path / "new.txt", "a")
    assert mode(tmp_path / "new.txt") == 0o644
    (tmp_path / "mine.txt").write_text("b")
    os.chmod(tmp_path / "mine.txt", 0o600)  # the user's own choice stays
    write_text_atomic(tmp_path / "mine.txt", "c")
    assert mode(tmp_path / "mine.txt") == 0o600 and (tmp_path / "mine.txt").read_text() == "c"
