from datetime import date
from pathlib import Path

import pytest

from lorakit.config import load_config
from lorakit.config.run_name import expand_run_name
from lorakit.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


BASE = "model: {name_or_path: google/gemma-3-270m}\ndata: {train: [sets/typst_train.jsonl, more.jsonl]}\n"


def test_placeholders_fill_from_the_config_and_overlays(tmp_path):
    cfg = write(tmp_path, BASE + "output: {name: '{data}-{variant}-s{steps}'}\ntrain: {max_steps: 800}\n")
    (tmp_path / "lowmem.yaml").write_text("lora: {r: 8}\n")
    (tmp_path / "fast.yaml").write_text("lora: {r: 4}\n")
    loaded = load_config(cfg, [tmp_path / "lowmem.yaml", tmp_path / "fast.yaml"])
    # {variant} places the overlay stems, so they are not appended a second time
    assert loaded.run_name == "typst_train-lowmem-fast-s800"
    assert load_config(cfg).run_name == "typst_train-base-s800"


def test_model_steps_and_date_and_appended_overlays(tmp_path):
    loaded = load_config(write(tmp_path, BASE + "output: {name: '{model}-{steps}'}\ntrain: {epochs: 2}\n"))
    name = expand_run_name("{model}-{steps}-{date}", loaded.config, ["v2"], today=date(2026, 11, 23))
    assert name == "gemma-3-270m-2ep-20261123-v2"
    gguf = load_config(write(tmp_path, "model: {name_or_path: /models/SmolLM2-135M.Q8_0.gguf}\n"
                                       "data: {train: a.jsonl}\noutput: {name: '{model}'}\n"))
    assert gguf.run_name == "SmolLM2-135M.Q8_0"


def test_unknown_placeholder_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"output.name: unknown placeholder \{dataset\}"):
        load_config(write(tmp_path, BASE + "output: {name: '{dataset}-x'}\n"))


def test_data_placeholder_names_the_first_registry_dataset(tmp_path):
    cfg = write(tmp_path, "model: {name_or_path: m}\ndata: {train: 'lf/dataset_info.json#identity,alpaca_en_demo'}\n"
                          "output: {name: '{data}-lora'}\n")
    assert load_config(cfg).run_name == "identity-lora"
