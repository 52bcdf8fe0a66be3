"""Configs from LLaMA-Factory and axolotl: imported key by key, or pointed at the import in one line."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lorakit.cli.main import cli
from lorakit.config.load import load_config
from lorakit.config.peers.importer import Imported, import_config
from lorakit.data.dataset import load_conversations
from lorakit.errors import ConfigError

PEERS = Path(__file__).resolve().parents[4] / "shared" / "data" / "peers" / "llamafactory"
needs_peers = pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/data/peers is not beside this checkout")


@needs_peers
@pytest.mark.parametrize("name", ["qwen3_lora_sft.yaml", "fsdp_qlora_llama3_lora_sft.yaml"])
def test_llamafactory_configs_import_with_every_key_accounted_for(tmp_path, name):
    source = PEERS / name
    imported = import_config(source, out=tmp_path / "imported.yaml")
    assert imported.peer == "llamafactory"
    raw = yaml.safe_load(source.read_text())
    said = {line.key for line in imported.lines}
    assert set(raw) <= said  # nothing dropped in silence
    assert {line.outcome for line in imported.lines} >= {"mapped", "dropped", "default"}
    cfg = load_config(imported.out).config
    assert (cfg.lora.r, cfg.lora.alpha) == (8, 16)  # LLaMA-Factory's alpha: twice the rank, written out
    assert cfg.lora.target_modules == "all-linear"
    assert cfg.data.max_samples_per_file == 1000 and cfg.data.max_samples is None
    assert (cfg.train.micro_batch_size, cfg.train.grad_accum, cfg.train.lr) == (1, 8, 1e-4)
    assert cfg.train.gradient_checkpointing  # LLaMA-Factory's default
    assert cfg.model.quantization == ("nf4" if "qlora" in name else "none")
    template = next(line for line in imported.lines if line.key == "template")
    assert template.outcome == "mapped" and cfg.data.template == "tokenizer"  # never a silent fall back to plain


def test_a_llamafactory_template_is_kept_and_a_tokenizer_without_one_is_refused(tmp_path, tiny_model_dir):
    from lorakit.data.templates import resolve_template
    from lorakit.errors import DataError
    from tests.conftest import build_tokenizer

    for name, expected in (("gemma3", "gemma"), ("chatml", "chatml"), ("llama3", "tokenizer")):
        source = tmp_path / f"{name}.yaml"
        source.write_text(f"model_name_or_path: m\ndataset: a\ntemplate: {name}\n")
        cfg = load_config(import_config(source, out=tmp_path / f"{name}-out.yaml").out).config
        assert cfg.data.template == expected
    with pytest.raises(DataError, match="this tokenizer has no chat template"):
        resolve_template("tokenizer", build_tokenizer(chat_template=None))


@needs_peers
def test_a_run_from_the_imported_config_caps_each_dataset_like_llamafactory(tmp_path):
    imported = import_config(PEERS / "qwen3_lora_sft.yaml", out=tmp_path / "q.yaml")
    data = load_config(imported.out).config.data
    rows = load_conversations(data.train, data, per_file_cap=data.max_samples_per_file)
    assert len(rows) == 91 + 999  # each dataset under its cap of 1000: all rows (a total cap would keep 1000)
    smaller = load_config(imported.out, overrides=["data.max_samples_per_file=50"]).config.data
    assert len(load_conversations(smaller.train, smaller, per_file_cap=50)) == 100


@needs_peers
def test_each_dataset_cap_caps_the_validation_datasets_too_and_rows_also_trained_are_said(tmp_path, tiny_model_dir):
    from lorakit.data.dataset import build_datasets
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model

    source = tmp_path / "qwen.yaml"
    source.write_text((PEERS / "qwen3_lora_sft.yaml").read_text() + "eval_dataset: alpaca_en_demo\n")
    imported = import_config(source, out=tmp_path / "q.yaml", dataset_dir=str(PEERS))
    overrides = ["data.max_samples_per_file=12", "data.max_length=512", f"model.name_or_path={tiny_model_dir}"]
    data = load_config(imported.out, overrides=overrides).config.data
    datasets = build_datasets(data, load_tokenizer(resolve_model(str(tiny_model_dir))))
    assert (datasets.stats["train"].rows, datasets.stats["eval"].rows) == (12 + 12, 12)  # 999 alpaca rows before
    assert datasets.stats["eval"].also_trained == 12  # the same first 12 alpaca rows: said, not hidden
    assert "12 of 12 rows are training rows too" in datasets.stats["eval"].notes()[-1]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"instruction": f"new {i}", "output": "x"}) + "\n"
                                                for i in range(3)))
    apart = data.model_copy(update={"eval": [str(tmp_path / "dev.jsonl")]})
    stats = build_datasets(apart, load_tokenizer(resolve_model(str(tiny_model_dir)))).stats["eval"]
    assert (stats.rows, stats.also_trained) == (3, 0) and not any("training rows too" in n for n in stats.notes())


def test_axolotl_config_imports_with_its_dataset_and_format(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    source = tmp_path / "axolotl.yml"
    source.write_text(yaml.safe_dump({
        "base_model": "HuggingFaceTB/SmolLM2-135M", "adapter": "qlora", "lora_r": 32, "lora_alpha": 16,
        "lora_target_linear": True, "datasets": [{"path": "data.jsonl", "type": "alpaca"}],
        "sequence_len": 512, "sample_packing": True, "micro_batch_size": 2, "gradient_accumulation_steps": 4,
        "num_epochs": 2, "learning_rate": 2e-4, "lr_scheduler": "cosine", "optimizer": "adamw_bnb_8bit",
        "bf16": "auto", "wandb_project": "x", "output_dir": "./outputs/lora-out", "evals_per_epoch": 4,
        "saves_per_epoch": 1}))
    imported = import_config(source, out=tmp_path / "out.yaml")
    assert imported.peer == "axolotl"
    cfg = load_config(imported.out).config
    assert (cfg.lora.r, cfg.lora.alpha, cfg.model.quantization) == (32, 16, "nf4")
    assert (cfg.train.evals_per_epoch, cfg.train.saves_per_epoch) == (4, 1)  # resolved to steps once the data is read
    assert cfg.data.format == "alpaca" and cfg.data.packing and cfg.data.max_length == 512
    assert Path(cfg.data.train[0]).resolve() == (tmp_path / "data.jsonl").resolve()
    wandb = next(line for line in imported.lines if line.key == "wandb_project")
    assert wandb.outcome == "no equivalent"  # a project named: lorakit does not log to W&B


@pytest.mark.parametrize(("peer", "cadence", "expected"), [
    ("llamafactory", {"eval_steps": 0.25, "save_steps": 0.5, "num_train_epochs": 1.0},
     {"evals_per_epoch": 4, "saves_per_epoch": 2}),
    ("llamafactory", {"eval_steps": 0.0833}, {"evals_per_epoch": 4}),  # a twelfth of the default 3 epochs
    ("axolotl", {"eval_steps": 0.1, "num_epochs": 2}, {"evals_per_epoch": 5}),
    ("axolotl", {"eval_steps": 25, "save_steps": 100}, {"eval_every": 25, "save_every": 100}),
    ("llamafactory", {"eval_strategy": "epoch", "eval_steps": 50, "save_strategy": "epoch", "save_steps": 500},
     {"evals_per_epoch": 1, "eval_every": 0, "saves_per_epoch": 1, "save_every": 0}),  # as the trainer, epoch wins
    ("axolotl", {"evaluation_strategy": "epoch", "eval_steps": 10}, {"evals_per_epoch": 1, "eval_every": 0}),
    ("llamafactory", {"eval_strategy": "steps", "eval_steps": 50}, {"eval_every": 50, "evals_per_epoch": None}),
    ("axolotl", {"warmup_steps": 10}, {"warmup_steps": 10}),
    ("llamafactory", {"warmup_steps": 20}, {"warmup_steps": 20}),
])
def test_eval_and_save_steps_import_as_steps_or_as_a_count_an_epoch(tmp_path, peer, cadence, expected):
    train = load_config(import_with(tmp_path, peer, cadence).out).config.train
    assert {key: getattr(train, key) for key in expected} == expected


def import_with(tmp_path: Path, peer: str, keys: dict) -> Imported:
    """A minimal config of ``peer`` (one local alpaca file, a tenth held out) with ``keys``, imported."""
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    base = ({"model_name_or_path": "m", "finetuning_type": "lora", "dataset": "data.jsonl", "val_size": 0.1}
            if peer == "llamafactory" else {"base_model": "m", "adapter": "lora", "datasets": [{"path": "data.jsonl"}],
                                            "val_set_size": 0.1})
    source = tmp_path / "peer.yaml"
    source.write_text(yaml.safe_dump({**base, **keys}))
    return import_config(source, peer, out=tmp_path / "out.yaml")


@pytest.mark.parametrize("cadence", [{"eval_steps": 0.3}, {"eval_steps": 0.25, "max_steps": 100}])
def test_a_share_of_the_steps_that_is_no_whole_count_an_epoch_is_reported_not_guessed(tmp_path, cadence):
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    source = tmp_path / "axolotl.yml"
    source.write_text(yaml.safe_dump({"base_model": "m", "adapter": "lora", "datasets": [{"path": "data.jsonl"}],
                                      "val_set_size": 0.1, **cadence}))
    imported = import_config(source, "axolotl", out=tmp_path / "out.yaml")
    line = next(line for line in imported.lines if line.key == "eval_steps")
    assert line.outcome == "no equivalent" and "train.evals_per_epoch" in line.detail
    train = load_config(imported.out).config.train
    assert (train.eval_every, train.evals_per_epoch) == (0, None)


def test_axolotl_chat_fields_lorakit_reads_pass_and_the_others_are_reported(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"conversations": [{"from": "human", "value": "q"},
                                                                       {"from": "gpt", "value": "a"}]}) + "\n")
    readable = {"path": "data.jsonl", "type": "chat_template", "field_messages": "conversations",
                "message_property_mappings": {"role": "from", "content": "value"}, "roles_to_train": ["assistant"]}
    other = {**readable, "field_messages": "dialog", "message_property_mappings": {"role": "speaker"},
             "roles_to_train": ["user", "assistant"]}
    reported = {}
    for name, entry in (("readable", readable), ("other", other)):
        source = tmp_path / f"{name}.yml"
        source.write_text(yaml.safe_dump({"base_model": "m", "adapter": "lora", "datasets": [entry]}))
        imported = import_config(source, "axolotl", out=tmp_path / f"{name}.out.yaml")
        reported[name] = sorted(line.key.rsplit(" ", 1)[-1] for line in imported.lines
                                if line.outcome == "no equivalent")
    assert reported == {"readable": [], "other": ["field_messages", "message_property_mappings", "roles_to_train"]}


@pytest.mark.parametrize(("peer", "keys", "expected"), [
    # axolotl's early stopping (on eval_loss, keeping the best adapter, as axolotl loads the best model at the end)
    ("axolotl", {"early_stopping_patience": 3}, ("eval_loss", 3, "best")),
    ("axolotl", {"early_stopping_patience": 2, "metric_for_best_model": "loss"}, ("eval_loss", 2, "best")),
    # the Hugging Face trainer's keys, which LLaMA-Factory passes on
    ("llamafactory", {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss"},
     ("eval_loss", None, "best")),
    ("axolotl", {"early_stopping_patience": 2, "metric_for_best_model": "eval_exact"}, ("eval_exact", 2, "best")),
    ("llamafactory", {"load_best_model_at_end": True}, ("eval_loss", None, "best")),
])
def test_early_stopping_and_the_best_adapter_import(tmp_path, peer, keys, expected):
    imported = import_with(tmp_path, peer, keys)
    assert not [line for line in imported.lines if line.outcome == "no equivalent"]
    train = load_config(imported.out).config.train
    assert (train.selection_metric, train.early_stopping and train.early_stopping.patience, train.keeps) == expected


def test_a_best_model_metric_lorakit_does_not_measure_is_reported(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    source = tmp_path / "lf.yaml"
    source.write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset": "data.jsonl", "val_size": 0.1,
                                      "load_best_model_at_end": True, "metric_for_best_model": "eval_accuracy"}))
    imported = import_config(source, "llamafactory", out=tmp_path / "out.yaml")
    line = next(line for line in imported.lines if line.key == "metric_for_best_model")
    assert line.outcome == "no equivalent" and "loss, exact, chrf, typst" in line.detail
    assert load_config(imported.out).config.train.selection_metric == "eval_loss"  # lorakit's default, said above


def test_keys_left_empty_ask_for_nothing_and_a_key_turned_off_is_still_reported(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    source = tmp_path / "axolotl.yml"
    source.write_text("base_model: m\nadapter: lora\ndatasets: [{path: data.jsonl}]\nwandb_project:\ndebug:\n"
                      "special_tokens: {}\ngroup_by_length: false\nlisa_n_layers: 4\nneftune_noise_alpha: 5\n")
    lines = {line.key: line.outcome for line in import_config(source, "axolotl", out=tmp_path / "out.yaml").lines}
    assert (lines["wandb_project"], lines["debug"], lines["special_tokens"]) == ("dropped",) * 3
    # false may turn off what is on by default; and a value lorakit cannot follow is said
    assert (lines["group_by_length"], lines["lisa_n_layers"]) == ("no equivalent",) * 2
    assert lines["neftune_noise_alpha"] == "mapped"  # train.neftune_noise_alpha
    resumed = tmp_path / "resumed.yml"
    resumed.write_text(source.read_text() + "resume_from_checkpoint: out/checkpoint-9\n")
    said = next(line for line in import_config(resumed, "axolotl", out=tmp_path / "resumed.yaml").lines
                if line.key == "resume_from_checkpoint")
    assert said.outcome == "no equivalent" and "lorakit train --resume" in said.detail


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("offload", True), ("unsloth", True)])
def test_axolotl_gradient_checkpointing_offloaded_is_checkpointing_here(tmp_path, value, expected):
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    source = tmp_path / "axolotl.yml"
    source.write_text(yaml.safe_dump({"base_model": "m", "adapter": "lora", "datasets": [{"path": "data.jsonl"}],
                                      "gradient_checkpointing": value}))
    cfg = load_config(import_config(source, "axolotl", out=tmp_path / "out.yaml").out).config
    assert cfg.train.gradient_checkpointing is expected


def test_axolotl_target_modules_given_as_one_string(tmp_path):
    source = tmp_path / "axolotl.yml"
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    source.write_text("base_model: m\nadapter: lora\nlora_target_modules: q_proj\ndatasets: [{path: data.jsonl}]\n")
    cfg = load_config(import_config(source, "axolotl", out=tmp_path / "out.yaml").out).config
    assert cfg.lora.target_modules == ["q_proj"]  # one module, as axolotl reads it; not ['q', '_', 'p', ...]


def test_import_never_replaces_a_file_without_force(tmp_path):
    source = tmp_path / "lf.yaml"
    source.write_text("model_name_or_path: m\nstage: sft\nfinetuning_type: lora\ndataset: a\n")
    (tmp_path / "data").mkdir()
    out = tmp_path / "out.yaml"
    out.write_text("mine\n")
    with pytest.raises(ConfigError, match=r"out\.yaml exists; choose another --out or add --force"):
        import_config(source, out=out)
    assert out.read_text() == "mine\n"
    import_config(source, out=out, force=True)
    assert "name_or_path: m" in out.read_text()


@pytest.mark.parametrize(("keys", "problem"), [
    ({}, "model: required, and nothing in the source sets it"),
    ({"base_model": "m", "val_set_size": 0.05}, "data.eval and data.val_size are both set; use one of them"),
])
def test_an_import_that_does_not_validate_says_why_in_one_line_and_writes_nothing(tmp_path, keys, problem):
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    source = tmp_path / "axolotl.yml"
    source.write_text(yaml.safe_dump({"adapter": "lora", "datasets": [{"path": "data.jsonl"}],
                                      "test_datasets": [{"path": "data.jsonl"}], **keys}))
    with pytest.raises(ConfigError) as raised:
        import_config(source, "axolotl", out=tmp_path / "out.yaml")
    assert str(raised.value) == (f"{source}: the imported config does not validate ({problem}); change {source} "
                                 "or write the fix into the result")
    assert not (tmp_path / "out.yaml").exists()


def test_train_on_a_flat_peer_config_points_at_the_import(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("lf.yaml").write_text("model_name_or_path: m\nstage: sft\nlora_rank: 8\nlora_target: all\ndataset: a\n"
                               "cutoff_len: 512\ntemplate: llama3\n")
    result = CliRunner().invoke(cli, ["train", "lf.yaml"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "looks like a LLaMA-Factory config" in lines[0]
    assert "try: lorakit config import lf.yaml --from llamafactory" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lf.yaml"]


def test_peer_keys_get_the_lorakit_key_and_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name_or_path: m, bf16: true}\nlora: {lora_target: all}\ndata: {dataset: x}\n"
                    "tracking: {report_to: none}\nr: 8\ndo_train: true\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "model.bf16: unknown key, did you mean 'model.dtype'? (auto picks bfloat16 on a GPU" in text
    assert "lora.lora_target: unknown key, did you mean 'lora.target_modules'? ('all' is all-linear" in text
    assert "data.dataset: unknown key, did you mean 'data.train'? (a LLaMA-Factory dataset is " in text
    assert "r: unknown key, did you mean 'lora.r'?" in text
    assert "do_train: unknown key, a LLaMA-Factory key lorakit does not need: lorakit train always trains" in text
    assert "report_to" not in text  # 'none' means no tracker, as in the Hugging Face trainer


def test_the_one_table_of_peer_keys_names_real_lorakit_keys():
    # Every row's lorakit key exists in the schema, so a hint or an import can never point at a missing key.
    from lorakit.config.load import flatten_keys
    from lorakit.config.peers.keys import KEYS, copied
    from lorakit.config.schema import RunConfig

    known = set(flatten_keys(RunConfig.model_validate({"model": {"name_or_path": "m"}, "data": {"train": ["t"]}})
                             .model_dump()))
    assert not [row.lorakit for row in KEYS if row.lorakit not in known]
    assert copied("llamafactory")["lora_rank"] == copied("axolotl")["lora_r"] == "lora.r"


@needs_peers
def test_a_llamafactory_dpo_config_imports_as_a_dpo_run_on_its_ranking_dataset(tmp_path):
    source = tmp_path / "llama3_lora_dpo.yaml"
    source.write_text(yaml.safe_dump({
        "model_name_or_path": "m", "stage": "dpo", "do_train": True, "finetuning_type": "lora", "lora_rank": 8,
        "lora_target": "all", "pref_beta": 0.2, "pref_loss": "hinge", "dpo_label_smoothing": 0.0,
        "dataset": "dpo_en_demo", "dataset_dir": str(PEERS), "cutoff_len": 2048, "learning_rate": 5e-6}))
    imported = import_config(source, out=tmp_path / "out.yaml")
    cfg = load_config(imported.out).config
    assert (cfg.train.method, cfg.dpo.beta, cfg.dpo.loss) == ("dpo", 0.2, "hinge")
    said = {line.key: line.outcome for line in imported.lines}
    assert said["stage"] == said["pref_beta"] == said["pref_loss"] == "mapped"
    pairs = load_conversations(cfg.data.train, cfg.data, pairs=True)
    assert len(pairs) == 300 and all(p.rejected for p in pairs)


def test_axolotl_rl_dpo_imports_as_a_dpo_run(tmp_path):
    row = {"system": "be brief", "question": "2+2", "chosen": "4", "rejected": "5"}
    (tmp_path / "orca.jsonl").write_text(json.dumps(row) + "\n")
    source = tmp_path / "axolotl.yml"
    source.write_text(yaml.safe_dump({"base_model": "m", "adapter": "lora", "rl": "ipo", "rl_beta": 0.3,
                                      "datasets": [{"path": "orca.jsonl", "type": "chatml.intel"}]}))
    cfg = load_config(import_config(source, "axolotl", out=tmp_path / "out.yaml").out).config
    assert (cfg.train.method, cfg.dpo.loss, cfg.dpo.beta) == ("dpo", "ipo", 0.3)
    assert load_conversations(cfg.data.train, cfg.data, pairs=True)[0].rejected[-1].content == "5"
