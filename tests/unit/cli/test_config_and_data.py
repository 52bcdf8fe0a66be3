from click.testing import CliRunner

from lorakit.cli.main import cli
from lorakit.config.describe import describe_fields
from tests.conftest import ALPACA_ROWS, write_jsonl
from tests.unit.cli.test_train import make_config


def test_config_schema_lists_every_key_with_type_default_and_description():
    result = CliRunner().invoke(cli, ["config", "schema"])
    assert result.exit_code == 0
    for key, _, _, _ in describe_fields():
        assert key in result.output
    assert "train.loss_chunk_tokens" in result.output and "required" in result.output
    assert all(description for *_, description in describe_fields())


def test_config_show_prints_the_merged_result(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir)
    result = CliRunner().invoke(cli, ["config", "show", str(config), "--set", "train.lr=3e-4"])
    assert result.exit_code == 0
    assert "lr: 0.0003" in result.output and "--set train.lr=3e-4" in result.output


def test_data_check_reports_format_lengths_and_the_trained_span(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"max_length": 20})
    result = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "train.jsonl"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "format alpaca" in result.output
    assert f"rows: {len(ALPACA_ROWS)}" in result.output
    assert "tokens: min" in result.output and "p90" in result.output
    assert "over max_length=20:" in result.output
    assert "⟦paris <|im_end|>⟧" in result.output


def test_data_check_of_a_config_alone_checks_the_data_it_trains_on(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"max_length": 20})
    alone = CliRunner().invoke(cli, ["data", "check", "--config", str(config)])
    given = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "train.jsonl"), "--config", str(config)])
    assert alone.exit_code == 0 and alone.output.startswith("train.jsonl: format alpaca\n")  # data.train
    assert alone.output.splitlines()[1:] == given.output.splitlines()[1:]  # the same file, named as the config does
    mistaken = CliRunner().invoke(cli, ["data", "check", str(config)])  # the config given as if it were data
    assert mistaken.exit_code == 2 and "Traceback" not in mistaken.output
    assert f"{config} is a config, not data: lorakit data check --config {config} checks" in mistaken.output
    assert "--config CONFIG" in CliRunner().invoke(cli, ["data", "check"]).output


def test_data_check_of_a_config_reads_each_file_as_its_cap_lets_training_read_it(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"max_samples_per_file": 5})
    result = CliRunner().invoke(cli, ["data", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "rows: 5\n" in result.output and "data.max_samples_per_file: the first 5 rows of each file" in result.output


def test_data_check_without_a_tokenizer_still_counts_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}])
    result = CliRunner().invoke(cli, ["data", "check", str(path)])
    assert result.exit_code == 0
    assert "format text" in result.output and "rows: 2" in result.output


def test_data_check_reports_bad_rows_by_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, "{bad"])
    result = CliRunner().invoke(cli, ["data", "check", str(path)])
    assert result.exit_code == 1 and "d.jsonl:2: malformed JSON" in result.output


def test_data_check_reads_pairs_under_a_dpo_config_and_counts_a_pair_over_when_a_side_is(tmp_path, tiny_model_dir):
    from tests.conftest import write_jsonl

    config = make_config(tmp_path, tiny_model_dir, data={"max_length": 16}, train={"method": "dpo"})
    prompt = [{"role": "user", "content": "what is two plus two ?"}]
    write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": prompt, "chosen": [{"role": "assistant", "content": "four"}],
         "rejected": [{"role": "assistant", "content": "five"}]},  # both sides fit; the pair does not
        {"prompt": prompt, "chosen": [{"role": "assistant", "content": "four"}],
         "rejected": [{"role": "assistant", "content": "five six seven eight nine ten"}]}])
    result = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "pairs.jsonl"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "format preference" in result.output and "rows: 2" in result.output
    assert "over max_length=16: 1 rows" in result.output  # the second pair's rejected side only
    assert "⟦four <|im_end|>⟧" in result.output  # the chosen side shown


def test_data_check_without_a_config_reads_pair_rows_as_pairs_and_a_config_still_decides(tmp_path, tiny_model_dir):
    from tests.conftest import write_jsonl

    write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": [{"role": "user", "content": "two plus two ?"}],
         "chosen": [{"role": "assistant", "content": "four"}],
         "rejected": [{"role": "assistant", "content": "five"}]}])
    alone = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "pairs.jsonl"), "--model", str(tiny_model_dir)])
    assert alone.exit_code == 0, alone.output
    assert "format preference" in alone.output and "read as train.method: dpo reads them" in alone.output
    assert "⟦four <|im_end|>⟧" in alone.output  # the chosen side shown
    sft = make_config(tmp_path, tiny_model_dir)  # a supervised config: training would refuse these rows
    refused = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "pairs.jsonl"), "--config", str(sft)])
    assert refused.exit_code == 1 and "set train.method: dpo" in refused.output


def test_data_check_without_a_config_reads_kto_rows_as_label_field_does(tmp_path, tiny_model_dir):
    from tests.conftest import write_jsonl

    write_jsonl(tmp_path / "kto.jsonl", [
        {"messages": [{"role": "user", "content": "two plus two ?"}, {"role": "assistant", "content": "four"}],
         "label": True},
        {"messages": [{"role": "user", "content": "two plus two ?"}, {"role": "assistant", "content": "five"}],
         "label": False}])
    alone = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "kto.jsonl"), "--model", str(tiny_model_dir)])
    assert alone.exit_code == 0, alone.output
    assert "rows: 1" in alone.output and "read as data.label_field: label reads them" in alone.output
    assert "⟦four <|im_end|>⟧" in alone.output
    sft = make_config(tmp_path, tiny_model_dir)  # a config without data.label_field: training would refuse them
    refused = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "kto.jsonl"), "--config", str(sft)])
    assert refused.exit_code == 1 and "set data.label_field: label" in refused.output
