"""A merged model folder (export --merge) is checked against its adapter, and answers in infer, eval and chat as
its run does: the run's prompt wrapping and template travel with it in lorakit.json."""

import json

from safetensors.torch import load_file, save_file

from lorakit.infer.generate import generate
from lorakit.infer.load import load_adapter
from tests.unit.infer.test_infer import cli_run, run  # noqa: F401 - the tiny trained run fixture

INPUTS = ["\\ frac x y", "x = y", "\\ sqrt z", "\\ alpha + \\ beta"]


def test_a_merged_export_is_checked_and_answers_as_its_run(run, tmp_path):  # noqa: F811
    result = cli_run("export", "tiny", "--merge", "--out", tmp_path / "merged", "--check")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("check (transformers, float32, ")
    assert result.stdout.strip().endswith(": ok")
    record = json.loads((tmp_path / "merged" / "lorakit.json").read_text())
    assert record["merged_from"] == "tiny-v001"
    merged, adapter = load_adapter(str(tmp_path / "merged"), device="cpu"), load_adapter("tiny", device="cpu")
    assert merged.shape == adapter.shape and merged.shape.prefix  # the run's "translate to typst :\n"
    assert merged.encoder.template == adapter.encoder.template and merged.max_length == adapter.max_length
    # float32 merged weights differ from the two-path forward by rounding only: greedy answers alike on these
    assert generate(merged, INPUTS, max_new_tokens=8) == generate(adapter, INPUTS, max_new_tokens=8)

    (tmp_path / "in.txt").write_text("\n".join(INPUTS) + "\n")
    answers = [cli_run("infer", ref, "--input", tmp_path / "in.txt", "--max-new-tokens", 8)
               for ref in (tmp_path / "merged", "tiny")]
    assert all(a.exit_code == 0 for a in answers), answers[0].output
    assert answers[0].stdout == answers[1].stdout

    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"input": i, "output": "x"}) + "\n" for i in INPUTS))
    scored = cli_run("eval", tmp_path / "merged", "--data", tmp_path / "dev.jsonl", "--metrics", "loss,exact")
    assert scored.exit_code == 0, scored.output
    recorded = json.loads((tmp_path / "merged" / "eval_results.json").read_text())["eval_dev"]["adapter"]
    assert set(recorded) >= {"loss", "exact"}  # kept in the folder the figures are about
    assert len((tmp_path / "merged" / "eval" / "dev.jsonl").read_text().splitlines()) == len(INPUTS)


def test_a_broken_merged_export_fails_its_check(run, tmp_path, monkeypatch):  # noqa: F811
    import lorakit.infer.export.merged as merged_module

    real_save = merged_module.save_tokenizer

    def save_then_break(tokenizer, folder):  # a scale lost on one projection: what a wrong merge looks like
        real_save(tokenizer, folder)
        weights = load_file(folder / "model.safetensors")
        name = next(k for k in weights if k.endswith("q_proj.weight"))
        weights[name] = weights[name] * 3
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})

    monkeypatch.setattr(merged_module, "save_tokenizer", save_then_break)
    result = cli_run("export", "tiny", "--merge", "--out", tmp_path / "merged", "--check")
    assert result.exit_code == 1
    assert "FAILED (needs 99%)" in result.stdout.strip().splitlines()[-1]


def test_what_a_merged_folder_cannot_do_is_said_in_one_line(run, tmp_path):  # noqa: F811
    assert cli_run("export", "tiny", "--merge", "--out", tmp_path / "merged").exit_code == 0
    (tmp_path / "dev.jsonl").write_text(json.dumps({"tex": "x = y", "typst": "x = y"}) + "\n")
    base = cli_run("eval", tmp_path / "merged", "--data", tmp_path / "dev.jsonl", "--metrics", "exact", "--base")
    again = cli_run("export", tmp_path / "merged", "--merge", "--out", tmp_path / "twice")
    (tmp_path / "merged" / "lorakit.json").write_text("[]")
    broken = cli_run("infer", tmp_path / "merged", "--input", tmp_path / "dev.jsonl")
    for result in (base, again, broken):
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert "--base: " in base.output and "there is no base apart from it" in base.output
    assert "a model folder with the adapter merged in, not an adapter" in again.output
    assert "lorakit.json: must hold a JSON object" in broken.output
    assert not (tmp_path / "twice").exists()
