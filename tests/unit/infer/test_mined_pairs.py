"""lorakit data pairs: a pair for every prompt the run answers wrong, readable as DPO data."""

import json

from click.testing import CliRunner

from lorakit.cli.main import cli
from lorakit.data.dataset import load_conversations
from tests.conftest import write_jsonl
from tests.unit.infer.test_infer import ROWS, run  # noqa: F401 - the tiny trained run fixture


def test_pairs_hold_the_wrong_answers_with_the_files_answer_as_chosen(run, tmp_path, monkeypatch):  # noqa: F811
    from lorakit.infer.generate import generate_turns
    from lorakit.infer.load import load_adapter

    rows = ROWS[:8]
    write_jsonl(tmp_path / "prompts.jsonl", rows)
    adapter = load_adapter("tiny")
    prompts = [[t for t in conv.turns[:-1]] for conv in load_conversations([tmp_path / "prompts.jsonl"])]
    answers = generate_turns(adapter, prompts, max_new_tokens=8, length_ratio=1.5)
    # the situation the test needs: the first row's answer made right, the second's surely wrong
    rows[0] = {**rows[0], "completion": [{"role": "assistant", "content": answers[0]}]}
    rows[1] = {**rows[1], "completion": [{"role": "assistant", "content": answers[1] + " x"}]}
    write_jsonl(tmp_path / "prompts.jsonl", rows)

    result = CliRunner().invoke(cli, ["data", "pairs", "tiny", "--data", str(tmp_path / "prompts.jsonl"),
                                      "--out", str(tmp_path / "pairs.jsonl"), "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    wrong = [i for i, a in enumerate(answers) if " ".join(a.split()) != " ".join(
        rows[i]["completion"][0]["content"].split())]
    assert 0 not in wrong and 1 in wrong
    assert f"8 prompts: {8 - len(wrong)} answered right" in result.output
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [p["rejected"][0]["content"] for p in pairs] == [answers[i] for i in wrong]
    assert [p["chosen"] for p in pairs] == [rows[i]["completion"] for i in wrong]
    assert [p["prompt"] for p in pairs] == [rows[i]["prompt"] for i in wrong]
    convs = load_conversations([tmp_path / "pairs.jsonl"], pairs=True)  # DPO data as written
    assert len(convs) == len(wrong)

    again = CliRunner().invoke(cli, ["data", "pairs", "tiny", "--data", str(tmp_path / "prompts.jsonl"),
                                     "--out", str(tmp_path / "pairs.jsonl")])
    assert again.exit_code != 0 and "exists; choose another file or give --force" in again.output
