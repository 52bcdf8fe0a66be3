import pytest

from lorakit.errors import ModelError
from lorakit.model.load import load_tokenizer
from lorakit.model.resolve import resolve_model
from tests.conftest import build_tokenizer


def test_missing_pad_token_reuses_eos_without_growing_the_vocabulary(tmp_path, tiny_model_dir):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = build_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    loaded = load_tokenizer(resolve_model(str(folder)))
    assert loaded.pad_token == loaded.eos_token == "<eos>"
    assert len(loaded) == len(tokenizer)


def test_unloadable_tokenizer_is_a_model_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot load the tokenizer"):
        load_tokenizer(resolve_model(str(tmp_path)))
