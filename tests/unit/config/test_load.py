import subprocess
import sys
from pathlib import Path

import pytest

from lorakit.config import load_config
from lorakit.config.load import parse_override
from lorakit.errors import ConfigError

BASE = """
model: {name_or_path: some/model}
data: {train: data/train.jsonl}
lora: {r: 16}
train: {epochs: 2, lr: 0.001}
output: {name: typst}
"""


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    return path


def test_layers_apply_in_order_defaults_config_overlays_set(base, tmp_path):
    (tmp_path / "lowmem.yaml").write_text("lora: {r: 8}\ntrain: {micro_batch_size: 1}\n")
    (tmp_path / "fast.toml").write_text("[lora]\nr = 4\n")
    loaded = load_config(base, [tmp_path / "lowmem.yaml", tmp_path / "fast.toml"], ["train.micro_batch_size=2"])
    cfg = loaded.config
    assert cfg.lora.r == 4  # the later overlay wins over the earlier one
    assert cfg.train.micro_batch_size == 2  # --set wins over every file
    assert cfg.train.epochs == 2  # from the base config
    assert cfg.train.grad_accum == 2  # schema default, set nowhere
    assert loaded.run_name == "typst-lowmem-fast"
    assert loaded.sources == [str(base), str(tmp_path / "lowmem.yaml"), str(tmp_path / "fast.toml"),
                              "--set train.micro_batch_size=2"]


def test_name_option_replaces_output_name_and_config_stem(base, tmp_path):
    assert load_config(base, name="exp").run_name == "exp"
    plain = tmp_path / "myrun.yaml"
    plain.write_text(BASE.replace("output: {name: typst}", ""))
    assert load_config(plain).run_name == "myrun"


def test_run_names_that_are_not_plain_folder_names_are_refused(base):
    with pytest.raises(ConfigError, match="run name must be a plain folder name"):
        load_config(base, name="../escape")


def test_relative_data_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    sub = tmp_path / "proj"
    sub.mkdir()
    (sub / "c.yaml").write_text(BASE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(sub / "c.yaml").config
    assert Path(cfg.data.train[0]).resolve() == (sub / "data" / "train.jsonl").resolve()


@pytest.mark.parametrize(("text", "expected"), [
    ("lora.r=8", (["lora", "r"], 8)),
    ("train.lr=1e-4", (["train", "lr"], 1e-4)),
    ("data.packing=true", (["data", "packing"], True)),
    ("lora.target_modules=[q_proj, v_proj]", (["lora", "target_modules"], ["q_proj", "v_proj"])),
    ("output.name=my run", (["output", "name"], "my run")),
    ("output.name={data}", (["output", "name"], "{data}")),  # YAML's {data} is a mapping with no value: a placeholder
    ("output.name={data}-s{steps}", (["output", "name"], "{data}-s{steps}")),
    ("data.replace={}", (["data", "replace"], {})),
    ("data.replace={name: Ada}", (["data", "replace"], {"name": "Ada"})),
])
def test_set_values_are_typed_like_yaml(text, expected):
    assert parse_override(text) == expected


def test_a_validator_that_names_what_it_got_is_not_repeated(tmp_path):
    (tmp_path / "c.yaml").write_text("model: {name_or_path: smollm2-135m}\ndata: {train: [t.jsonl]}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "c.yaml", overrides=["output.name=../evil"])
    assert str(refused.value).count("(got '../evil')") == 1


def test_every_problem_is_reported_at_once_with_key_source_and_hint(base):
    with pytest.raises(ConfigError) as err:
        load_config(base, overrides=["lora.r=0", "lora.alpah=16", "train.epochs=many"])
    message = str(err.value)
    assert "lora.r: Input should be greater than 0 (got 0) [--set lora.r=0]" in message
    assert "lora.alpah: unknown key, did you mean 'alpha'? [--set lora.alpah=16]" in message
    assert "train.epochs:" in message and "[--set train.epochs=many]" in message
    assert message.count("\n") == 3  # the heading and three problems


def test_unknown_key_in_a_file_names_that_file(base, tmp_path):
    overlay = tmp_path / "over.yaml"
    overlay.write_text("data: {max_lenght: 512}\n")
    with pytest.raises(ConfigError, match=r"data.max_lenght: unknown key, did you mean 'max_length'\? \[.*over.yaml\]"):
        load_config(base, [overlay])


def test_missing_required_key_and_missing_file(tmp_path):
    empty = tmp_path / "c.yaml"
    empty.write_text("lora: {r: 4}\n")
    with pytest.raises(ConfigError, match="model: required key is missing"):
        load_config(empty)
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_broken_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name_or_path: x\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at .*bad.yaml:\d+"):
        load_config(bad)


def test_malformed_set_is_an_error():
    with pytest.raises(ConfigError, match="--set needs KEY=VALUE"):
        parse_override("lora.r")


def test_hash_depends_on_values_not_on_layering(base, tmp_path):
    (tmp_path / "r8.yaml").write_text("lora: {r: 8}\n")
    via_file = load_config(base, [tmp_path / "r8.yaml"]).sha256
    via_set = load_config(base, overrides=["lora.r=8"]).sha256
    assert via_file == via_set != load_config(base).sha256


def test_config_package_does_not_import_torch(base):
    code = ("import sys; from lorakit.config import load_config; "
            f"load_config({str(base)!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
