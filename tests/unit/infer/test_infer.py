"""lorakit infer / eval / export on a tiny trained run."""

import json

import pytest
import torch
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import write_jsonl
from tests.unit.cli.test_train import invoke, make_config

PREFIX = "translate to typst :\n"
ROWS = [{"prompt": [{"role": "user", "content": PREFIX + tex}], "completion": [{"role": "assistant", "content": ty}]}
        for tex, ty in [("\\ frac x y", "x / y"), ("\\ sqrt x", "sqrt ( x )"), ("x ^ 2 + y", "x ^ 2 + y"),
                        ("\\ alpha + \\ beta", "alpha + beta"), ("\\ sum x", "sum x"), ("y _ 1", "y _ 1"),
                        ("x = y", "x = y"), ("z - x", "z - x")] * 3]


@pytest.fixture
def run(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 3, "lr": 0.05})
    write_jsonl(tmp_path / "train.jsonl", ROWS)  # make_config wrote alpaca rows; these are the typst-like ones
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "tiny-v001"


def cli_run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def test_the_run_records_how_its_prompts_are_shaped(run):
    shape = json.loads((run / "manifest.json").read_text())["prompt_shape"]
    assert shape == {"chat": True, "prefix": PREFIX, "suffix": "", "system": None}


def test_batch_jsonl_round_trip_keeps_rows_in_order(run, tmp_path):
    cases = [{"id": i, "tex": tex, "note": "kept"} for i, tex in enumerate(["\\ frac x y", "x = y", "\\ sqrt z"])]
    write_jsonl(tmp_path / "cases.jsonl", cases)
    result = cli_run("infer", "tiny", "--input", tmp_path / "cases.jsonl", "--output", tmp_path / "out.jsonl",
                     "--max-new-tokens", 8)
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "output"} for r in out] == cases
    assert all(isinstance(r["output"], str) for r in out)


def test_an_output_file_is_replaced_only_when_asked_and_never_the_input(run, tmp_path):
    (tmp_path / "one.txt").write_text("x = y\n")
    (tmp_path / "mine.typ").write_text("someone's notes\n")
    args = ("infer", "tiny", "--input", tmp_path / "one.txt", "--max-new-tokens", 4)
    kept = cli_run(*args, "--output", tmp_path / "mine.typ")
    assert kept.exit_code == 1 and kept.output.strip().splitlines()[-1] == (
        f"error: --output {tmp_path / 'mine.typ'} exists; give --force to replace it, or another file")
    assert (tmp_path / "mine.typ").read_text() == "someone's notes\n"
    itself = cli_run(*args, "--output", tmp_path / "one.txt", "--force")  # --force does not make it the input
    assert itself.exit_code == 1 and "is the --input file" in itself.output
    assert (tmp_path / "one.txt").read_text() == "x = y\n"
    replaced = cli_run(*args, "--output", tmp_path / "mine.typ", "--force")
    assert replaced.exit_code == 0, replaced.output
    assert (tmp_path / "mine.typ").read_text() != "someone's notes\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_where_an_output_cannot_go_is_said_before_any_model_loads(run, tmp_path, monkeypatch):
    (tmp_path / "one.txt").write_text("x = y\n")
    (tmp_path / "afile").write_text("in the way\n")
    args = ("infer", "tiny", "--input", tmp_path / "one.txt", "--max-new-tokens", 4)
    from lorakit.infer import engines

    loaded, open_model = [], engines.open_model
    monkeypatch.setattr(engines, "open_model", lambda *a, **k: loaded.append(a))
    in_the_way = cli_run(*args, "--output", tmp_path / "afile" / "out.typ")
    assert in_the_way.exit_code == 1 and in_the_way.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'afile'} is a file, so --output {tmp_path / 'afile' / 'out.typ'} cannot be made there; "
        "choose another --output")
    for command in (("data", "pairs", "tiny", "--data", tmp_path / "train.jsonl", "--out", tmp_path / "afile" / "p"),
                    ("export", "tiny", "--merge", "--out", tmp_path / "afile" / "merged"),
                    ("export", "tiny", "--gguf", "--out", tmp_path / "afile" / "x.gguf")):
        refused = cli_run(*command)
        assert refused.exit_code == 1 and f"{tmp_path / 'afile'} is a file, so" in refused.output, refused.output
    assert loaded == []  # said before any model loaded
    monkeypatch.setattr(engines, "open_model", open_model)
    made = cli_run(*args, "--output", tmp_path / "new" / "out.typ")  # a folder that is not there yet is made
    assert made.exit_code == 0, made.output
    assert (tmp_path / "new" / "out.typ").is_file()


def test_text_inference_by_pieces_keeps_the_layout_and_matches_the_adapter(run, tmp_path):
    from lorakit.infer.generate import generate
    from lorakit.infer.load import load_adapter

    paragraphs = ["x = y", "$ \\ frac x y $", "\\ sqrt x + y"]
    (tmp_path / "doc.tex").write_text("\n\n".join(paragraphs) + "\n")
    result = cli_run("infer", run, "--input", tmp_path / "doc.tex", "--output", tmp_path / "doc.typ",
                     "--max-new-tokens", 6, "--unit", "piece")
    assert result.exit_code == 0, result.output
    from lorakit.infer.convert import convert_text

    adapter = load_adapter(str(run))
    # pieces of at most 6 tokens: the document must be cut at its paragraphs
    converted = convert_text(adapter, (tmp_path / "doc.tex").read_text(), piece_tokens=6, max_new_tokens=6)
    expected = generate(adapter, paragraphs, max_new_tokens=6)  # each paragraph converted on its own
    assert converted == "\n\n".join(expected) + "\n"


def test_eval_without_a_metric_package_says_so_before_generating(run, tmp_path, monkeypatch):
    import importlib.util

    import lorakit.infer.engines as engines

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sacrebleu"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(engines, "open_model", lambda *a, **k: pytest.fail("the model was loaded"))
    write_jsonl(tmp_path / "dev.jsonl", [{"tex": "x = y", "typst": "x = y"}])
    result = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "exact,chrf")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: --metrics: chrf needs the sacrebleu package: pip install 'lorakit[eval]'")


def test_eval_scores_adapter_and_base_and_records_them(run, tmp_path):
    cases = [{"tex": "x = y", "typst": "x = y"}, {"tex": "\\ sqrt x", "typst": "sqrt ( x )"}]
    write_jsonl(tmp_path / "dev.jsonl", cases)
    result = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "loss,exact,chrf,typst",
                     "--base", "--max-new-tokens", 6)
    assert result.exit_code == 0, result.output
    assert "tiny-v001" in result.output and "base: " in result.output
    saved = json.loads((run / "eval_results.json").read_text())["eval_dev"]
    for model in ("adapter", "base"):
        assert set(saved[model]) == {"cases", "loss", "perplexity", "exact", "chrf", "typst"}
        # both are rounded when saved (4 decimals): exp() of a rounded loss differs by well under 1%
        assert saved[model]["cases"] == 2 and saved[model]["perplexity"] == pytest.approx(
            torch.tensor(saved[model]["loss"]).exp().item(), rel=1e-2)
    assert saved["adapter"]["loss"] != saved["base"]["loss"]  # the adapter changes the model
    assert "eval_loss" in json.loads((run / "eval_results.json").read_text())  # training's own results kept
    predictions = [json.loads(x) for x in (run / "eval" / "dev.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in predictions] == ["x = y", "sqrt ( x )"] and "base" in predictions[0]
    assert "## Evaluation on" in (run / "README.md").read_text()


def test_eval_of_the_loss_alone_records_it_and_keeps_the_answers_an_earlier_evaluation_wrote(run, tmp_path):
    write_jsonl(tmp_path / "dev.jsonl", [{"tex": "x = y", "typst": "x = y"}, {"tex": "\\ sqrt x", "typst": "sqrt x"}])
    answers = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "exact", "--max-new-tokens", 4)
    assert answers.exit_code == 0, answers.output
    predictions = (run / "eval" / "dev.jsonl").read_text()
    loss = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "loss", "--base")
    assert loss.exit_code == 0, loss.output
    saved = json.loads((run / "eval_results.json").read_text())["eval_dev"]
    assert set(saved["adapter"]) == set(saved["base"]) == {"cases", "loss", "perplexity"}
    assert (run / "eval" / "dev.jsonl").read_text() == predictions  # the earlier answers, not emptied


def test_an_evaluation_of_the_first_cases_sits_beside_the_whole_files_and_never_replaces_it(run, tmp_path):
    write_jsonl(tmp_path / "dev.jsonl", [{"tex": t, "typst": t} for t in ("x = y", "z - x", "y _ 1")])
    whole = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "exact", "--max-new-tokens", 4)
    assert whole.exit_code == 0, whole.output
    answers = (run / "eval" / "dev.jsonl").read_text()
    first = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "exact", "--max-new-tokens", 4,
                    "--limit", 1)
    assert first.exit_code == 0, first.output
    saved = json.loads((run / "eval_results.json").read_text())
    assert saved["eval_dev"]["adapter"]["cases"] == 3 and saved["eval_dev.first1"]["adapter"]["cases"] == 1
    assert (run / "eval" / "dev.jsonl").read_text() == answers and (run / "eval" / "dev.first1.jsonl").is_file()
    evaluations = json.loads((run / "manifest.json").read_text())["evaluations"]
    assert [(e["results"]["adapter"]["cases"], e.get("limit")) for e in evaluations] == [(3, None), (1, 1)]
    card = (run / "README.md").read_text()
    assert "dev.jsonl` (" in card and "dev.jsonl`, the first 1 of its cases (" in card


def test_an_eval_results_file_that_is_no_json_object_is_kept_aside_and_the_evaluation_recorded(run, tmp_path):
    write_jsonl(tmp_path / "dev.jsonl", [{"tex": "x = y", "typst": "x = y"}])
    (run / "eval_results.json").write_text("[not what lorakit writes]")
    result = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "loss")
    assert result.exit_code == 0, result.output  # it crashed after the evaluation, which was lost
    assert json.loads((run / "eval_results.json").read_text())["eval_dev"]["adapter"]["cases"] == 1
    kept = list(run.glob("eval_results.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text() == "[not what lorakit writes]"


def test_an_evaluation_a_run_folder_cannot_take_still_reaches_the_table(run, tmp_path, monkeypatch):
    import errno

    write_jsonl(tmp_path / "dev.jsonl", [{"tex": "x = y", "typst": "x = y"}])

    def read_only(path, data):  # a colleague's runs, mounted read-only
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr("lorakit.runs.manifest.write_json_atomic", read_only)
    result = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "loss,exact",
                     "--max-new-tokens", 4)
    assert result.exit_code == 0, result.output
    assert "tiny-v001: results not recorded in" in result.output and "Read-only file system" in result.output
    header, row = result.output.strip().splitlines()[-2:]  # the scores are shown all the same
    assert header.split() == ["model", "cases", "exact", "loss", "perplexity"] and row.split()[:2] == ["tiny-v001", "1"]
    assert "eval_dev" not in json.loads((run / "eval_results.json").read_text())


def test_merged_export_equals_base_plus_adapter(run, tmp_path):
    from transformers import AutoModelForCausalLM

    from lorakit.infer.load import load_adapter

    result = cli_run("export", "tiny", "--merge", "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    adapter = load_adapter("tiny")
    ids = torch.tensor([[2, 10, 11, 12, 13, 14]])
    with torch.no_grad():
        # W + scale * B @ A folded into one float32 matrix rounds differently from the two-path forward
        torch.testing.assert_close(merged(ids).logits, adapter.model(ids).logits, rtol=1e-4, atol=1e-4)
        with adapter.model.disable_adapter():
            assert not torch.allclose(merged(ids).logits, adapter.model(ids).logits, atol=1e-4)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()
    again = cli_run("export", "tiny", "--merge", "--out", tmp_path / "merged")
    assert again.exit_code == 1 and "exists and is not empty" in again.output


def test_one_line_errors(run, tmp_path):
    (tmp_path / "empty.tex").write_text("  \n")
    empty = cli_run("infer", "tiny", "--input", tmp_path / "empty.tex")
    assert empty.exit_code == 1 and empty.output.strip() == f"error: {tmp_path / 'empty.tex'}: the input is empty"
    missing = cli_run("infer", "nope", "--input", tmp_path / "empty.tex")
    assert missing.exit_code == 1 and "no run 'nope'" in missing.output  # the run is looked up first
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (orphan / name).write_bytes((run / name).read_bytes())
    settings = json.loads((orphan / "adapter_config.json").read_text())
    (orphan / "adapter_config.json").write_text(json.dumps({**settings, "base_model_name_or_path": "/gone/model"}))
    (tmp_path / "in.tex").write_text("x = y\n")
    no_base = cli_run("infer", orphan, "--input", tmp_path / "in.tex")
    assert no_base.exit_code == 1
    assert no_base.output.strip().startswith("error: orphan: its base model '/gone/model' is not available here")
    for result in (empty, missing, no_base):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_an_input_longer_than_the_models_context_is_one_line_before_any_decoding(run, tmp_path, monkeypatch):
    import lorakit.infer.generate as generate_module

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(generate_module, "_generate_torch", no_decoding)
    # an unclosed $ makes the rest of the file one piece that chunking keeps whole (it never cuts inside math)
    (tmp_path / "notes.md").write_text("x = y\n\ncosts $5 and\n" + "x + y z\n" * 200)
    result = cli_run("infer", "tiny", "--input", tmp_path / "notes.md", "--output", tmp_path / "out.md")
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: input 2 of 2 is ") and "longer than the model's context (256 tokens)" in line
    assert not (tmp_path / "out.md").exists()

    import lorakit.infer.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "eval_loss", no_decoding)
    write_jsonl(tmp_path / "dev.jsonl", [{"tex": "x", "typst": "x"}, {"tex": "x + y " * 300, "typst": "x"}])
    scored = cli_run("eval", "tiny", "--data", tmp_path / "dev.jsonl", "--metrics", "loss,exact")
    assert scored.exit_code == 1 and "Traceback" not in scored.output  # before the loss pass, which would not fit
    assert scored.output.strip().splitlines()[-1].startswith("error: case 2 of 2 is ")


def test_chat_answers_each_message_and_keeps_the_conversation(run, monkeypatch):
    from lorakit.infer import generate as generate_module

    seen = []
    real = generate_module.generate_turns

    def spy(adapter, conversations, **options):
        seen.append([(t.role, t.content) for t in conversations[0]])
        return real(adapter, conversations, **options)

    monkeypatch.setattr(generate_module, "generate_turns", spy)
    result = cli_run("chat", "tiny", "--max-new-tokens", 4, input="x = y\n\\ sqrt x\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("tiny-v001> ") == 2
    assert seen[0] == [("user", PREFIX + "x = y")]  # wrapped as the training prompts were
    assert seen[1][0] == ("user", PREFIX + "x = y") and seen[1][1][0] == "assistant"
    assert seen[1][2] == ("user", PREFIX + "\\ sqrt x")


def test_chat_commands_start_over_and_end_and_a_stopped_answer_leaves_no_trace(run, monkeypatch):
    from lorakit.infer import generate as generate_module

    seen = []
    real = generate_module.generate_turns

    def spy(adapter, conversations, **options):
        said = [t.content for t in conversations[0] if t.role == "user"]
        seen.append(said)
        if said[-1].endswith("stop here"):
            raise KeyboardInterrupt  # Ctrl+C while the answer is generated
        return real(adapter, conversations, **options)

    monkeypatch.setattr(generate_module, "generate_turns", spy)
    messages = ["x = y", "/clear", "\\ sqrt x", "stop here", "y _ 1", "/path/like text", "/BYE", "never said"]
    result = cli_run("chat", "tiny", "--max-new-tokens", 4, input="\n".join(messages) + "\n")
    assert result.exit_code == 0, result.output
    said = [[message.removeprefix(PREFIX) for message in conversation] for conversation in seen]
    assert said == [["x = y"],  # /clear: the next conversation starts without it
                    ["\\ sqrt x"], ["\\ sqrt x", "stop here"],
                    ["\\ sqrt x", "y _ 1"],  # the stopped message is not in the conversation
                    ["\\ sqrt x", "y _ 1", "/path/like text"]]  # only a whole command word is a command; /BYE ends
    assert "(a new conversation)" in result.output and "(stopped" in result.output
    assert result.output.count("tiny-v001> ") == 4


def test_lanes_and_padded_batches_answer_alike_and_stop_texts_cut_answers(run, tmp_path):
    """The lane decoder (the default) against transformers' generate on padded batches (the fallback), on a
    trained run's prompts; then a stop text taken from an answer ends it there, on the CLI too."""
    from lorakit.infer.generate import generate
    from lorakit.infer.load import load_adapter

    adapter = load_adapter(str(run))
    inputs = ["\\ frac x y", "x = y", "\\ sqrt z", "\\ alpha + \\ beta", "y _ 1"]
    lanes = generate(adapter, inputs, max_new_tokens=8, batch_size=2)
    padded = generate(adapter, inputs, max_new_tokens=8, batch_size=2, padded=True)
    # float32 here: a flipped near-tie would show as one differing answer; tiny trained models have none
    assert lanes == padded
    # an answer with a word that first appears after its start: that word as the stop text
    answer, cut = next((a, k) for a in lanes for k, w in enumerate(a.split()) if k and w not in a.split()[:k])
    stop_word, before = answer.split()[cut], " ".join(answer.split()[:cut])
    stopped = generate(adapter, inputs, max_new_tokens=8, stop=[stop_word])
    assert all(stop_word not in a for a in stopped)
    assert stopped[lanes.index(answer)] == before
    (tmp_path / "one.txt").write_text(inputs[lanes.index(answer)] + "\n")
    result = cli_run("infer", run, "--input", tmp_path / "one.txt", "--output", tmp_path / "one.typ",
                     "--max-new-tokens", 8, "--stop", stop_word)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one.typ").read_text().strip() == before


def test_a_tex_document_goes_formula_by_formula_and_a_txt_file_line_by_line(run, tmp_path):
    from lorakit.infer.generate import generate
    from lorakit.infer.load import load_adapter

    adapter = load_adapter(str(run))
    formulas = ["x ^ 2 + y", "\\ frac x y", "z - x"]
    answers = generate(adapter, formulas, max_new_tokens=6)
    (tmp_path / "one-a-line.txt").write_text("\n".join(formulas) + "\n")
    result = cli_run("infer", run, "--input", tmp_path / "one-a-line.txt", "--output", tmp_path / "lines.typ",
                     "--max-new-tokens", 6)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "lines.typ").read_text() == "\n".join(answers) + "\n"  # one answer a line, not merged
    (tmp_path / "notes.tex").write_text("\\section{Notes}\nWe have $x ^ 2 + y$ and\n\\[ \\ frac x y \\]\nthe end.\n")
    result = cli_run("infer", run, "--input", tmp_path / "notes.tex", "--output", tmp_path / "notes.typ",
                     "--max-new-tokens", 6)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "notes.typ").read_text() == (f"= Notes\nWe have ${answers[0]}$ and\n$ {answers[1]} $\n"
                                                     "the end.\n")
    assert "2 formula(s) converted by the adapter" in result.output


def test_in_training_evaluation_cuts_an_answer_at_its_reference_length(run, monkeypatch):
    import lorakit.infer.generate as generate
    from lorakit.infer.evaluate import EvalCase, score
    from lorakit.infer.load import load_adapter

    budgets = []
    real = generate._generate_torch
    monkeypatch.setattr(generate, "_generate_torch",
                        lambda a, r, o: budgets.append([q.budget for q in r]) or real(a, r, o))
    adapter = load_adapter("tiny")
    cases = [EvalCase("x = y", "x"), EvalCase("\\ sqrt x", "sqrt ( x ) + y")]
    score(adapter, cases, ["exact"], max_new_tokens=20)
    score(adapter, cases, ["exact"], max_new_tokens=20, cap_at_reference=True)
    references = [len(adapter.tokenizer(c.reference, add_special_tokens=False)["input_ids"]) for c in cases]
    assert references[1] + 16 > 20 > references[0] + 16  # one answer is capped, the other keeps max_new_tokens
    assert budgets == [[20, 20], [references[0] + 16, 20]]


def test_eval_with_loss_decodes_only_past_what_its_loss_pass_proved(run, monkeypatch):
    """``lorakit eval --metrics loss,...``: the loss pass proves where the greedy answers follow the references,
    and the decoder starts there. References equal to the adapter's own answers: every answer is proven whole,
    and the predictions are the ones decoded without the pass."""
    import lorakit.infer.generate as generate
    from lorakit.infer.evaluate import EvalCase, score
    from lorakit.infer.load import load_adapter

    adapter = load_adapter("tiny")
    prompts = ["x = y", "\\ sqrt x", "a + b"]
    _, answers = score(adapter, [EvalCase(p, "?") for p in prompts], ["exact"], max_new_tokens=12)
    handed = []
    real = generate._generate_torch
    monkeypatch.setattr(generate, "_generate_torch",
                        lambda a, r, o: handed.append([q.known for q in r]) or real(a, r, o))
    results, again = score(adapter, [EvalCase(p, a) for p, a in zip(prompts, answers, strict=True)],
                           ["loss", "exact"], max_new_tokens=12)
    assert again == answers and results["exact"] == 1.0
    assert all(handed[0])  # every answer's start proven by the pass, handed to the decoder


def test_json_lines_piped_in_are_answered_row_by_row_as_a_jsonl_file_is(run, tmp_path):
    cases = [{"id": i, "tex": tex} for i, tex in enumerate(["\\ frac x y", "x = y"])]
    write_jsonl(tmp_path / "cases.jsonl", cases)
    piped = "".join(json.dumps(c) + "\n" for c in cases)
    from_file = cli_run("infer", "tiny", "--input", tmp_path / "cases.jsonl", "--max-new-tokens", 8)
    from_stdin = cli_run("infer", "tiny", "--input", "-", "--max-new-tokens", 8, input=piped)
    assert from_stdin.exit_code == 0, from_stdin.output
    rows = [json.loads(line) for line in from_stdin.stdout.splitlines()]
    assert [{k: v for k, v in r.items() if k != "output"} for r in rows] == cases  # the rows, not their JSON as text
    assert from_stdin.stdout == from_file.stdout
    as_text = cli_run("infer", "tiny", "--input", "-", "--unit", "line", "--max-new-tokens", 8, input=piped)
    assert as_text.exit_code == 0 and len(as_text.stdout.splitlines()) == 2 and as_text.stdout != from_file.stdout
    broken = cli_run("infer", "tiny", "--input", "-", input=piped + "{oops\n")
    assert broken.exit_code == 1 and "stdin:3: not JSON" in broken.output and "Traceback" not in broken.output
