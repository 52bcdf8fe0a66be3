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


def test_training_model_on_the_cpu_uses_per_example_attention_and_no_cache(tiny_model_dir):
    from lorakit.config.schema import ModelSection
    from lorakit.model.attention import SEGMENTED, uses_segments
    from lorakit.model.load import load_base_model

    model = load_base_model(resolve_model(str(tiny_model_dir)), ModelSection(name_or_path=str(tiny_model_dir)), "cpu")
    assert model.config._attn_implementation == SEGMENTED
    assert uses_segments(model)
    assert model.config.use_cache is False
    assert not any(p.requires_grad for p in model.parameters())


def test_attention_soft_capping_falls_back_to_eager():
    from transformers import Gemma2Config

    from lorakit.model.attention import pick_attention

    assert pick_attention(Gemma2Config(attn_logit_softcapping=50.0), "cpu", __import__("torch").float32) == "eager"
