"""Rows in a training format asked as training put them: infer, eval and data pairs read the whole question
(alpaca's instruction with its input, a chat's turns before its answer), never one field of it."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorakit.cli.main import cli
from lorakit.data.formats import Turn
from lorakit.errors import DataError
from lorakit.infer.convert import answer_key, input_field
from lorakit.infer.evaluate import load_cases
from lorakit.infer.row_prompts import question_of
from tests.conftest import write_jsonl
from tests.unit.infer.test_infer import run  # noqa: F401 - the tiny trained run fixture


def user(text):
    return Turn("user", text, train=False)


@pytest.mark.parametrize(("row", "turns", "reference"), [
    ({"instruction": "Name three colors.", "input": ""}, [user("Name three colors.")], None),
    ({"instruction": "Translate", "input": "cat", "output": "chat", "system": "Be brief", "history": [["hi", "yo"]]},
     [Turn("system", "Be brief", False), user("hi"), Turn("assistant", "yo", False), user("Translate\n\ncat")],
     "chat"),
    ({"messages": [{"role": "user", "content": "Who are you?"}]}, [user("Who are you?")], None),
    ({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                   {"role": "assistant", "content": "A"}]}, [Turn("system", "S", False), user("Q")], "A"),
    ({"conversations": [{"from": "human", "value": "Q"}]}, [user("Q")], None),
    ({"prompt": [{"role": "user", "content": "P"}]}, [user("P")], None),
    ({"prompt": "Q: 2+2\nA:", "completion": " 4"}, [Turn("text", "Q: 2+2\nA:", False)], " 4"),
])
def test_a_training_format_row_asks_its_whole_question(row, turns, reference):
    asked, expected, _ = question_of(row)
    assert (asked, expected) == (turns, reference)


def test_eval_reads_alpaca_rows_with_their_instruction_not_their_input_alone(tmp_path):
    # every alpaca row has input and output: read as an (input, output) pair, the instruction was left out
    write_jsonl(tmp_path / "dev.jsonl", [{"instruction": "Name three colors.", "input": "", "output": "red"},
                                         {"instruction": "Translate to French", "input": "cat", "output": "chat"}])
    cases = load_cases(tmp_path / "dev.jsonl")
    assert [(c.prompt, c.reference) for c in cases] == [([user("Name three colors.")], "red"),
                                                        ([user("Translate to French\n\ncat")], "chat")]
    write_jsonl(tmp_path / "plain.jsonl", [{"input": "x", "output": "y"}])  # plain pairs are still pairs
    assert [(c.prompt, c.reference) for c in load_cases(tmp_path / "plain.jsonl")] == [("x", "y")]


def test_which_field_is_asked_and_where_the_answer_goes():
    assert input_field([{"instruction": "a", "input": ""}, {"messages": []}], None, "f.jsonl") is None
    assert input_field([{"instruction": "a", "input": "b"}], "input", "f.jsonl") == "input"  # asked for: as given
    assert input_field([{"tex": "x"}], None, "f.jsonl") == "tex"
    with pytest.raises(DataError, match=r"^f.jsonl:2: rows mix training-format questions"):
        input_field([{"instruction": "a"}, {"tex": "x"}], None, "f.jsonl")
    assert answer_key([{"tex": "x"}]) == "output"
    assert answer_key([{"instruction": "a", "output": "reference"}]) == "predict"  # the reference is kept
    with pytest.raises(DataError, match="already hold output and predict"):
        answer_key([{"output": "a", "predict": "b"}])


def test_infer_answers_each_rows_own_question_and_keeps_its_reference(run, tmp_path, monkeypatch):  # noqa: F811
    import lorakit.infer.convert as convert

    asked = []
    real = convert.generate_turns

    def spy(adapter, conversations, **options):
        asked.extend(list(c) for c in conversations)
        return real(adapter, conversations, **options)

    monkeypatch.setattr(convert, "generate_turns", spy)
    rows = [{"instruction": "translate to typst :", "input": "\\ frac x y", "output": "x / y"},
            {"messages": [{"role": "user", "content": "translate to typst :\nx = y"}]},
            {"messages": [{"role": "user", "content": "translate to typst :\nz"},
                          {"role": "assistant", "content": "z"}]}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    result = CliRunner().invoke(cli, ["infer", "tiny", "--input", str(tmp_path / "rows.jsonl"), "--output",
                                      str(tmp_path / "out.jsonl"), "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    assert asked == [[user("translate to typst :\n\n\\ frac x y")], [user("translate to typst :\nx = y")],
                     [user("translate to typst :\nz")]]
    out = [json.loads(line) for line in Path(tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "predict"} for r in out] == rows  # every field kept, output too
    assert all(isinstance(r["predict"], str) for r in out)


def test_a_row_its_format_cannot_read_is_named_by_line(run, tmp_path):  # noqa: F811
    write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "a"}, {"instruction": "b", "history": "not pairs"}])
    result = CliRunner().invoke(cli, ["infer", "tiny", "--input", str(tmp_path / "rows.jsonl")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].endswith(
        "rows.jsonl:2: history must be a list of [instruction, answer] pairs")


def test_eval_scores_preference_pairs_against_their_chosen_answer_and_kto_rows_labelled_true(tmp_path):
    # training refuses both without a setting; an evaluation has one reading that makes sense
    question = [{"from": "human", "value": "Q"}]
    pairs = [{"conversations": question, "chosen": {"from": "gpt", "value": "good"},
              "rejected": {"from": "gpt", "value": "bad"}}]
    (tmp_path / "dpo.json").write_text(json.dumps(pairs))
    assert [(c.prompt, c.reference) for c in load_cases(tmp_path / "dpo.json")] == [([user("Q")], "good")]
    kto = [{"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}], "label": True},
           {"messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}], "label": False}]
    write_jsonl(tmp_path / "kto.jsonl", kto)
    assert [(c.prompt, c.reference) for c in load_cases(tmp_path / "kto.jsonl")] == [([user("Q1")], "A1")]


def test_infer_reads_a_json_list_of_rows_and_writes_one_back(run, tmp_path):  # noqa: F811
    rows = [{"instruction": "translate to typst :", "input": t} for t in ("\\ frac x y", "x = y")]
    (tmp_path / "rows.json").write_text(json.dumps(rows, indent=2))  # LLaMA-Factory's .json datasets
    for out in ("out.json", "out.jsonl"):
        result = CliRunner().invoke(cli, ["infer", "tiny", "--input", str(tmp_path / "rows.json"), "--output",
                                          str(tmp_path / out), "--max-new-tokens", "6"])
        assert result.exit_code == 0, result.output
    as_list = json.loads((tmp_path / "out.json").read_text())
    as_lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert as_list == as_lines and [{k: r[k] for k in ("instruction", "input")} for r in as_list] == rows
    assert all(isinstance(r["output"], str) for r in as_list)
    csv_rows = "instruction,input\n" + "".join(f'translate to typst :,"{r["input"]}"\n' for r in rows)
    (tmp_path / "rows.csv").write_text(csv_rows)  # the other tables training reads: the same rows, answered
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    for table in ("rows.csv", "rows.parquet"):
        result = CliRunner().invoke(cli, ["infer", "tiny", "--input", str(tmp_path / table), "--max-new-tokens", "6"])
        assert result.exit_code == 0, result.output
        assert [json.loads(line) for line in result.stdout.splitlines()] == as_lines, table
    for text, said in (('{"instruction": "a"}', "must hold a list of objects (got dict)"),
                       ('[{"tex": "x"}, "y"]', "rows.json:item 1: expected a JSON object (got str)"),
                       ('[{"tex": "x"}, {"other": "y"}]', "rows.json:item 1: no text field 'tex'"),
                       ('[{"tex": "x"},\n {"tex": ]', "rows.json:2: malformed JSON")):
        (tmp_path / "rows.json").write_text(text)
        args = ["--input-field", "tex"] if "other" in text else []
        bad = CliRunner().invoke(cli, ["infer", "tiny", "--input", str(tmp_path / "rows.json"), *args])
        assert bad.exit_code == 1 and "Traceback" not in bad.output and said in bad.output, bad.output
