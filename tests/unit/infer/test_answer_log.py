"""A long infer --output or data pairs stopped half way keeps every answer it found: the same command run again
decodes only the rest, and ends with the output an uninterrupted run writes."""

import json

import pytest

from lorakit.infer import generate as generate_module
from lorakit.infer.answer_log import AnswerLog
from tests.conftest import write_jsonl
from tests.unit.infer.test_infer import cli_run, run  # noqa: F401 - the tiny trained run fixture

TEXTS = ["\\ frac x y", "x = y", "\\ sqrt z", "\\ alpha + \\ beta", "y _ 1", "z - x", "\\ sum x", "x ^ 2 + y"]


def test_an_answer_is_recalled_only_for_the_same_model_settings_prompt_and_budget(tmp_path):
    out = tmp_path / "out.jsonl"
    first = AnswerLog(out, "model-a", {"temperature": 0.0})
    first.add([1, 2, 3], 16, "answer")
    first.close()
    with (tmp_path / ".out.jsonl.answers.jsonl").open("a") as torn:
        torn.write('{"key": "abc", "answ')  # the line a killed process was writing
    assert AnswerLog(out, "model-a", {"temperature": 0.0}).recall([[1, 2, 3], [1, 2]], [16, 16]) == {0: "answer"}
    for other in (AnswerLog(out, "model-b", {"temperature": 0.0}), AnswerLog(out, "model-a", {"temperature": 0.7})):
        assert other.recall([[1, 2, 3]], [16]) == {}
    same = AnswerLog(out, "model-a", {"temperature": 0.0})
    assert same.recall([[1, 2, 3]], [8]) == {}  # another length budget: another answer
    (tmp_path / "out.jsonl").write_text("all answers\n")
    assert not same.remove(tmp_path / "out.jsonl", "other text\n")  # the output does not hold them: kept
    assert same.path.exists()
    assert same.remove(tmp_path / "out.jsonl", "all answers\n")
    assert not same.path.exists()


@pytest.fixture
def decoded(monkeypatch):
    """How many prompts each generation decodes (after the kept answers are taken out)."""
    counts, real = [], generate_module._generate_torch

    def counting(adapter, requests, options):
        counts.append(len(requests))
        return real(adapter, requests, options)

    monkeypatch.setattr(generate_module, "_generate_torch", counting)
    return counts


def test_infer_stopped_half_way_goes_on_from_the_answers_it_kept(run, tmp_path, monkeypatch, decoded):  # noqa: F811
    write_jsonl(tmp_path / "rows.jsonl", [{"tex": t} for t in TEXTS])
    args = ("infer", "tiny", "--input", tmp_path / "rows.jsonl", "--max-new-tokens", 6, "--batch-size", 2)
    whole = cli_run(*args, "--output", tmp_path / "whole.jsonl")
    assert whole.exit_code == 0, whole.output

    real_add, added = AnswerLog.add, []

    def add_then_stop(self, prompt, budget, answer):  # Ctrl+C once three answers are kept
        real_add(self, prompt, budget, answer)
        added.append(answer)
        if len(added) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(AnswerLog, "add", add_then_stop)
    stopped = cli_run(*args, "--output", tmp_path / "out.jsonl")
    assert stopped.exit_code != 0 and not (tmp_path / "out.jsonl").exists()
    kept = tmp_path / ".out.jsonl.answers.jsonl"
    assert len(kept.read_text().splitlines()) == 3
    monkeypatch.setattr(AnswerLog, "add", real_add)
    (tmp_path / ".other.jsonl.answers.jsonl").write_text(kept.read_text())  # the same answers, for other settings

    decoded.clear()
    again = cli_run(*args, "--output", tmp_path / "out.jsonl")
    assert again.exit_code == 0, again.output
    assert decoded == [len(TEXTS) - 3]  # only the questions without a kept answer
    assert (tmp_path / "out.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()
    assert not kept.exists()  # the output holds every answer: the kept ones are gone

    decoded.clear()
    other = cli_run(*args, "--output", tmp_path / "other.jsonl", "--stop", "zzz")
    assert other.exit_code == 0 and decoded == [len(TEXTS)]


def test_data_pairs_keeps_its_answers_until_the_pairs_are_written(run, tmp_path, monkeypatch, decoded):  # noqa: F811
    from tests.unit.infer.test_infer import ROWS

    write_jsonl(tmp_path / "prompts.jsonl", ROWS[:6])
    args = ("data", "pairs", "tiny", "--data", tmp_path / "prompts.jsonl", "--out", tmp_path / "pairs.jsonl",
            "--max-new-tokens", 6)
    import lorakit.infer.mined_pairs as mined

    def full_disk(path, rows):
        raise OSError(28, "No space left on device")

    real_write = mined._write_jsonl
    monkeypatch.setattr(mined, "_write_jsonl", full_disk)
    failed = cli_run(*args)
    assert failed.exit_code != 0
    kept = tmp_path / ".pairs.jsonl.answers.jsonl"
    assert len(kept.read_text().splitlines()) == 6  # every answer kept though the pairs could not be written
    monkeypatch.setattr(mined, "_write_jsonl", real_write)
    decoded.clear()
    again = cli_run(*args)
    assert again.exit_code == 0, again.output
    assert decoded in ([], [0])  # nothing decoded again
    assert (tmp_path / "pairs.jsonl").is_file() and not kept.exists()
    assert all(json.loads(line)["rejected"] for line in (tmp_path / "pairs.jsonl").read_text().splitlines())


def test_a_second_command_answering_into_the_same_output_stops_at_its_first_answer(run, tmp_path):  # noqa: F811
    import fcntl

    write_jsonl(tmp_path / "rows.jsonl", [{"tex": t} for t in TEXTS[:3]])
    kept = tmp_path / ".out.jsonl.answers.jsonl"
    kept.write_text('{"key": "k", "answer": "the first command\'s"}\n')
    with kept.open("a") as first:  # the first command, still answering, holds its log
        fcntl.flock(first.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = cli_run("infer", "tiny", "--input", tmp_path / "rows.jsonl", "--max-new-tokens", 4,
                         "--output", tmp_path / "out.jsonl")
    assert second.exit_code == 1 and "Traceback" not in second.output
    assert second.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'out.jsonl'}: another command is answering into it now (its answers go to {kept}); "
        "wait for it to end, or give another output")
    assert kept.read_text() == '{"key": "k", "answer": "the first command\'s"}\n'  # its answers untouched
    assert not (tmp_path / "out.jsonl").exists()
    again = cli_run("infer", "tiny", "--input", tmp_path / "rows.jsonl", "--max-new-tokens", 4,
                    "--output", tmp_path / "out.jsonl")  # once it has ended, the same command goes on
    assert again.exit_code == 0, again.output
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
